"""Baseline floors and evaluation timings: ``python benchmarks/baselines.py --data-dir ../shared/data``.

Runs the most-popular and item-to-item transition baselines on MovieLens-1M and Amazon Games (the paper's
files) under both protocols, and times full-ranking and sampled evaluation of a SASRec model of each
preset's size (random weights: the timing does not depend on them). Writes ``results/baselines.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sasrec.baselines import BASELINES
from sasrec.config import resolve
from sasrec.data import registry
from sasrec.data.dataset import read_sasrec_file, split_leave_one_out
from sasrec.errors import ConfigError
from sasrec.evaluate import Evaluator, ModelScorer
from sasrec.runs import build_model

DATASETS = ("ml-1m", "games")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--json", type=Path, default=Path("results/baselines.json"))
    args = parser.parse_args()
    report: dict = {"threads": torch.get_num_threads(), "baselines": [], "timings": []}
    for name in DATASETS:
        try:
            path = registry.locate(name, args.data_dir)
        except ConfigError as exc:
            print(f"{name}: skipped, {exc}")
            continue
        split = split_leave_one_out(read_sasrec_file(path))
        evaluators = {p: Evaluator(split, "test", p) for p in ("full", "sampled")}
        for baseline, scorer_class in BASELINES.items():
            scorer = scorer_class(split.history("test"))
            for protocol, evaluator in evaluators.items():
                result = evaluator.run(scorer)
                row = {"dataset": name, "baseline": baseline, **result.to_json()}
                report["baselines"].append(row)
                print(
                    f"{name:6s} {baseline:10s} {protocol:8s} HR@10 {result.metrics['HR@10']:.4f} "
                    f"NDCG@10 {result.metrics['NDCG@10']:.4f}  ({result.users} users, {result.seconds:.2f}s)"
                )
        model = build_model(resolve({"dataset": "synthetic", "preset": name}), split.num_items).eval()
        for protocol, evaluator in evaluators.items():
            seconds = min(evaluator.run(ModelScorer(model)).seconds for _ in range(3))
            report["timings"].append(
                {"dataset": name, "protocol": protocol, "users": len(evaluator.users), "seconds": round(seconds, 3)}
            )
            print(f"{name:6s} SASRec evaluation, {protocol:8s}: {len(evaluator.users)} users in {seconds:.2f}s")
    args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
