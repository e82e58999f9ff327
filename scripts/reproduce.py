"""Reproduce the results tables and learning curves: ``python scripts/reproduce.py [--suite SUITE ...]``
(suites: paper, losses, batching, precision, best, search; default paper).

Every step is resumable: a finished run (its ``results.json`` exists) is skipped, an interrupted one is
resumed from its last epoch, so the command can be stopped and started again at will.

1. Check the datasets in ``--data-dir`` against the paper's published hashes (PROVENANCE.md) and convert
   the per-user Beauty (S3Rec 5-core) file to the SASRec format.
2. Train every (dataset, seed) of the suite with the dataset's preset, ``--jobs`` runs at a time, each
   selecting its best epoch on the validation split only, then testing it once under both protocols.
3. Copy each finished run's small files (config, log, results) to ``results/runs/`` and write, from
   ``results/runs/`` alone, ``results/summary.json``, ``results/learning_curves.{csv,png}``,
   ``results/batching_comparison.png``, the tables of ``docs/results.md`` (between its ``results`` markers;
   the text around them is kept) and the README's headline table (between its ``headline`` markers).

``--aggregate-only`` skips steps 1 and 2: it needs neither the datasets nor a training, only ``results/runs/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sasrec.config import Config  # noqa: E402
from sasrec.data.dataset import file_sha256  # noqa: E402
from sasrec.data.registry import DATASETS, RECIPES  # noqa: E402

# kang205/SASRec data files whose sha256 is known (see shared/data/PROVENANCE.md)
PAPER_SHA256 = {d.paper_file: d.paper_sha256 for d in DATASETS.values() if d.paper_sha256}


@dataclass
class Experiment:
    dataset: str  # key in results
    variant: str  # which version of the data
    file: str  # SASRec-format file under the work data dir
    preset: str
    seeds: list[int]
    loss: str = "bce"
    extra: list[str] = field(default_factory=list)
    tag: str = ""  # tells apart runs of the same data and loss (e.g. another selection protocol)

    def name(self, seed: int) -> str:
        return f"{self.dataset}-{self.variant}-{self.loss}{self.tag}-seed{seed}"


SUITES = {
    "paper": [
        Experiment("ml-1m", "paper", "ml-1m.txt", "ml-1m", [1, 2, 3]),
        Experiment("games", "paper", "Video.txt", "games", [1, 2, 3]),
        # Without position weighting, capped at 150 epochs: how the first MovieLens-1M rows were measured.
        Experiment(
            "ml-1m",
            "paper",
            "ml-1m.txt",
            "ml-1m",
            [1, 2, 3],
            extra=["--no-position-weighting", "--epochs", "150"],
            tag="-unweighted",
        ),
        # Bucketed batches without position weighting: the ablation of position weighting on Games.
        Experiment("games", "paper", "Video.txt", "games", [1], extra=["--no-position-weighting"], tag="-unweighted"),
        Experiment("beauty", "s3rec-5core", "beauty_s3rec.txt", "beauty", [1]),
        Experiment("beauty", "bert4rec", "Beauty_BERT4Rec.txt", "beauty", [1]),
    ],
    # Softmax-family losses, selected on full-ranking validation (the protocol they are meant for).
    "losses": [
        Experiment(
            "ml-1m",
            "paper",
            "ml-1m.txt",
            "ml-1m",
            [1],
            loss="ce",
            extra=["--val-protocol", "full", "--patience", "10", "--max-minutes", "125"],
        ),
        # Games has no published full-ranking number: every loss with 3 seeds makes the reference table.
        Experiment(
            "games",
            "paper",
            "Video.txt",
            "games",
            [1, 2, 3],
            loss="ce",
            extra=["--val-protocol", "full", "--eval-every", "2", "--patience", "8"],
        ),
        Experiment(
            "games",
            "paper",
            "Video.txt",
            "games",
            [1, 2, 3],
            loss="sampled-ce",
            extra=[
                "--negatives",
                "256",
                "--loss-option",
                "shared=true",
                "--val-protocol",
                "full",
                "--eval-every",
                "2",
                "--patience",
                "8",
            ],
        ),
        Experiment(
            "beauty",
            "bert4rec",
            "Beauty_BERT4Rec.txt",
            "beauty",
            [1],
            loss="sampled-ce",
            extra=[
                "--negatives",
                "3000",
                "--loss-option",
                "shared=true",
                "--val-protocol",
                "full",
                "--eval-every",
                "2",
                "--patience",
                "8",
                "--max-minutes",
                "60",
            ],
        ),
        # SASRec+'s model size and dropout (hidden 64, dropout 0.1; antklen/sasrec-bert4rec-recsys23).
        Experiment(
            "ml-1m",
            "paper",
            "ml-1m.txt",
            "ml-1m",
            [1],
            loss="ce",
            extra=[
                "--hidden",
                "64",
                "--dropout",
                "0.1",
                "--val-protocol",
                "full",
                "--patience",
                "10",
                "--max-minutes",
                "80",
            ],
            tag="-d64",
        ),
        Experiment(
            "games",
            "paper",
            "Video.txt",
            "games",
            [1],
            loss="gbce",
            extra=[
                "--negatives",
                "256",
                "--loss-option",
                "shared=true",
                "--val-protocol",
                "full",
                "--eval-every",
                "2",
                "--patience",
                "8",
            ],
        ),
        Experiment(
            "ml-1m",
            "paper",
            "ml-1m.txt",
            "ml-1m",
            [1],
            loss="gbce",
            extra=[
                "--negatives",
                "256",
                "--loss-option",
                "shared=true",
                "--val-protocol",
                "full",
                "--patience",
                "10",
                "--max-minutes",
                "40",
            ],
        ),
        # gbce with per-position negatives (as gSASRec), with the shared item embedding and without it.
        Experiment(
            "games",
            "paper",
            "Video.txt",
            "games",
            [1],
            loss="gbce",
            extra=[
                "--negatives",
                "256",
                "--loss-option",
                "shared=false",
                "--val-protocol",
                "full",
                "--eval-every",
                "2",
                "--patience",
                "8",
                "--max-minutes",
                "40",
            ],
            tag="-unshared",
        ),
        Experiment(
            "games",
            "paper",
            "Video.txt",
            "games",
            [1],
            loss="gbce",
            extra=[
                "--negatives",
                "256",
                "--loss-option",
                "shared=false",
                "--no-tied-output",
                "--val-protocol",
                "full",
                "--eval-every",
                "2",
                "--patience",
                "8",
                "--max-minutes",
                "40",
            ],
            tag="-unshared-untied",
        ),
    ],
    # The best full-ranking recipe of each dataset (--preset NAME), 3 seeds; the names of the runs they extend.
    "best": [
        Experiment("ml-1m", "paper", "ml-1m.txt", "ml-1m-sasrec-plus", [1, 2, 3], loss="ce", tag="-plus"),
        Experiment("ml-1m", "paper", "ml-1m.txt", "ml-1m-best", [1, 2, 3], loss="ce", tag="-best"),
        Experiment("games", "paper", "Video.txt", "games-gsasrec", [1, 2, 3], loss="gbce", tag="-unshared"),
        Experiment("beauty", "bert4rec", "Beauty_BERT4Rec.txt", "beauty-sampled-ce", [1, 2, 3], loss="sampled-ce"),
        Experiment("beauty", "s3rec-5core", "beauty_s3rec.txt", "beauty-s3rec-ce", [1, 2, 3], loss="ce"),
        Experiment("beauty", "bert4rec", "Beauty_BERT4Rec.txt", "beauty-bert4rec-ce", [1, 2, 3], loss="ce"),
    ],
    # Candidates for a better MovieLens-1M recipe than SASRec+, one seed each, compared on validation only
    # (full-ranking NDCG@10 of the selected epoch) with ml-1m-paper-ce-plus-seed1.
    "search": [
        Experiment(
            "ml-1m",
            "paper",
            "ml-1m.txt",
            "ml-1m-sasrec-plus",
            [1],
            loss="sampled-ce",
            extra=["--negatives", "3000", "--loss-option", "shared=true"],
            tag="-plus",
        ),
        Experiment(
            "ml-1m", "paper", "ml-1m.txt", "ml-1m-sasrec-plus", [1], loss="ce", extra=["--hidden", "128"], tag="-d128"
        ),
        Experiment(
            "ml-1m", "paper", "ml-1m.txt", "ml-1m-sasrec-plus", [1], loss="ce", extra=["--ffn-factor", "4"], tag="-ffn4"
        ),
    ],
    # Mixed precision beside float32 (the same runs as the paper suite's): bf16 may become a default only if
    # its validation-selected test metrics stay within one standard deviation of float32's.
    "precision": [
        Experiment("ml-1m", "paper", "ml-1m.txt", "ml-1m", [1, 2, 3]),
        Experiment("ml-1m", "paper", "ml-1m.txt", "ml-1m", [1, 2, 3], extra=["--precision", "bf16"], tag="-bf16"),
        Experiment("games", "paper", "Video.txt", "games", [1, 2, 3]),
        Experiment("games", "paper", "Video.txt", "games", [1, 2, 3], extra=["--precision", "bf16"], tag="-bf16"),
    ],
    # The reference's batching (random users, fixed-length padded batches) beside our default (bucket),
    # to show that bucketing does not lower accuracy; compare with the paper suite's seed-1 curves.
    "batching": [
        Experiment(
            "games", "paper", "Video.txt", "games", [1], extra=["--batching", "random", "--epochs", "20"], tag="-random"
        ),
        Experiment(
            "ml-1m",
            "paper",
            "ml-1m.txt",
            "ml-1m",
            [1],
            extra=["--batching", "random", "--epochs", "10", "--no-position-weighting"],
            tag="-random",
        ),
        # The default (position-weighted buckets) on MovieLens-1M; the paper suite's ML-1M runs are unweighted.
        Experiment("ml-1m", "paper", "ml-1m.txt", "ml-1m", [1], extra=["--epochs", "20"], tag="-weighted"),
    ],
}
# The order runs start in, so that a session that stops early still has the most important ones.
PRIORITY = [
    "ml-1m-paper-bce-seed1",
    "ml-1m-paper-bce-bf16-seed1",
    "games-paper-bce-seed1",
    "games-paper-bce-bf16-seed1",
    "games-paper-bce-seed2",
    "games-paper-bce-bf16-seed2",
    "games-paper-bce-seed3",
    "games-paper-bce-bf16-seed3",
    "ml-1m-paper-bce-seed2",
    "ml-1m-paper-bce-bf16-seed2",
    "ml-1m-paper-bce-seed3",
    "ml-1m-paper-bce-bf16-seed3",
    "games-paper-bce-random-seed1",
    "beauty-s3rec-5core-bce-seed1",
    "beauty-bert4rec-bce-seed1",
    "ml-1m-paper-bce-random-seed1",
    "ml-1m-paper-ce-seed1",
    "games-paper-sampled-ce-seed1",
    "beauty-bert4rec-sampled-ce-seed1",
    "games-paper-gbce-seed1",
    "ml-1m-paper-gbce-seed1",
]


def prepare(data_dir: Path, work: Path) -> None:
    """Check hashes, link the SASRec-format files into ``work`` and convert the per-user Beauty file."""
    work.mkdir(parents=True, exist_ok=True)
    for name, expected in PAPER_SHA256.items():
        path = data_dir / name
        if not path.exists():
            print(f"missing {path}: its rows will be skipped")
            continue
        actual = file_sha256(path)
        status = "matches the paper's file" if actual == expected else f"DIFFERS from the paper's ({actual})"
        print(f"{name}: sha256 {status}")
    for name in ("ml-1m.txt", "Video.txt", "Beauty_BERT4Rec.txt"):
        if (data_dir / name).exists() and not (work / name).exists():
            (work / name).symlink_to((data_dir / name).resolve())
    s3rec = data_dir / "Beauty_S3Rec_5core.txt"
    if s3rec.exists() and not (work / "beauty_s3rec.txt").exists():
        from sasrec.data.preprocess import preprocess_file

        # Already 5-core and in time order: keep every row (min_count 1), renumber ids, keep the order.
        preprocess_file(s3rec, work, "beauty_s3rec", "per-user", min_count=1, progress=False)


def cpu_model() -> str:
    """This machine's CPU model as /proc/cpuinfo names it (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_one(exp: Experiment, seed: int, work: Path, runs: Path, threads: int, epochs: int | None) -> Path | None:
    out = runs / exp.name(seed)
    if (out / "results.json").exists():
        return out
    if not (work / exp.file).exists():
        print(f"skip {out.name}: {work / exp.file} not found")
        return None
    cmd = [sys.executable, "-m", "sasrec", "train", "--quiet", "--threads", str(threads)]
    if (out / "last.safetensors").exists():
        cmd += ["--resume", str(out)]
    else:
        cmd += [
            "--dataset",
            str(work / exp.file),
            "--preset",
            exp.preset,
            "--seed",
            str(seed),
            "--loss",
            exp.loss,
            "--out",
            str(out),
            *exp.extra,
        ]
        if epochs:
            cmd += ["--epochs", str(epochs)]
    print("$", " ".join(cmd), flush=True)
    experiment = {"dataset": exp.dataset, "variant": exp.variant, "loss": exp.loss, "tag": exp.tag, "seed": seed}
    # Times are only comparable on one CPU model: record the one that (re)started the run.
    (runs / f"{out.name}.experiment.json").write_text(json.dumps({**experiment, "cpu": cpu_model()}))
    with open(runs / f"{out.name}.stdout", "a") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        print(f"{out.name} failed with status {code}; see {runs / (out.name + '.stdout')}", flush=True)
        return None
    return out


