"""The ``sasrec`` command: argument parsing only; every subcommand calls library functions.

User errors print one line and exit with status 2, never a traceback: an option's value is checked while
parsing (converters in :mod:`sasrec.argtypes`; argparse's own errors are one line here too, not a usage
block), output locations right after, before any work; deeper problems raise
:class:`sasrec.errors.SASRecError`.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from sasrec import argtypes, stops
from sasrec.argtypes import (
    add_former_spelling,
    check_output_dir,
    check_output_file,
    check_writable,
    config_value,
    spelled,
)
from sasrec.config import BATCHINGS, LOSS_NAMES, MAX_K, PRECISIONS, loss_help
from sasrec.data.registry import NAMES, PRESETS
from sasrec.errors import ConfigError, SASRecError


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the option (``--epochs: must be >= 1, got 0``),
    raised as ConfigError so that :func:`main` reports them like every other user error.

    Abbreviated options (``--ep`` for ``--epochs``) are refused: a saved command must keep its meaning when
    an option with the same prefix is added."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        namespace, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self._command_parser(namespace).refuse(unknown)
        return namespace

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message.removeprefix("argument "))

    def refuse(self, unknown: Sequence[str]) -> NoReturn:
        """One line for arguments this command does not take, with the options of *this* command that the
        first one may have meant: those it abbreviates, else those spelled nearly like it."""
        message = f"unrecognized arguments: {' '.join(unknown)}"
        given = unknown[0].split("=", 1)[0]
        if given.startswith("--"):
            meant = self.options_meant(given)
            if meant:
                message += f" (did you mean {' or '.join(meant)}?)"
        raise ConfigError(message)

    def options_meant(self, given: str) -> list[str]:
        """The options (as ``--help`` names them) that ``given`` abbreviates or nearly spells."""
        spellings = {}  # every accepted spelling -> the option's name in --help (a former spelling's current one)
        for action in self._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                spellings[option] = getattr(action, "current", max(action.option_strings, key=len))
        abbreviated = sorted({name for spelling, name in spellings.items() if spelling.startswith(given)})
        if abbreviated:
            return abbreviated[:3]
        # Nearly spelled: a typo keeps the first letter (--negs, --hiden), a different word rarely does (--port).
        close = difflib.get_close_matches(given, [s for s in spellings if s[:3] == given[:3]], n=1, cutoff=0.65)
        return [spellings[c] for c in close]

    def _command_parser(self, namespace: argparse.Namespace) -> Parser:
        """The parser of the subcommand ``namespace`` was parsed for (this one when it has none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(namespace, action.dest, None), self)
        return self


def _check_run_given_bare(argv: Sequence[str], only: str | None) -> None:
    """``sasrec evaluate runs/x`` (a run without ``--run``): say so, instead of argparse's "unrecognized
    arguments" or "--run is required"."""
    command, rest = (only, list(argv)) if only else (argv[0] if argv else None, list(argv[1:]))
    if command in ("evaluate", "recommend", "serve", "export") and "--run" not in rest:
        bare = [a for a in rest if not a.startswith("-") and (Path(a) / "config.json").is_file()]
        if bare:
            raise ConfigError(f"{bare[0]} is a run directory: give it as --run {bare[0]}")


