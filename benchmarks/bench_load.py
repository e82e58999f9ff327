"""Time ``read_sasrec_file`` on MovieLens-1M (if present) and on a generated Steam-sized file.

Usage: ``python benchmarks/bench_load.py [--shared-data DIR] [--repeat N]``

The Steam-sized file has the shape of SASRec's Steam.txt (334,730 users, 13,047 items, about 3.7M lines)
with long-tailed (log-normal) user lengths and Zipf-like item popularity; it is written to a temporary
directory and deleted afterwards. Targets: < 1 s for ml-1m, < 5 s for Steam-sized.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from sasrec.data.dataset import Sequences, read_sasrec_file, write_sasrec_file

STEAM_USERS, STEAM_ITEMS, STEAM_INTERACTIONS = 334_730, 13_047, 3_700_000
DEFAULT_SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def steam_like(num_users: int, num_items: int, interactions: int, seed: int = 0) -> Sequences:
    """Random sequences with Steam's size: log-normal lengths (>= 1) rescaled to the target total."""
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(mean=1.5, sigma=1.1, size=num_users)
    lengths = np.maximum(1, np.round(raw * interactions / raw.sum())).astype(np.int64)
    offsets = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = (rng.zipf(1.2, size=int(offsets[-1])) - 1) % num_items + 1
    return Sequences(offsets, items.astype(np.int64), num_items)


def best_time(path: Path, repeat: int) -> tuple[float, Sequences]:
    best, seqs = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        seqs = read_sasrec_file(path)
        best = min(best, time.perf_counter() - start)
    return best, seqs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", type=Path,
                        default=Path(os.environ.get("SASREC_SHARED_DATA") or DEFAULT_SHARED))
    parser.add_argument("--repeat", type=int, default=3, help="report the best of N loads")
    args = parser.parse_args()

    ml1m = args.shared_data / "ml-1m.txt"
    if ml1m.exists():
        seconds, seqs = best_time(ml1m, args.repeat)
        print(f"ml-1m.txt: {seconds:.3f} s ({seqs.num_users:,} users, {len(seqs.items):,} lines; "
              "target < 1 s)")
    else:
        print(f"ml-1m.txt: skipped ({ml1m} not present)")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "steam_like.txt"
        seqs = steam_like(STEAM_USERS, STEAM_ITEMS, STEAM_INTERACTIONS)
        start = time.perf_counter()
        write_sasrec_file(seqs, path)
        written = time.perf_counter() - start
        seconds, loaded = best_time(path, args.repeat)
        assert np.array_equal(loaded.items, seqs.items) and np.array_equal(loaded.offsets, seqs.offsets)
        print(f"Steam-sized: {seconds:.3f} s ({loaded.num_users:,} users, {loaded.num_items:,} items, "
              f"{len(loaded.items):,} lines, {path.stat().st_size / 1e6:.1f} MB; target < 5 s; "
              f"writing it took {written:.1f} s)")


if __name__ == "__main__":
    main()