def collect(runs: Path, results: Path) -> None:
    """Copy the small files of every finished run in ``runs`` to ``results/runs/NAME/``."""
    for run_log in sorted(runs.glob("*/log.jsonl")):
        run_dir = run_log.parent
        if not (run_dir / "results.json").exists():
            print(f"{run_dir.name}: not finished, left out of the tables")
            continue
        keep = results / "runs" / run_dir.name
        keep.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "fingerprint.json", "log.jsonl", "results.json"):
            shutil.copy(run_dir / name, keep / name)
        shutil.copy(runs / f"{run_dir.name}.experiment.json", keep / "experiment.json")


def summarize(kept: Path, unfinished: Path | None = None) -> tuple[list[dict], list[dict]]:
    """``(summary rows, learning-curve points)`` from the finished runs kept in ``kept`` (``results/runs``).

    Curves also include the unfinished runs of ``unfinished`` (marked ``finished: False``) when given.
    """
    from sasrec.plots import read_log

    rows: dict[tuple, list[dict]] = {}
    curves = []
    sources = [(d, d / "experiment.json") for d in sorted(p.parent for p in kept.glob("*/results.json"))]
    if unfinished is not None:
        sources += [
            (d, unfinished / f"{d.name}.experiment.json")
            for d in sorted(p.parent for p in unfinished.glob("*/log.jsonl"))
            if not (d / "results.json").exists()
        ]
    for run_dir, experiment_file in sorted(sources, key=lambda source: source[0].name):
        config = json.loads((run_dir / "config.json").read_text())
        log = read_log(run_dir / "log.jsonl")
        experiment = json.loads(experiment_file.read_text())
        dataset, variant, setting = experiment["dataset"], experiment["variant"], describe(config)
        finished = (run_dir / "results.json").exists()
        for r in log:
            if "valid" in r:
                curves.append(
                    {
                        "run": run_dir.name,
                        "dataset": dataset,
                        "variant": variant,
                        "loss": config["loss"],
                        "tag": experiment.get("tag", ""),
                        "finished": finished,
                        "setting": setting,
                        "seed": config["seed"],
                        "epoch": r["epoch"],
                        "HR@10": r["valid"]["HR@10"],
                        "NDCG@10": r["valid"]["NDCG@10"],
                        "loss_value": r["loss"],
                    }
                )
        if not finished:
            continue
        res = json.loads((run_dir / "results.json").read_text())
        selection = config["val_protocol"]
        train_seconds = sum(r["train_seconds"] + r.get("eval_seconds", 0.0) for r in log)
        best = res["best_epoch"]
        to_best = sum(r["train_seconds"] + r.get("eval_seconds", 0.0) for r in log if r["epoch"] <= best)
        for protocol in ("sampled", "full"):
            key = (dataset, variant, config["loss"], setting, protocol, selection)
            rows.setdefault(key, []).append(
                {
                    "HR@10": res[protocol]["metrics"]["HR@10"],
                    "NDCG@10": res[protocol]["metrics"]["NDCG@10"],
                    "valid_NDCG@10": res["valid_NDCG@10"],
                    "best_epoch": best,
                    "train_seconds": train_seconds,
                    "seconds_to_best": to_best,
                    "epochs": len(log),
                    "seconds_per_epoch": statistics.median(r["train_seconds"] for r in log),
                    "seed": config["seed"],
                    "run": run_dir.name,
                    "cpu": experiment.get("cpu", "not recorded"),
                }
            )
    summary = []
    for (dataset, variant, loss, setting, protocol, selection), items in sorted(rows.items()):
        hr, hr_std = _mean_std([i["HR@10"] for i in items])
        ndcg, ndcg_std = _mean_std([i["NDCG@10"] for i in items])
        summary.append(
            {
                "dataset": dataset,
                "variant": variant,
                "loss": loss,
                "setting": setting,
                "protocol": protocol,
                "selection": f"validation {selection} NDCG@10",
                "seeds": len(items),
                "HR@10": round(hr, 4),
                "HR@10_std": round(hr_std, 4),
                "NDCG@10": round(ndcg, 4),
                "NDCG@10_std": round(ndcg_std, 4),
                "valid_NDCG@10": round(statistics.mean(i["valid_NDCG@10"] for i in items), 4),
                "best_epoch": [i["best_epoch"] for i in items],
                "train_seconds": round(statistics.mean(i["train_seconds"] for i in items), 1),
                "seconds_to_best": round(statistics.mean(i["seconds_to_best"] for i in items), 1),
                "seconds_to_best_each": [round(i["seconds_to_best"], 1) for i in items],
                "seconds_per_epoch": round(statistics.mean(i["seconds_per_epoch"] for i in items), 2),
                "runs": [i["run"] for i in items],
                "cpus": sorted({i["cpu"] for i in items}),
            }
        )
    return summary, curves


