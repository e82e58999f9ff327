"""``sasrec evaluate``: a run's checkpoint or a baseline, on one split, under one or both protocols."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sasrec.atomic import write_text
from sasrec.baselines import BASELINES
from sasrec.config import Config
from sasrec.data.dataset import split_leave_one_out
from sasrec.errors import ConfigError
from sasrec.evaluate import Evaluator, ModelScorer


def evaluate_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    if (args.run is None) == (args.baseline is None):
        raise ConfigError("give either --run RUN_DIR or --baseline {pop,transition} with --dataset")
    if args.run:
        from sasrec.runs import load_run, load_run_data

        run = load_run(args.run, args.checkpoint, args.device)
        split = split_leave_one_out(load_run_data(run))
        scorer = ModelScorer(run.model, args.device)
        name = f"{args.checkpoint} checkpoint of {args.run} (epoch {run.meta.get('epoch')})"
    else:
        from sasrec.runs import load_dataset

        if not args.dataset:
            raise ConfigError("--baseline needs --dataset (a preset name or a SASRec-format file)")
        data, _ = load_dataset(Config(dataset=args.dataset, data_dir=args.data_dir))
        split = split_leave_one_out(data)
        scorer = BASELINES[args.baseline](split.train if args.split == "valid" else split.history("test"))
        name = f"baseline {args.baseline} on {args.dataset}"
    protocols = ("full", "sampled") if args.protocol == "both" else (args.protocol,)
    results = []
    for protocol in protocols:
        evaluator = Evaluator(split, args.split, protocol, ks=tuple(args.k), filter_seen=not args.no_filter_seen,
                              num_negatives=args.num_negatives, negatives=args.negatives,
                              max_users=args.max_users, seed=args.seed)
        results.append({"model": name, **evaluator.run(scorer).to_json()})
    out = args.json or (Path(args.run) / f"eval_{args.split}.json" if args.run else None)
    if out:
        write_text(out, json.dumps(results if len(results) > 1 else results[0], indent=2))
    return results
