"""Training-speed benchmark: ``python -m sasrec.bench [--data-dir DIR] [--datasets games ml-1m steam-sized]``.

For each workload, loss and precision it trains a few epochs with the paper's hyperparameters, each row in a
fresh process (so rows do not warm each other's caches and each reports its own peak memory), and prints
seconds per epoch, real positions per second, GFLOP/s on real positions beside this machine's measured matmul
peak for the precision used (float32 or bfloat16), validation seconds, test evaluation seconds under both
protocols (float32 whatever the training precision) and peak memory. It reports the CPU model first.
``--json FILE`` keeps everything and ``--markdown docs/speed.md`` appends it there as a dated table.

Default rows: Games ``bce``; MovieLens-1M ``bce`` and ``ce``; the Steam-sized workload ``bce``; each in fp32
and bf16 (``--losses`` and ``--precisions`` choose others). ``steam-sized`` is a generated workload with
Steam's size (334,730 users, 13,047 items, ~3.7M interactions): long-tailed lengths of mean 11 and Zipf item
popularity, as described in the paper; no real Steam data is used.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from sasrec.config import resolve
from sasrec.data.dataset import Sequences
from sasrec.evaluate import Evaluator, ModelScorer
from sasrec.precision import cpu_has_native_bf16
from sasrec.runs import RunDir, load_dataset
from sasrec.train import Trainer

DEFAULT_LOSSES = {"games": ("bce",), "ml-1m": ("bce", "ce"), "steam-sized": ("bce",)}


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 10) -> float:
    """Measured ``size``-cube matmul throughput in ``dtype`` with the current torch thread count."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def flops_per_epoch(train: Sequences, maxlen: int, hidden: int, blocks: int, negatives: int) -> float:
    """Forward + backward (3x forward) FLOPs over the real positions of one epoch.

    Per real position and block: 12 d^2 for the four projections and the two FFN layers, plus
    4 d (t + 1) for the causal attention products (scores and weighted values over t + 1 real keys);
    per position, 2 d (1 + negatives) for the loss's dot products.
    """
    n = np.minimum(train.lengths - 1, maxlen)
    n = n[n > 0].astype(np.float64)
    positions = n.sum()
    context = (n * (n + 1) / 2).sum()  # sum over positions of (t + 1)
    forward = blocks * (12 * hidden**2 * positions + 4 * hidden * context) + 2 * hidden * (1 + negatives) * positions
    return 3 * forward