def aggregate(runs: Path, results: Path, docs: Path, readme: Path) -> None:
    """Collect finished runs into ``results/runs`` and write, from those alone, ``results/summary.json``,
    the learning curves, the tables of ``docs/results.md`` and the README's headline table."""
    if runs.exists():
        collect(runs, results)
    summary, curves = summarize(results / "runs", runs if runs.exists() else None)
    if not summary:
        raise SystemExit(f"no finished run in {results / 'runs'} or {runs}: nothing to aggregate")
    (results / "summary.json").write_text(json.dumps(summary, indent=2))
    if curves:
        with open(results / "learning_curves.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(curves[0]))
            writer.writeheader()
            writer.writerows(curves)
        plot_curves(curves, results / "learning_curves.png")
        plot_batching(curves, results / "batching_comparison.png")
        plot_precision(curves, results / "precision_parity.png")
    docs.mkdir(parents=True, exist_ok=True)
    results_md = docs / "results.md"
    if not results_md.exists():
        results_md.write_text(f"# Results\n\n{RESULTS_START}\n{RESULTS_END}\n")
    replace_block(results_md, RESULTS_START, RESULTS_END, table(summary))
    replace_block(readme, HEADLINE_START, HEADLINE_END, headline(summary))
    print(f"wrote {results / 'summary.json'}, {results_md} and the headline table of {readme}")


RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"
HEADLINE_START, HEADLINE_END = "<!-- headline:start -->", "<!-- headline:end -->"


def replace_block(path: Path, start: str, end: str, text: str) -> None:
    """Replace the text between the ``start`` and ``end`` marker lines of ``path`` with ``text``."""
    content = path.read_text()
    if start not in content or end not in content:
        raise SystemExit(f"{path} has no {start} ... {end} block to write the table into")
    head, rest = content.split(start, 1)
    path.write_text(head + start + "\n" + text + end + rest.split(end, 1)[1])


def read_block(path: Path, start: str, end: str) -> str:
    """The text between the ``start`` and ``end`` marker lines of ``path`` (as ``replace_block`` writes it)."""
    return path.read_text().split(start + "\n", 1)[1].split(end, 1)[0]


def describe(config: dict) -> str:
    """How a run's training differs from the presets' defaults, in a few words."""
    batching = config["batching"]
    text = "random batches (reference)" if batching == "random" else f"{batching} batches"
    if batching != "random":
        text += ", position-weighted" if config.get("position_weighting") else ", unweighted"
    if config.get("precision", "fp32") != "fp32":
        text += f", {config['precision']}"
    if config.get("norm_first"):
        text += ", pre-LN"
    if not config.get("tied_output", True):
        text += ", separate output embedding"
    # Differences from the dataset's paper preset (a recipe preset's own changes are listed too).
    name = config.get("preset")
    name = RECIPES[name].dataset if name in RECIPES else name
    preset = {**Config().to_dict(), **(DATASETS[name].hyperparameters if name else {})}
    text += "".join(
        f", {key} {config[key]}"
        for key in ("hidden", "dropout", "maxlen", "num_blocks", "ffn_factor", "adam_beta2", "l2_emb", "patience")
        if key in config and config[key] != preset[key]
    )
    options = dict(config.get("loss_options") or {})
    if config["loss"] != "ce" and (config["loss"] != "bce" or config.get("negatives", 1) != 1):
        shared = " shared" if str(options.pop("shared", False)).lower() in ("true", "1") else ""
        in_batch = str(options.pop("in_batch", False)).lower() in ("true", "1")
        text += ", in-batch negatives" if in_batch else f", {config['negatives']}{shared} negatives"
    text += "".join(f", {k}={v}" for k, v in options.items())
    return f"{text}, {config['epochs']} epochs max"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def plot_curves(curves: list[dict], path: Path) -> None:
    from sasrec.plots import plt

    panels = sorted({(c["dataset"], c["variant"]) for c in curves if c["loss"] == "bce" and c["finished"]})
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.6), squeeze=False)
    for ax, (dataset, variant) in zip(axes[0], panels, strict=False):
        runs = sorted(
            {
                c["run"]
                for c in curves
                if c["finished"] and (c["dataset"], c["variant"], c["loss"], c["tag"]) == (dataset, variant, "bce", "")
            }
        )
        for i, run in enumerate(runs):
            points = [c for c in curves if c["run"] == run]
            epochs = [c["epoch"] for c in points]
            ax.plot(
                epochs, [c["HR@10"] for c in points], color="tab:blue", alpha=0.7, label="HR@10" if i == 0 else None
            )
            ax.plot(
                epochs,
                [c["NDCG@10"] for c in points],
                color="tab:orange",
                alpha=0.7,
                label="NDCG@10" if i == 0 else None,
            )
        ax.set(title=f"{dataset} ({variant})", xlabel="epoch", ylabel="validation (sampled, 100 neg.)")
    _save(fig, axes[0], path)


