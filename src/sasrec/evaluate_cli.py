"""``sasrec evaluate``: a run's checkpoint or a baseline, on one split, under one or both protocols."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sasrec.argtypes import spelled
from sasrec.atomic import write_text
from sasrec.baselines import BASELINES
from sasrec.config import Config
from sasrec.data.dataset import split_leave_one_out
from sasrec.errors import ConfigError
from sasrec.evaluate import Evaluator, ModelScorer
from sasrec.metrics import DEFAULT_KS, METRICS

# The values options take when not given (argparse leaves them None: see refuse_unused).
DEFAULTS = {
    "checkpoint": "best",
    "device": "cpu",
    "eval_negatives": 100,
    "negative_sampling": "uniform",
    "seed": 42,
    "data_dir": "data",
}


def refuse_unused(args: argparse.Namespace) -> None:
    """Refuse an option that this evaluation would ignore (one line naming it and what it applies to), then
    fill the defaults of those not given. Raises ConfigError."""
    if (args.run is None) == (args.baseline is None):
        raise ConfigError("give either --run RUN_DIR or --baseline {pop,transition} with --dataset")
    sampled, full = args.protocol in ("sampled", "both"), args.protocol in ("full", "both")
    file_dataset = args.dataset is not None and Path(args.dataset).is_file()
    unused = [
        (
            args.run and args.dataset,
            "--dataset",
            "a --baseline: the run evaluates the dataset it was trained on "
            "(its fingerprint is checked); if that file has moved, pass --data-dir DIR, the folder that holds it now",
        ),
        (args.baseline and args.checkpoint, "--checkpoint", "a --run; a baseline has no checkpoint"),
        (args.baseline and args.device, "--device", "a --run; baselines run on the CPU"),
        (
            args.baseline and file_dataset and args.data_dir,
            "--data-dir",
            "a dataset name; --dataset FILE is read where it is",
        ),
        (
            not sampled and args.eval_negatives,
            spelled(args, "--eval-negatives"),
            "the sampled protocol (--protocol sampled or both)",
        ),
        (
            not sampled and args.negative_sampling,
            spelled(args, "--negative-sampling"),
            "the sampled protocol (--protocol sampled or both)",
        ),
        (
            not full and args.include_seen,
            spelled(args, "--include-seen"),
            "the full protocol (--protocol full or both)",
        ),
        (
            not sampled and not args.max_users and args.seed is not None,
            "--seed",
            "the sampled protocol's negatives and the --max-users subset",
        ),
        (not args.out and args.force, "--force", "--out FILE (RUN_DIR/eval_SPLIT.json is always replaced)"),
    ]
    for given, option, applies_to in unused:
        if given:
            raise ConfigError(f"{option} applies only to {applies_to}; drop it")
    for name, value in DEFAULTS.items():
        # a run's own data directory and number of negatives (its config) come with it when it is loaded
        if getattr(args, name) is None and not (name in ("data_dir", "eval_negatives") and args.run):
            setattr(args, name, value)


def evaluate_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Evaluate ``args.run`` or ``args.baseline`` as ``sasrec evaluate`` parsed them; returns one result per
    protocol (:meth:`EvalResult.to_json` form) and writes them to ``--out`` or the run's ``eval_SPLIT.json``."""
    refuse_unused(args)
    if args.run:
        from sasrec.runs import load_run, load_run_data

        run = load_run(args.run, args.checkpoint, args.device, data_dir=args.data_dir)
        if args.eval_negatives is None:  # the sampled protocol as the run was trained and tested with
            args.eval_negatives = run.config.eval_negatives
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
    if args.k is None:  # the default cut-offs that a small catalogue can tell apart
        args.k = [k for k in DEFAULT_KS if k <= split.num_items] or [split.num_items]
    if max(args.k) > split.num_items:  # every user would be a hit: a number that says nothing
        raise ConfigError(
            f"--k {max(args.k)}: a cut-off can be at most the catalogue's {split.num_items} items; lower it"
        )
    protocols = ("full", "sampled") if args.protocol == "both" else (args.protocol,)
    results = []
    for protocol in protocols:
        try:
            evaluator = Evaluator(
                split,
                args.split,
                protocol,
                ks=tuple(args.k),
                filter_seen=not args.include_seen,
                num_negatives=args.eval_negatives,
                negatives=args.negative_sampling,
                max_users=args.max_users,
                seed=args.seed,
            )
            result = evaluator.run(scorer)
        except ConfigError as exc:
            if protocol != "sampled":
                raise
            # The sampler cannot know which option set its count: name it as the user typed it.
            option = spelled(args, "--eval-negatives")
            raise ConfigError(f"{option} {args.eval_negatives}: {exc}") from None
        results.append({"model": name, **result.to_json()})
    out = args.out or (Path(args.run) / f"eval_{args.split}.json" if args.run else None)
    if out:
        write_text(out, json.dumps(results if len(results) > 1 else results[0], indent=2))
    return results


def format_result(r: dict[str, Any]) -> str:
    """One result (:meth:`EvalResult.to_json` form) as the table ``sasrec evaluate`` prints."""
    filtered = r["protocol"] == "full" and r.get("filter_seen")
    lines = [
        f"{r['protocol']} protocol, {r['split']} split, {r['users']} users"
        + (
            f", {r['num_negatives']} {r['negatives']} negatives"
            if r["protocol"] == "sampled"
            else f", seen items {'filtered' if filtered else 'kept'}"
        )
    ]
    seen = r["held_out_in_history"]
    lines.append(
        f"held-out item already in the input history: {seen} of {r['users']} users "
        f"({100 * r['held_out_in_history_share']:.1f}%)"
        + (
            "; each counts as a miss, as recommendations leave seen items out (--include-seen keeps them as candidates)"
            if seen and filtered
            else ""
        )
    )
    ks = r["ks"]
    lines.append("metric      " + "".join(f"{'@' + str(k):>9s}" for k in ks))
    for name in METRICS:
        lines.append(f"{name:10s}  " + "".join(f"{r['metrics'][f'{name}@{k}']:9.4f}" for k in ks))
    if r["users_with_nonfinite_scores"]:
        lines.append(
            f"warning: {r['users_with_nonfinite_scores']} users got non-finite (NaN or infinite) scores, "
            f"{r['nonfinite_target_scores']} of them for the held-out item, which then ranks last: "
            "the model has diverged; retrain it with a lower --lr"
        )
    return "\n".join(lines)
