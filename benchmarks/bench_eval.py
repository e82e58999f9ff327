"""Full-ranking test evaluation time: ``python benchmarks/bench_eval.py --data-dir DIR [--threads 2]``.

Times ``Evaluator.run`` over every Amazon Games test user (30,901 users against 23,716 items) for an untrained,
seeded model with the paper's Games settings, ``--repeats`` times in this process, and prints one JSON line
(seconds per run and the NDCG@10 reached, which must not change between code versions). To compare two
versions, run it alternately from each checkout (``PYTHONPATH=CHECKOUT/src``) on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import sasrec
from sasrec.bench import cpu_model
from sasrec.data.dataset import read_sasrec_file, split_leave_one_out
from sasrec.evaluate import Evaluator, ModelScorer
from sasrec.model import SASRec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also append the JSON line to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = split_leave_one_out(read_sasrec_file(f"{args.data_dir}/Video.txt"))
    torch.manual_seed(0)
    model = SASRec(split.num_items, maxlen=50, hidden=50, dropout=0.5).eval()
    evaluator, scorer = Evaluator(split, "test", "full"), ModelScorer(model)
    seconds, ndcg = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        ndcg = evaluator.run(scorer, progress=False).metrics["NDCG@10"]
        seconds.append(round(time.perf_counter() - start, 3))
    line = json.dumps(
        {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "cpu_model": cpu_model(),
            "threads": args.threads,
            "sasrec": sasrec.__file__,
            "seconds": seconds,
            "NDCG@10": ndcg,
        }
    )
    print(line)
    if args.json:
        with open(args.json, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
