"""Training-speed benchmark: ``python -m sasrec.bench [--data-dir DIR] [--datasets games ml-1m steam-sized]``.

For each dataset preset it trains a few epochs with the paper's hyperparameters and prints seconds per
epoch, examples and real positions per second, GFLOP/s on real positions beside this machine's measured
float32 matmul peak, validation/evaluation seconds, and the process's peak memory; ``--json FILE`` keeps
them and ``--markdown docs/speed.md`` appends them there as a dated table. ``steam-sized`` is a generated
workload with Steam's size (334,730 users, 13,047 items, ~3.7M interactions): long-tailed lengths of mean 11
and Zipf item popularity, as described in the paper; no real Steam data is used.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sasrec.config import resolve
from sasrec.data.dataset import Sequences
from sasrec.evaluate import Evaluator, ModelScorer
from sasrec.runs import RunDir, load_dataset
from sasrec.train import Trainer


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Measured float32 matmul throughput of this machine with the current torch thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


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


def bench_dataset(name: str, data: Sequences, epochs: int, batching: str, threads: int) -> dict:
    preset = "steam" if name == "steam-sized" else name
    config = resolve(
        {"dataset": "synthetic", "preset": preset, "quiet": True, "batching": batching, "threads": threads or None}
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
        scorer = ModelScorer(trainer.model)
        eval_seconds = {}
        for protocol in ("sampled", "full"):
            evaluator = Evaluator(trainer.split, "test", protocol)
            eval_seconds[protocol] = round(evaluator.run(scorer).seconds, 3)
        train = trainer.split.train
        flops = flops_per_epoch(train, config.maxlen, config.hidden, config.num_blocks, config.negatives)
        median = statistics.median(seconds)
        return {
            "dataset": name,
            "batching": batching,
            "epochs_timed": epochs,
            "seconds_per_epoch": round(median, 3),
            "seconds_all": [round(s, 3) for s in seconds],
            "examples_per_second": round(len(trainer.sampler.users) / median, 1),
            "positions_per_second": round(positions / median, 1),
            "gflops_per_second_real_positions": round(flops / median / 1e9, 2),
            "validation_seconds": round(valid_seconds, 3),
            "test_eval_seconds": eval_seconds,
            "peak_rss_mb_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "users": train.num_users,
            "items": train.num_items,
            "interactions": int(data.offsets[-1]),
        }


def markdown_table(report: dict, command: str = "") -> str:
    """A report as a dated Markdown section (heading, machine, command, one row per run) for ``docs/speed.md``."""
    machine, peak = report["machine"], report["matmul_peak_gflops"]
    lines = [
        f"### {time.strftime('%Y-%m-%d %H:%M')}: {machine['cpus']} threads, torch {machine['torch']}",
        "",
        f"{machine['platform']}; float32 matmul peak {peak} GFLOP/s." + (f" `{command}`" if command else ""),
        "",
        "| workload | batching | s/epoch (median) | real positions/s | GFLOP/s (real) | validation | "
        "test eval full / sampled | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        gflops, evals = r["gflops_per_second_real_positions"], r["test_eval_seconds"]
        lines.append(
            f"| {r['dataset']} ({r['users']:,} users, {r['items']:,} items, {r['interactions']:,} interactions) | "
            f"{r['batching']} | {r['seconds_per_epoch']:.2f} | {r['positions_per_second'] / 1000:.1f}k | "
            f"{gflops:.1f} of {peak} peak ({100 * gflops / peak:.1f}%) | {r['validation_seconds']:.2f} s | "
            f"{evals['full']:.2f} s / {evals['sampled']:.2f} s | {r['peak_rss_mb_so_far']:.0f} MiB |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="where ml-1m.txt / Video.txt (games) are found")
    parser.add_argument("--datasets", nargs="+", default=["games", "ml-1m", "steam-sized"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batching", nargs="+", default=["bucket"], choices=("random", "shuffle", "bucket"))
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="append the results as a dated table to this file (docs/speed.md)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {
        "machine": {
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "processor": platform.processor(),
        },
        "matmul_peak_gflops": round(matmul_peak_gflops(), 1),
        "runs": [],
    }
    print(f"float32 matmul peak: {report['matmul_peak_gflops']} GFLOP/s on {torch.get_num_threads()} threads")
    for name in args.datasets:
        if name == "steam-sized":
            data = steam_sized()
        else:
            try:
                data, _ = load_dataset(resolve({"dataset": name, "data_dir": args.data_dir}))
            except Exception as exc:  # noqa: BLE001 - a missing dataset skips its row, saying why
                print(f"{name}: skipped ({exc})")
                continue
        for batching in args.batching:
            row = bench_dataset(name, data, args.epochs, batching, args.threads)
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
