"""Time to quality from a cold start: ``python benchmarks/time_to_quality.py --dataset games --minutes 9.5``.

Starts ``sasrec train`` as a fresh process (nothing cached, nothing resumed) with the dataset's preset and a
wall-time budget, and reports the wall time of the whole command (loading, training with validation-based
selection, the final test under both protocols) beside the test HR@10 / NDCG@10 of the best validation
epoch. Run it on an otherwise idle machine: the figure is only meaningful alone. Appends a row to
``results/time_to_quality.json`` and keeps the run's config, log and results beside it (``--keep``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sasrec.data import registry
from sasrec.errors import ConfigError

GOALS = {"ml-1m": (0.82, 30.0), "games": (0.74, 10.0)}  # (test HR@10, sampled protocol; minutes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(GOALS), required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--minutes", type=float, required=True, help="training budget (--max-minutes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=Path("results/time_to_quality.json"))
    parser.add_argument(
        "--keep",
        type=Path,
        default=Path("results/time_to_quality"),
        help="where the run's config.json, log.jsonl and results.json are kept",
    )
    parser.add_argument("extra", nargs="*", help="more `sasrec train` options, after --")
    args = parser.parse_args()
    try:
        path = registry.locate(args.dataset, args.data_dir)
    except ConfigError as exc:
        print(f"{exc}: nothing to measure")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [
            sys.executable,
            "-m",
            "sasrec",
            "train",
            "--quiet",
            "--dataset",
            str(path),
            "--preset",
            args.dataset,
            "--threads",
            str(args.threads),
            "--seed",
            str(args.seed),
            "--max-minutes",
            str(args.minutes),
            "--out",
            str(out),
            *args.extra,
        ]
        print("$", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
        results = json.loads((out / "results.json").read_text())
        epochs = len((out / "log.jsonl").read_text().splitlines())
        kept = args.keep / f"{args.dataset}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        kept.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "log.jsonl", "results.json"):
            shutil.copy(out / name, kept / name)
    goal_hr, goal_minutes = GOALS[args.dataset]
    sampled = results["sampled"]["metrics"]
    row = {
        "dataset": args.dataset,
        "command": " ".join(["python", "benchmarks/time_to_quality.py", *sys.argv[1:]]),
        "threads": args.threads,
        "seed": args.seed,
        "budget_minutes": args.minutes,
        "wall_minutes": round(wall / 60, 2),
        "epochs": epochs,
        "best_epoch": results["best_epoch"],
        "test_sampled_HR@10": round(sampled["HR@10"], 4),
        "test_sampled_NDCG@10": round(sampled["NDCG@10"], 4),
        "test_full_HR@10": round(results["full"]["metrics"]["HR@10"], 4),
        "goal": f"HR@10 >= {goal_hr} in < {goal_minutes} min",
        "run_files": str(kept),
        "met": sampled["HR@10"] >= goal_hr and wall / 60 < goal_minutes,
    }
    print(json.dumps(row, indent=2))
    rows = json.loads(args.json.read_text()) if args.json.exists() else []
    args.json.write_text(json.dumps([*rows, row], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