def _save(fig, axes, path: Path) -> None:
    from sasrec.plots import plt

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_batching(curves: list[dict], path: Path) -> None:
    """Validation NDCG@10 per epoch of seed 1 under each batching setting, for the datasets that have several."""
    from sasrec.plots import plt

    datasets = sorted({c["dataset"] for c in curves if c["tag"] == "-random"})
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for tag in ("", "-random", "-unweighted", "-weighted"):
            points = [
                c
                for c in curves
                if c["dataset"] == dataset
                and c["tag"] == tag
                and c["seed"] == 1
                and c["loss"] == "bce"
                and c["epoch"] <= 60
            ]
            if points:
                label = points[0]["setting"].rsplit(",", 1)[0]  # without the epoch cap
                ax.plot([c["epoch"] for c in points], [c["NDCG@10"] for c in points], label=label)
        ax.set(title=f"{dataset}: batching", xlabel="epoch", ylabel="validation NDCG@10 (sampled)")
    _save(fig, axes[0], path)


ANCHORS = {  # (dataset, variant): (HR@10, NDCG@10, source)
    ("ml-1m", "paper"): (0.8245, 0.5905, "SASRec paper"),
    ("games", "paper"): (0.7410, 0.5360, "SASRec paper"),
    ("beauty", "s3rec-5core"): (0.5059, 0.3384, "pmixer's code on this file (S3Rec#11)"),
    ("beauty", "bert4rec"): (None, None, "no sampled-uniform anchor"),
}