def _bool_flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        type=argtypes.dataset,
        help=f"a dataset name ({', '.join(NAMES)}; its file is looked up in --data-dir) "
        "or the path of a SASRec-format file (default: synthetic, the embedded dataset)",
    )
    _add_data_dir(p, None)  # None: the --config file's, else Config's ("data")
    p.add_argument(
        "--preset",
        choices=PRESETS,
        help="the paper's hyperparameters for a dataset (default: the dataset's own, if it has a name), or a "
        "recipe: ml-1m-best (SASRec+ with patience 20), ml-1m-sasrec-plus (SASRec+: full-softmax ce, d 64, "
        "dropout 0.1), games-gsasrec (gbce, 256 negatives); for a Beauty file given with --dataset: "
        "beauty-s3rec-ce and beauty-bert4rec-ce (ce, d 64, dropout 0.6, maxlen 200), beauty-sampled-ce (softmax "
        "over 3000 shared negatives). The others train their dataset unless --dataset says otherwise",
    )
    p.add_argument("--config", type=argtypes.existing_file, help="a TOML file of Config values (see sasrec/config.py)")
    p.add_argument(
        "--maxlen", type=config_value("maxlen"), help="longest sequence read (default 50; the ml-1m preset: 200)"
    )
    p.add_argument("--hidden", type=config_value("hidden"), help="embedding size d (paper: 50)")
    p.add_argument("--num-blocks", type=config_value("num_blocks"), help="self-attention blocks (paper: 2)")
    p.add_argument("--num-heads", type=config_value("num_heads"), help="attention heads (paper: 1)")
    p.add_argument(
        "--dropout",
        type=config_value("dropout"),
        help="dropout rate (default 0.2; presets: 0.2 ml-1m, 0.5 games, beauty and steam)",
    )
    p.add_argument(
        "--ffn-factor",
        type=config_value("ffn_factor"),
        help="feed-forward width as a multiple of --hidden (paper: 1; eSASRec's recipe: 4)",
    )
    _bool_flag(p, "norm-first", "pre-LN blocks instead of the reference's arrangement")
    _bool_flag(
        p,
        "tied-output",
        "score items with the input item embedding, as the paper (default); "
        "--no-tied-output learns a separate output embedding (gSASRec's default)",
    )
    p.add_argument("--lr", type=config_value("lr"), help="Adam learning rate (paper: 0.001)")
    p.add_argument("--adam-beta1", type=config_value("adam_beta1"), help="Adam's beta1 (default 0.9, the reference's)")
    p.add_argument(
        "--adam-beta2",
        type=config_value("adam_beta2"),
        help="Adam's beta2 (default 0.98, the reference's; PyTorch's own is 0.999)",
    )
    p.add_argument("--batch-size", type=config_value("batch_size"), help="users per batch (paper: 128)")
    p.add_argument(
        "--epochs", type=config_value("epochs"), help="maximum epochs (default 200; with --resume, the total to reach)"
    )
    p.add_argument(
        "--l2-emb",
        type=config_value("l2_emb"),
        help="L2 penalty on the input item embedding (default 0; a separate output embedding is not penalised)",
    )
    p.add_argument("--loss", choices=LOSS_NAMES, help="training loss: bce (paper, default), ce, sampled-ce, gbce")
    negatives_default, options_help = loss_help()
    p.add_argument(
        "--negatives",
        type=config_value("negatives"),
        metavar="N",
        help=f"how many negatives the loss draws per position (default: {negatives_default})",
    )
    p.add_argument(
        "--loss-option",
        type=argtypes.key_value,
        action="append",
        metavar="KEY=VALUE",
        help=f"an option of the loss, repeatable. {options_help}",
    )
    p.add_argument(
        "--batching",
        choices=BATCHINGS,
        help="batch composition: random = the reference's sampler; bucket (default) groups users of "
        "similar length so batches carry little padding",
    )
    _bool_flag(
        p,
        "position-weighting",
        "weigh every position alike across batches (default: on unless "
        "--batching random, whose per-batch mean is the reference's)",
    )
    p.add_argument("--eval-every", type=config_value("eval_every"), help="validate every N epochs (default 1)")
    p.add_argument(
        "--patience",
        type=config_value("patience"),
        help="stop after N validations without improvement (default 20; 0: never)",
    )
    p.add_argument(
        "--max-minutes",
        type=config_value("max_minutes"),
        help="stop after the epoch that ends past this wall time (0: no limit)",
    )
    p.add_argument(
        "--metric",
        type=argtypes.metric,
        help="validation metric for model selection, NAME@K (default NDCG@10); "
        "validation computes it at K besides HR@10 and NDCG@10",
    )
    p.add_argument("--val-protocol", choices=("sampled", "full"), help="validation protocol (default sampled)")
    p.add_argument(
        "--eval-negatives",
        type=config_value("eval_negatives"),
        metavar="N",
        help="sampled protocol (validation and the final test): negatives per user (default 100)",
    )
    p.add_argument("--seed", type=config_value("seed"), help="random seed (default 42)")
    p.add_argument("--device", type=argtypes.device, help="cpu, cuda[:N] or auto (default cpu)")
    p.add_argument("--threads", type=config_value("threads"), help="torch CPU threads (default 0: PyTorch's choice)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="matrix products of training in float32 (fp32, default) or bfloat16 (bf16); auto: bf16 where it "
        "measured faster (CUDA GPUs that support it; fp32 on CPUs, see docs/speed.md). Evaluation always "
        "ranks in float32",
    )
    p.add_argument(
        "--out", metavar="DIR", type=argtypes.path_text, help="run directory (default runs/NAME-LOSS-seedS-TIME)"
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        type=argtypes.path_text,
        help="continue an interrupted run from its last saved epoch (epoch 0 if none was saved); it accepts "
        "--epochs, --patience, --max-minutes, --eval-every, --device, --threads, --quiet, and --data-dir "
        "when the dataset file has moved",
    )
    _bool_flag(p, "quiet", "no progress bars or per-epoch lines")


