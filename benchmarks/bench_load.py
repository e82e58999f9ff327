"""Time ``read_sasrec_file`` on MovieLens-1M (if present) and on a generated Steam-sized file.

Usage: ``python benchmarks/bench_load.py [--shared-data DIR] [--repeat N]``

The Steam-sized file is ``sasrec.bench.steam_sized()`` (334,730 users, 13,047 items, about 3.7M lines,
power-law lengths, Zipf popularity), written to a temporary directory and deleted afterwards.
Targets: < 1 s for ml-1m, < 5 s for Steam-sized.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from sasrec.bench import steam_sized
from sasrec.data.dataset import Sequences, read_sasrec_file, write_sasrec_file

DEFAULT_SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def best_time(path: Path, repeat: int) -> tuple[float, Sequences]:
    best, seqs = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        seqs = read_sasrec_file(path)
        best = min(best, time.perf_counter() - start)
    return best, seqs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared-data", type=Path, default=Path(os.environ.get("SASREC_SHARED_DATA") or DEFAULT_SHARED)
    )
    parser.add_argument("--repeat", type=int, default=3, help="report the best of N loads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    report: dict[str, float] = {}

    ml1m = args.shared_data / "ml-1m.txt"
    if ml1m.exists():
        seconds, seqs = best_time(ml1m, args.repeat)
        report["ml-1m_seconds"] = round(seconds, 3)
        print(f"ml-1m.txt: {seconds:.3f} s ({seqs.num_users:,} users, {len(seqs.items):,} lines; target < 1 s)")
    else:
        print(f"ml-1m.txt: skipped ({ml1m} not present)")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "steam_like.txt"
        seqs = steam_sized()
        start = time.perf_counter()
        write_sasrec_file(seqs, path)
        written = time.perf_counter() - start
        seconds, loaded = best_time(path, args.repeat)
        assert np.array_equal(loaded.items, seqs.items) and np.array_equal(loaded.offsets, seqs.offsets)
        report.update(steam_sized_seconds=round(seconds, 3), steam_sized_lines=len(loaded.items))
        print(
            f"Steam-sized: {seconds:.3f} s ({loaded.num_users:,} users, {loaded.num_items:,} items, "
            f"{len(loaded.items):,} lines, {path.stat().st_size / 1e6:.1f} MB; target < 5 s; "
            f"writing it took {written:.1f} s)"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