FULL_TARGETS = {  # (dataset, variant): (HR@10, NDCG@10, source), full ranking (the losses issue's targets)
    ("ml-1m", "paper"): (0.3159, 0.1857, "SASRec+ 3000 neg."),
    ("beauty", "bert4rec"): (0.0533, 0.0327, "SASRec+"),
}


def plot_precision(curves: list[dict], path: Path) -> None:
    """Validation NDCG@10 per epoch of every seed in float32 and in bfloat16, overlaid, per dataset."""
    from sasrec.plots import plt

    datasets = sorted({c["dataset"] for c in curves if c["tag"] == "-bf16"})
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for tag, color, label in (("", "tab:blue", "float32"), ("-bf16", "tab:orange", "bfloat16")):
            key = (dataset, tag, "bce", True)  # finished runs only, as in the table
            runs = sorted({c["run"] for c in curves if (c["dataset"], c["tag"], c["loss"], c["finished"]) == key})
            for i, run in enumerate(runs):
                points = [c for c in curves if c["run"] == run]
                ax.plot(
                    [c["epoch"] for c in points],
                    [c["NDCG@10"] for c in points],
                    color=color,
                    alpha=0.6,
                    label=f"{label} ({len(runs)} seed{'s' * (len(runs) != 1)})" if i == 0 else None,
                )
        ax.set(title=f"{dataset}: training precision", xlabel="epoch", ylabel="validation NDCG@10 (sampled)")
    _save(fig, axes[0], path)