def run_train(args: argparse.Namespace) -> int:
    from sasrec.config import resolve
    from sasrec.train import train

    overrides = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "func", "config", "resume", "loss_option", "spelled")
    }
    if args.loss_option:
        overrides["loss_options"] = dict(args.loss_option)
    if args.resume:
        if args.config:
            raise SASRecError("--resume continues a run with its saved settings; drop --config")
        train(resume=args.resume, changes=overrides)
        return 0
    check_output_dir("--out", args.out or "runs")
    train(resolve(overrides, args.config))
    return 0


class _JsonFlag(argparse.Action):
    """``--json``: print JSON instead of tables. ``--json FILE``, the option's former meaning in ``evaluate``,
    still writes FILE, as ``--out FILE`` does now."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values is None:
            namespace.json = True
        else:
            try:
                namespace.out = argtypes.path_text(values)
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentError(self, str(exc)) from None
            namespace.spelled = {**getattr(namespace, "spelled", {}), "--out": "--json"}


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    # Options that only some evaluations use default to None, so that one given where it would be ignored is
    # refused (sasrec.evaluate_cli.refuse_unused) rather than silently dropped; the command fills the defaults.
    p.add_argument("--run", type=argtypes.path_text, help="a run directory written by `sasrec train`")
    p.add_argument("--checkpoint", choices=("best", "last"), help="which checkpoint of --run (default best)")
    p.add_argument(
        "--baseline",
        choices=("pop", "transition"),
        help="evaluate a non-neural baseline instead of a run (needs --dataset)",
    )
    p.add_argument(
        "--dataset",
        type=argtypes.dataset,
        help="dataset for --baseline (a dataset name or a SASRec-format file); a run evaluates its own",
    )
    _add_data_dir(p, None, "data for --baseline; for --run, the run's own: give it when the dataset file has moved")
    p.add_argument(
        "--protocol",
        choices=("sampled", "full", "both"),
        default="both",
        help="full ranking, sampled negatives, or both (default)",
    )
    p.add_argument(
        "--split",
        choices=("test", "valid"),
        default="test",
        help="which held-out item to rank: the last (test, default) or the one before it (valid)",
    )
    p.add_argument(
        "--k",
        type=argtypes.integer(1, MAX_K),
        nargs="+",
        metavar="K",
        help="the cut-offs K of the metrics, one or more, each at most the catalogue's size "
        "(default 1 5 10 20 50, those within the catalogue)",
    )
    negatives = p.add_argument(
        "--eval-negatives",
        type=argtypes.integer(1),
        metavar="N",
        help="sampled protocol: negatives per user (default 100)",
    )
    add_former_spelling(p, "--num-negatives", negatives)
    sampling = p.add_argument(
        "--negative-sampling",
        choices=("uniform", "popularity"),
        help="sampled protocol: how negatives are drawn (default uniform)",
    )
    add_former_spelling(p, "--negatives", sampling)
    seen = p.add_argument(
        "--include-seen",
        action="store_true",
        help="full protocol: keep the history's items as candidates (default: left out, as recommend does)",
    )
    add_former_spelling(p, "--no-filter-seen", seen)
    p.add_argument(
        "--max-users", type=argtypes.integer(1), help="evaluate a seeded random subset of users (paper: 10000)"
    )
    p.add_argument(
        "--seed", type=config_value("seed"), help="seed of the user subset and sampled negatives (default 42)"
    )
    p.add_argument("--device", type=argtypes.device, help="for --run: cpu, cuda[:N] or auto (default cpu)")
    p.add_argument(
        "--out",
        metavar="FILE",
        type=argtypes.path_text,
        help="write the results JSON to this file instead of RUN_DIR/eval_SPLIT.json (which is "
        "replaced on every evaluation); a baseline's are written only here",
    )
    p.add_argument(
        "--json",
        action=_JsonFlag,
        nargs="?",
        default=False,
        metavar="FILE",
        help="print the results as JSON instead of tables (--json FILE: former spelling of --out FILE)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")


def run_evaluate(args: argparse.Namespace) -> int:
    from sasrec.evaluate_cli import evaluate_command, format_result

    if args.out:  # a file the user named is never replaced silently; the run's own record is
        check_output_file(spelled(args, "--out"), args.out, force=args.force, make_parents=False)
    elif args.run and Path(args.run).is_dir():  # (not a run directory at all: evaluate_command says so)
        check_output_file("--out", Path(args.run) / f"eval_{args.split}.json", force=True, make_parents=False)
    results = evaluate_command(args)
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    else:
        print(f"{results[0]['model']}\n")  # what was evaluated: the checkpoint and its epoch, or the baseline
        print("\n\n".join(format_result(r) for r in results))  # a blank line between protocols only
    return 0


def add_preprocess_arguments(p: argparse.ArgumentParser) -> None:
    from sasrec.data import preprocess

    preprocess.add_arguments(p)


def run_preprocess(args: argparse.Namespace) -> int:
    from sasrec.data import preprocess

    if args.input is not None and not args.input.is_file():
        raise ConfigError(f"--input {args.input}: {'is a directory' if args.input.is_dir() else 'not found'}")
    check_output_dir(spelled(args, "--out"), args.out)
    if args.download:
        check_output_dir(spelled(args, "--raw-dir"), args.raw_dir)
    return preprocess.run(args)


def add_download_arguments(p: argparse.ArgumentParser) -> None:
    from sasrec.data import download

    download.add_arguments(p)


def run_download(args: argparse.Namespace) -> int:
    from sasrec.data import download, preprocess, registry

    check_output_dir(spelled(args, "--raw-dir"), args.raw_dir)
    if args.preprocess:
        check_output_dir(spelled(args, "--out"), args.out)
    raw = download.download(args.dataset, args.raw_dir, args.base_url, args.timeout, force=args.force)
    print(f"raw file: {raw}")
    if args.preprocess:
        dataset = registry.get(args.dataset)
        stats = preprocess.preprocess_file(
            raw, args.out, dataset.output_name, dataset.raw_format, force=args.force, dataset=args.dataset
        )
        print(preprocess.summary(stats, Path(args.out)))
    return 0


def _add_data_dir(p: argparse.ArgumentParser, default: str | None, shown: str = "data") -> None:
    """``--data-dir``: the directory where a dataset's file, and its id maps, are looked up by name.
    ``default`` None leaves the choice to the Config (train) or the run (``shown`` says which)."""
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        type=argtypes.not_a_file,
        default=default,
        help=f"where a dataset's file and its id maps are looked up (default: {shown})",
    )


def _add_run_arguments(p: argparse.ArgumentParser, data_dir: bool = True) -> None:
    p.add_argument("--run", required=True, type=argtypes.path_text, help="a run directory written by `sasrec train`")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="which checkpoint (default best)")
    if data_dir:
        _add_data_dir(p, None, "the run's own; give it when the files have moved")
        p.add_argument("--device", type=argtypes.device, default="cpu", help="cpu, cuda[:N] or auto (default cpu)")


def add_recommend_arguments(p: argparse.ArgumentParser) -> None:
    _add_run_arguments(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="an original user id of the run's dataset (history: the user's sequence)")
    who.add_argument(
        "--history",
        help="comma-separated original item ids, oldest first, e.g. '1193,661,914' "
        "(an id with a comma: --item or --history-file)",
    )
    who.add_argument(
        "--item",
        action="append",
        metavar="ID",
        help="one original item id, verbatim (commas allowed); repeat it, oldest first",
    )
    who.add_argument(
        "--history-file",
        metavar="FILE",
        type=argtypes.path_text,
        help="original item ids, one per line, oldest first ('-': standard input)",
    )
    p.add_argument(
        "--k",
        type=argtypes.integer(1),
        default=10,
        metavar="K",
        help="the cut-off K: how many items to recommend (default 10)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--include-seen", action="store_true", help="allow the history's items in the results (default: left out)"
    )
    p.add_argument(
        "--skip-unknown", action="store_true", help="ignore item ids not in the catalogue (default: name them and stop)"
    )


def run_recommend(args: argparse.Namespace) -> int:
    from sasrec.recommend import recommend_command

    return recommend_command(args)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    _add_run_arguments(p)
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument(
        "--host",
        type=argtypes.host,
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the service)",
    )
    p.add_argument("--max-batch", type=int, default=256, help="most histories per /recommend/batch (default 256)")
    p.add_argument(
        "--max-body-bytes",
        type=int,
        help="largest request body in bytes, 413 above it (default: a full batch of maxlen ids, at least 1 MiB)",
    )
    p.add_argument("--log-level", choices=argtypes.LOG_LEVELS, default="info", help="uvicorn log level (default info)")


def run_serve(args: argparse.Namespace) -> int:
    try:
        from sasrec.serve import serve_command
    except ImportError as exc:
        raise SASRecError(f"serving needs fastapi and uvicorn ({exc}): pip install 'sasrec[serve]'") from None
    if 0 <= args.port <= 65535:  # serve_command reports a port out of range, before loading the model too
        argtypes.check_listen(args.host, args.port)  # a busy port or foreign address: before loading, not after
    return serve_command(args)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    _add_run_arguments(p, data_dir=False)
    p.add_argument("--format", default="onnx", choices=("onnx",), help="export format (default onnx)")
    p.add_argument("--out", metavar="FILE", type=argtypes.path_text, help="output file (default RUN_DIR/model.onnx)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version, 14..20 (default 17)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists (default: refuse)")


def run_export(args: argparse.Namespace) -> int:
    from sasrec.export import export_command

    # export_command refuses a folder or an existing file first; this also finds a location that cannot be
    # written although its permission bits allow it (a read-only filesystem; any folder when run as root).
    if args.out or Path(args.run).is_dir():
        check_writable("--out", args.out or Path(args.run) / "model.onnx")
    return export_command(args)


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "preprocess": ("turn a raw dataset into the SASRec format", add_preprocess_arguments, run_preprocess),
    "download": ("fetch a public dataset and preprocess it", add_download_arguments, run_download),
    "train": ("train SASRec, validate, test the best epoch", add_train_arguments, run_train),
    "evaluate": ("evaluate a run or a baseline (sampled and full ranking)", add_evaluate_arguments, run_evaluate),
    "recommend": ("top-k recommendations for a user or a history", add_recommend_arguments, run_recommend),
    "serve": ("serve recommendations over HTTP (FastAPI)", add_serve_arguments, run_serve),
    "export": ("export the scoring network (ONNX)", add_export_arguments, run_export),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    if only is not None:
        help_text, add, run = COMMANDS[only]
        parser = Parser(description=help_text)
        add(parser)
        parser.set_defaults(func=run)
        return parser
    parser = Parser(prog="sasrec", description="SASRec: self-attentive sequential recommendation")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None, only: str | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); ``only`` runs one subcommand's parser alone.

    Returns the exit status: 0, 2 for a user error (one ``error: ...`` line on stderr), 130 if interrupted
    (Ctrl-C), 143 if stopped by SIGTERM; a stop prints one line (what was kept), never a traceback.
    """
    try:
        with stops.held() as received:  # a stop while torch imports is reported after it, not mid-import
            _check_run_given_bare(sys.argv[1:] if argv is None else argv, only)
            args = build_parser(only).parse_args(argv)
            if args.func not in (run_preprocess, run_download):
                import torch  # noqa: F401  (every other command loads a model)
        if received:
            print(stops.starting_message(received), file=sys.stderr)
            return 128 + received[0]
        if args.func is run_serve:  # uvicorn shuts down on SIGTERM and re-raises it: a clean stop, not a failure
            return args.func(args)
        with stops.sigterm_as_interrupt():  # SIGTERM ends every other command as Ctrl-C does, with one line
            return args.func(args)
    except SASRecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C: 130; SIGTERM (sasrec.stops.Terminated): 143
        if not stops.was_reported(exc):
            print(f"\n{stops.reason(exc)}", file=sys.stderr)
        return getattr(exc, "exit_status", 130)


if __name__ == "__main__":
    sys.exit(main())