def steam_sized(seed: int = 0, users: int = 334_730, items: int = 13_047, mean_length: float = 11.0) -> Sequences:
    """A generated workload of Steam's size: power-law lengths (min 1), Zipf item popularity."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(np.floor(rng.pareto(1.6, users) * 4.0 + 1).astype(np.int64), 2000)
    lengths = np.maximum(1, np.round(lengths * mean_length / lengths.mean()).astype(np.int64))
    popularity = 1.0 / np.arange(1, items + 1) ** 1.0
    draws = rng.choice(items, size=int(lengths.sum()), p=popularity / popularity.sum()) + 1
    offsets = np.zeros(users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Sequences(offsets, draws.astype(np.int64), items)


def load_workload(name: str, data_dir: str) -> Sequences:
    """The sequences of a named workload (``steam-sized`` is generated; the others read from ``data_dir``)."""
    if name == "steam-sized":
        return steam_sized()
    data, _ = load_dataset(resolve({"dataset": name, "data_dir": data_dir}))
    return data


def bench_row(name: str, data_dir: str, loss: str, precision: str, epochs: int, threads: int, evaluate: bool) -> dict:
    """Time ``epochs`` epochs of one (workload, loss, precision); meant to run in a fresh process."""
    if threads:
        torch.set_num_threads(threads)
    data = load_workload(name, data_dir)
    preset = "steam" if name == "steam-sized" else name
    config = resolve(
        {
            "dataset": "synthetic",
            "preset": preset,
            "quiet": True,
            "threads": threads or None,
            "loss": loss,
            "precision": precision,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, RunDir(tmp), data=data)
        seconds, positions = [], 0
        for _ in range(epochs):
            start = time.perf_counter()
            _, positions = trainer.train_epoch()
            seconds.append(time.perf_counter() - start)
        t0 = time.perf_counter()
        trainer.validate()
        valid_seconds = time.perf_counter() - t0
        eval_seconds = {}
        if evaluate:
            scorer = ModelScorer(trainer.model)
            for protocol in ("sampled", "full"):
                evaluator = Evaluator(trainer.split, "test", protocol)
                eval_seconds[protocol] = round(evaluator.run(scorer, progress=False).seconds, 3)
        train = trainer.split.train
        candidates = train.num_items if loss == "ce" else config.negatives
        flops = flops_per_epoch(train, config.maxlen, config.hidden, config.num_blocks, candidates)
        median = statistics.median(seconds)
        return {
            "dataset": name,
            "loss": loss,
            "precision": trainer.precision,
            "epochs_timed": epochs,
            "seconds_per_epoch": round(median, 3),
            "seconds_all": [round(s, 3) for s in seconds],
            "positions_per_second": round(positions / median, 1),
            "gflops_per_second_real_positions": round(flops / median / 1e9, 2),
            "validation_seconds": round(valid_seconds, 3),
            "test_eval_seconds": eval_seconds,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "users": train.num_users,
            "items": train.num_items,
            "interactions": int(data.offsets[-1]),
        }


LABELS = {"games": "Amazon Games (maxlen 50)", "ml-1m": "MovieLens-1M (maxlen 200)", "steam-sized": "Steam-sized"}


def markdown_table(report: dict, command: str = "") -> str:
    """A report as a dated Markdown section (heading, machine, command, one row per run) for ``docs/speed.md``."""
    machine, peaks = report["machine"], report["matmul_peak_gflops"]
    lines = [
        f"### {report['date']}: {machine['cpu_model']}, {machine['threads']} threads, torch {machine['torch']}",
        "",
        f"Matmul peak (2048-cube): float32 {peaks['fp32']} GFLOP/s, bfloat16 {peaks['bf16']} GFLOP/s "
        f"(native bf16 instructions: {'yes' if machine['native_bf16'] else 'no'})."
        + (f" `{command}`" if command else ""),
        "",
        "| workload | loss | precision | s/epoch (median) | real positions/s | GFLOP/s (real) of the precision's peak "
        "| validation | test eval full / sampled | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        peak, gflops, evals = peaks[r["precision"]], r["gflops_per_second_real_positions"], r["test_eval_seconds"]
        test = f"{evals['full']:.2f} s / {evals['sampled']:.2f} s" if evals else "(as above)"
        lines.append(
            f"| {LABELS.get(r['dataset'], r['dataset'])} | {r['loss']} | {r['precision']} | "
            f"{r['seconds_per_epoch']:.2f} | {r['positions_per_second'] / 1000:.1f}k | "
            f"{gflops:.1f} of {peak} ({100 * gflops / peak:.1f}%) | {r['validation_seconds']:.2f} s | "
            f"{test} | {r['peak_rss_mb']:.0f} MiB |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="where ml-1m.txt / Video.txt (games) are found")
    parser.add_argument("--datasets", nargs="+", default=["games", "ml-1m", "steam-sized"], choices=list(LABELS))
    parser.add_argument("--losses", nargs="+", help="for every workload (default: bce; ml-1m also ce)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per row (the median is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: PyTorch's choice)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="append the results as a dated table to this file (docs/speed.md)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpu_model": cpu_model(),
            "native_bf16": cpu_has_native_bf16(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "matmul_peak_gflops": {
            "fp32": round(matmul_peak_gflops(torch.float32), 1),
            "bf16": round(matmul_peak_gflops(torch.bfloat16), 1),
        },
        "runs": [],
    }
    print(json.dumps(report), flush=True)
    # One fresh process per row: no cache warmed by an earlier row, and its own peak memory.
    spawn = multiprocessing.get_context("spawn")
    for name in args.datasets:
        evaluate = True  # test evaluation is float32 whatever the training precision: timed once per workload
        for loss in args.losses or DEFAULT_LOSSES[name]:
            for precision in args.precisions:
                with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                    job = pool.submit(
                        bench_row, name, args.data_dir, loss, precision, args.epochs, args.threads, evaluate
                    )
                    try:
                        row = job.result()
                    except Exception as exc:  # noqa: BLE001 - a missing dataset skips its rows, saying why
                        print(f"{name}: skipped ({exc})", flush=True)
                        break
                evaluate = False
                report["runs"].append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.markdown:
        command = "python -m sasrec.bench " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(args.markdown, "a") as f:
            f.write("\n" + markdown_table(report, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