def precision_table(summary: list[dict]) -> str:
    """bf16 rows beside their float32 rows: test metrics (mean ± std over seeds) and whether the difference
    of the means is within one float32 standard deviation (the mixed-precision issue's criterion)."""
    lines = [
        "| dataset | protocol | metric | float32 | bfloat16 | difference | within one float32 std |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        if ", bf16" not in r["setting"]:
            continue
        base = next(
            (
                b
                for b in summary
                if (b["dataset"], b["variant"], b["loss"], b["protocol"], b["selection"])
                == (r["dataset"], r["variant"], r["loss"], r["protocol"], r["selection"])
                and b["setting"] == r["setting"].replace(", bf16", "")
            ),
            None,
        )
        if base is None:  # e.g. its float32 runs were trained with other settings: say so in the table
            lines.append(f"| {r['dataset']} | {r['protocol']} | no float32 row with the same settings | | | | |")
            continue
        for metric in ("HR@10", "NDCG@10"):
            diff, std = r[metric] - base[metric], base[f"{metric}_std"]
            if min(r["seeds"], base["seeds"]) < 2:
                ok = "needs 2+ seeds each"
            else:
                ok = "yes" if abs(diff) <= std else ("no: higher" if diff > 0 else "no: lower")
            lines.append(
                f"| {r['dataset']} | {r['protocol']} | {metric} | {base[metric]:.4f} ± {base[f'{metric}_std']:.4f} "
                f"({base['seeds']}) | {r[metric]:.4f} ± {r[f'{metric}_std']:.4f} ({r['seeds']}) | {diff:+.4f} | {ok} |"
            )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def loss_table(summary: list[dict]) -> str:
    """Every loss on the datasets that have a softmax-family run: full ranking and the paper's protocol."""
    datasets = {(r["dataset"], r["variant"]) for r in summary if r["loss"] != "bce"}
    by_key = {(r["dataset"], r["variant"], r["loss"], r["setting"], r["selection"], r["protocol"]): r for r in summary}
    lines = [
        "| dataset | version | loss | training | selection | full HR@10 | full NDCG@10 | target (full) | "
        "sampled HR@10 | sampled NDCG@10 | best epoch | s/epoch* | time to best* |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        ablation = any(tag in run for run in r["runs"] for tag in ("-random-", "-unweighted-", "-weighted-", "-bf16-"))
        if r["protocol"] != "full" or (r["dataset"], r["variant"]) not in datasets or ablation:
            continue
        sampled = by_key[(r["dataset"], r["variant"], r["loss"], r["setting"], r["selection"], "sampled")]
        target = FULL_TARGETS.get((r["dataset"], r["variant"]))
        lines.append(
            f"| {r['dataset']} | {r['variant']} | {r['loss']} | {r['setting']} | {r['selection']} | "
            f"{r['HR@10']:.4f} | {r['NDCG@10']:.4f} | {f'{target[0]} / {target[1]} ({target[2]})' if target else ''}"
            f" | {sampled['HR@10']:.4f} | {sampled['NDCG@10']:.4f} | {', '.join(map(str, r['best_epoch']))} | "
            f"{r['seconds_per_epoch']} | {r['seconds_to_best'] / 60:.0f} min |"
        )
    return "\n".join(lines) + "\n"


def full_selected(summary: list[dict], dataset: str, variant: str) -> list[dict]:
    """The full-ranking test rows of one data version whose runs selected their epoch on full ranking."""
    return [
        r
        for r in summary
        if (r["dataset"], r["variant"], r["protocol"]) == (dataset, variant, "full")
        and r["selection"] == "validation full NDCG@10"
    ]


def headline_row(summary: list[dict], dataset: str, variant: str) -> dict | None:
    """The row the headline quotes: a 3-seed row wins over a better-validating single run (settled numbers),
    then the best validation NDCG@10. Test metrics play no part."""
    rows = full_selected(summary, dataset, variant)
    return max(rows, key=lambda r: (min(r["seeds"], 3), r["valid_NDCG@10"]), default=None)


def search_table(summary: list[dict]) -> str:
    """The full-ranking-selected rows of each data version, by validation NDCG@10 (the recipe search's record)."""
    rows = [r for r in summary if r["protocol"] == "full" and r["selection"] == "validation full NDCG@10"]
    rows.sort(key=lambda r: (r["dataset"], r["variant"], -r["valid_NDCG@10"]))
    lines = [
        "| dataset | version | loss | training | seeds | valid NDCG@10 | test HR@10 | test NDCG@10 | best epochs "
        "| CPU | |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        chosen = "headline" if r is headline_row(summary, r["dataset"], r["variant"]) else ""
        lines.append(
            f"| {r['dataset']} | {r['variant']} | {r['loss']} | {r['setting']} | {r['seeds']} | "
            f"{r['valid_NDCG@10']:.4f} | {r['HR@10']:.4f} | {r['NDCG@10']:.4f} | "
            f"{', '.join(map(str, r['best_epoch']))} | {'; '.join(r.get('cpus', []))} | {chosen} |"
        )
    return "\n".join(lines) + "\n" if rows else ""


def table(summary: list[dict]) -> str:
    lines = []
    for protocol, title in (
        ("sampled", "Paper protocol: the held-out item against 100 uniform negatives"),
        ("full", "Full ranking against every item, seen items filtered"),
    ):
        lines += [
            f"### {title}",
            "",
            "Test split, all users; the best epoch is chosen on the validation split.",
            "",
            "| dataset | version | loss | training | selection | seeds | HR@10 | NDCG@10 | "
            "anchor HR@10 / NDCG@10 | best epochs | s/epoch* | train time* |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in summary:
            if r["protocol"] != protocol:
                continue
            anchor = ANCHORS.get((r["dataset"], r["variant"]), (None, None, ""))
            anchor_text = f"{anchor[0]} / {anchor[1]} ({anchor[2]})" if anchor[0] and protocol == "sampled" else ""
            lines.append(
                f"| {r['dataset']} | {r['variant']} | {r['loss']} | {r['setting']} | {r['selection']} | "
                f"{r['seeds']} | {r['HR@10']:.4f} ± {r['HR@10_std']:.4f} | {r['NDCG@10']:.4f} ± "
                f"{r['NDCG@10_std']:.4f} | {anchor_text} | {', '.join(map(str, r['best_epoch']))} | "
                f"{r['seconds_per_epoch']} | {r['train_seconds'] / 60:.0f} min |"
            )
        if protocol == "sampled":
            lines.append(
                "| steam | paper | bce | | | 0 | not run here | not run here | 0.8729 / 0.6306 (SASRec "
                "paper) | | | the paper's Steam file is not available on these machines |"
            )
        lines.append("")
    parity = precision_table(summary)
    if parity:
        lines += [
            "### Training precision",
            "",
            "`--precision bf16` beside float32, the same settings and seeds (seeds in parentheses); test split, "
            "best epoch chosen on validation. Validation curves: "
            "[precision_parity.png](../results/precision_parity.png).",
            "",
            parity,
        ]
    search = search_table(summary)
    if search:
        lines += [
            "### Recipe search on validation",
            "",
            "Every run selected on full-ranking validation, per data version, best validation NDCG@10 first: the "
            "candidates a recipe preset was chosen from. The README's headline quotes the row marked *headline*: "
            "of the rows with 3 seeds (any row where none has 3), the best validation NDCG@10 (a mean over "
            "seeds). The test columns are never used to choose. CPU: the machine that trained the runs (not "
            "recorded before 2026-12-01: 2-core AMD EPYC or Intel Xeon machines); epoch times differ up to 2x "
            "between these CPU models.",
            "",
            search,
        ]
    if any(r["loss"] != "bce" for r in summary):
        lines += [
            "### Losses",
            "",
            "Test split, all users; BCE rows are the paper runs above, mean over their seeds; "
            "the other losses select their best epoch on full-ranking validation.",
            "",
            loss_table(summary),
        ]
    lines.append(
        "\\* Measured while several runs shared the machine's 2 cores, one thread each (up to nine for the "
        "paper rows, two or three for the loss rows), so these times are 2-4x a run alone; "
        "[speed.md](speed.md) has clean per-epoch times. Train time and time to best include validation "
        "(every epoch; every 2 epochs for the Games and Beauty loss runs)."
    )
    return "\n".join(lines) + "\n"


HEADLINE = [  # (dataset, variant, label): the README's headline table, one row per data version
    ("ml-1m", "paper", "MovieLens-1M, kang205's `ml-1m.txt`"),
    ("games", "paper", "Amazon Games, kang205's `Video.txt`"),
    ("beauty", "bert4rec", "Amazon Beauty, BERT4Rec's `beauty.txt`"),
    ("beauty", "s3rec-5core", "Amazon Beauty 5-core, S3-Rec's `Beauty.txt`"),
]
PUBLISHED_FULL = {  # (dataset, variant): (HR@10, NDCG@10, source), the best published full-ranking numbers
    ("ml-1m", "paper"): (0.3159, 0.1857, "SASRec+ (antklen/sasrec-bert4rec-recsys23)"),
    ("beauty", "bert4rec"): (0.0595, 0.0359, "RecTools SASRec"),
    ("beauty", "s3rec-5core"): (0.0935, 0.0544, "Scalable-SASRec"),
}


def headline(summary: list[dict]) -> str:
    """One row per data version: the paper's loss (bce) under both protocols beside the SASRec paper, and
    the loss with the best full-ranking validation NDCG@10 (among rows with 3 seeds, if any) beside the best
    published full-ranking numbers."""

    def pair(r: dict | None) -> str:
        if r is None:
            return "not run"
        seeds = f" ({r['seeds']} seeds)" if r["seeds"] > 1 else ""
        return f"{r['HR@10']:.4f} / {r['NDCG@10']:.4f}{seeds}"

    def paper_bce(dataset: str, variant: str, protocol: str) -> dict | None:
        untagged = re.compile(rf"{re.escape(dataset)}-{re.escape(variant)}-bce-seed\d+")
        return next(
            (
                r
                for r in summary
                if (r["dataset"], r["variant"], r["loss"], r["protocol"]) == (dataset, variant, "bce", protocol)
                and all(untagged.fullmatch(run) for run in r["runs"])
            ),
            None,
        )

    lines = [
        "| dataset | ours, paper's protocol (bce) | SASRec paper | ours, full ranking (bce) | "
        "ours, full ranking (best loss) | best published, full ranking |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, variant, label in HEADLINE:
        anchor = ANCHORS.get((dataset, variant), (None, None, ""))
        paper = f"{anchor[0]} / {anchor[1]}" if anchor[2] == "SASRec paper" else "other version"
        best = headline_row(summary, dataset, variant)
        best_text = "not run"
        if best is not None:
            extra = best["setting"].split(", ")[:-1]  # without the epoch cap
            extra = [e for e in extra if e not in ("bucket batches", "position-weighted")]
            # Each seed's time: runs of one row may come from different machines (see the recipe search's CPU).
            minutes = sorted(round(t / 60) for t in best.get("seconds_to_best_each", [best["seconds_to_best"]]))
            to_best = f"{'-'.join(map(str, sorted({minutes[0], minutes[-1]})))} min to best"
            seeds = f"{best['seeds']} seeds; " if best["seeds"] > 1 else ""
            best_text = (
                f"{best['HR@10']:.4f} / {best['NDCG@10']:.4f} ({seeds}{', '.join([best['loss'], *extra, to_best])})"
            )
        published = PUBLISHED_FULL.get((dataset, variant))
        published_text = f"{published[0]} / {published[1]}, {published[2]}" if published else "none published"
        lines.append(
            f"| {label} | {pair(paper_bce(dataset, variant, 'sampled'))} | {paper} | "
            f"{pair(paper_bce(dataset, variant, 'full'))} | {best_text} | {published_text} |"
        )
    lines.append("| Steam | not run (the paper's file is not available here) | 0.8729 / 0.6306 | | | |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--suite", choices=sorted(SUITES), nargs="+", default=["paper"])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "reproduce", help="full run directories")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--epochs", type=int, help="override the presets' epoch count (for a quick check)")
    parser.add_argument("--only", nargs="*", help="only experiments whose run name contains one of these")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where results.md is written")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md", help="gets the headline table")
    parser.add_argument(
        "--aggregate-only",
        action="store_true",
        help="only rebuild the tables and curves from results/runs (no data, no training)",
    )
    args = parser.parse_args()
    if not args.aggregate_only:
        args.runs.mkdir(parents=True, exist_ok=True)
        work = args.runs / "data"
        prepare(args.data_dir, work)
        jobs = sorted(
            (
                (exp, seed)
                for suite in args.suite
                for exp in SUITES[suite]
                for seed in exp.seeds
                if not args.only or any(o in exp.name(seed) for o in args.only)
            ),
            key=lambda job: PRIORITY.index(job[0].name(job[1])) if job[0].name(job[1]) in PRIORITY else len(PRIORITY),
        )
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda job: run_one(*job, work, args.runs, args.threads, args.epochs), jobs))
    aggregate(args.runs, args.results, args.docs, args.readme)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
