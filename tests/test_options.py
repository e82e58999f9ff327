"""Every option of every subcommand: a bad value is one ``error:`` line naming the option, exit status 2, no
traceback and nothing written; output locations are checked before any work; progress bars only on a terminal.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FIXTURES, make_run

import sasrec
from sasrec import cli
from sasrec.cli import main
from sasrec.config import BATCHINGS, LOSS_NAMES, MAX_DROPOUT, Config, resolve
from sasrec.data.dataset import write_sasrec_file
from sasrec.data.synthetic import make_synthetic
from sasrec.errors import ConfigError
from sasrec.kernels import CPUKernels

# Placeholders: RUN a run directory, DATA its dataset file, DIR an existing directory, FILE an existing file,
# MISSING a path that does not exist, RO a directory nobody may write in, OUT a fresh path for this case only.
PREPROCESS = (
    "preprocess --format csv --input {FIX}/events.tsv --user-col session --item-col product --time-col ts "
    "--delimiter tab --min-count 1 --out {OUT}"
).split()
DOWNLOAD = "download ml-1m --raw-dir {OUT}/raw --out {OUT}/data --preprocess --base-url http://127.0.0.1:9".split()
PREPROCESS_DOWNLOAD = "preprocess --dataset ml-1m --download --out {OUT}".split()
# The run's dataset has 20 items: 5 sampled negatives leave room for every user's history.
TRAIN = "train --dataset {DATA} --out {OUT}/run --epochs 1 --eval-negatives 5 --quiet".split()
EVALUATE = "evaluate --run {RUN} --protocol sampled --eval-negatives 5 --out {OUT}.json".split()
RECOMMEND = ["recommend", "--run", "{RUN}", "--history", "m101"]
SERVE = ["serve", "--run", "{RUN}"]
EXPORT = ["export", "--run", "{RUN}", "--out", "{OUT}/model.onnx"]

# (base command, bad arguments appended to it (argparse keeps the last value), text the error line must hold:
# the option's name unless a message from deeper down names the value instead). A former spelling of an
# option (FORMER_SPELLINGS) is named as typed.
CASES: list[tuple[list[str], list[str], str]] = [
    (PREPROCESS, ["--dataset", "nope"], "--dataset"),
    (PREPROCESS, ["--input", "{MISSING}"], "--input"),
    (PREPROCESS, ["--input", "{DIR}"], "--input"),
    (PREPROCESS, ["--out", "{FILE}"], "--out"),
    (PREPROCESS, ["--out", "{RO}/out"], "--out"),
    (PREPROCESS, ["--output", "{FILE}"], "--output"),
    (PREPROCESS, ["--name", "a/b"], "--name"),
    (PREPROCESS, ["--format", "nope"], "--format"),
    (PREPROCESS, ["--user-col", "nope"], "user column 'nope'"),  # needs the file's header: the reader says
    (PREPROCESS, ["--item-col", "nope"], "item column 'nope'"),
    (PREPROCESS, ["--time-col", "nope"], "time column 'nope'"),
    (PREPROCESS, ["--delimiter", "::"], "--delimiter"),
    (PREPROCESS, ["--min-count", "-1"], "--min-count"),
    (PREPROCESS, ["--min-count", "x"], "--min-count"),
    (PREPROCESS, ["--input", ""], "--input"),  # Path("") is the current directory
    (PREPROCESS, ["--out", ""], "--out"),
    (PREPROCESS, ["--item-col", "session"], "--user-col and --item-col both name column 'session'"),
    (PREPROCESS, ["--time-col", "product"], "--item-col and --time-col both name column 'product'"),
    (PREPROCESS_DOWNLOAD, ["--raw-dir", ""], "--raw-dir"),
    (PREPROCESS_DOWNLOAD, ["--raw-dir", "{FILE}"], "--raw-dir"),
    (PREPROCESS_DOWNLOAD, ["--raw-dir", "{RO}/raw"], "--raw-dir"),
    (DOWNLOAD[:1], ["nope"], "NAME"),
    (DOWNLOAD, ["--raw-dir", "{FILE}"], "--raw-dir"),
    (DOWNLOAD, ["--raw-dir", "{RO}/raw"], "--raw-dir"),
    (DOWNLOAD, ["--dest", "{FILE}"], "--dest"),
    (DOWNLOAD, ["--out", "{FILE}"], "--out"),
    (DOWNLOAD, ["--output", "{FILE}"], "--output"),
    (DOWNLOAD, ["--base-url", "mirror.example.org/files"], "--base-url"),
    (DOWNLOAD, ["--timeout", "0"], "--timeout"),
    (DOWNLOAD, ["--timeout", "nan"], "--timeout"),
    (DOWNLOAD, ["--raw-dir", ""], "--raw-dir"),
    (DOWNLOAD, ["--out", ""], "--out"),
    (TRAIN, ["--dataset", "{MISSING}"], "--dataset"),
    (TRAIN, ["--dataset", "{DIR}"], "--dataset"),
    (TRAIN, ["--data-dir", "{FILE}"], "--data-dir"),
    (TRAIN, ["--preset", "nope"], "--preset"),
    (TRAIN, ["--config", "{MISSING}"], "--config"),
    (TRAIN, ["--maxlen", "0"], "--maxlen"),
    (TRAIN, ["--maxlen", "99999999999999999999"], "--maxlen"),  # beyond int32
    (TRAIN, ["--maxlen", "2000000000"], "--maxlen"),  # the position embeddings alone: 1490 GiB
    (TRAIN, ["--hidden", "65536"], "--hidden"),  # the blocks' weights: 768 GiB
    (TRAIN, ["--num-blocks", "100000"], "--num-blocks"),
    (TRAIN, ["--dropout", "0.99999"], "--dropout"),  # above 65535/65536, although it rounds to it
    (TRAIN, ["--batch-size", "99999999999999999999"], "--batch-size"),
    (TRAIN, ["--negatives", "99999999999999999999"], "--negatives"),
    (TRAIN, ["--negatives", "100000000"], "--negatives"),  # drawn per position: their embeddings need TiBs
    (TRAIN, ["--loss", "ce", "--negatives", "5"], "--negatives 5 does nothing with --loss ce"),
    (TRAIN, ["--loss", "sampled-ce", "--loss-option", "in_batch=true", "--negatives", "5"], "--negatives 5 does"),
    (TRAIN, ["--loss", "bce", "--loss-option", "t=0.5"], "unknown option(s) t"),  # gbce's option
    (TRAIN, ["--eval-negatives", "99999999999999999999"], "--eval-negatives"),
    (TRAIN, ["--epochs", "99999999999999999999"], "--epochs"),
    (TRAIN, ["--threads", "100000"], "--threads"),
    (TRAIN, ["--precision", "fp8"], "--precision"),
    (TRAIN, ["--out", ""], "--out"),
    (TRAIN, ["--data-dir", ""], "--data-dir"),
    (TRAIN, ["--dataset", ""], "--dataset"),  # Path("") is the current directory
    (TRAIN, ["--dataset", " "], "--dataset"),
    (["train"], ["--resume", ""], "--resume"),
    (TRAIN, ["--hidden", "0"], "--hidden"),
    (TRAIN, ["--num-blocks", "-1"], "--num-blocks"),
    (TRAIN, ["--num-heads", "0"], "--num-heads"),
    (TRAIN, ["--num-heads", "3"], "num_heads (3)"),  # hidden 50 is not divisible by 3: checked on the config
    (TRAIN, ["--ffn-factor", "0"], "--ffn-factor"),
    (TRAIN, ["--ffn-factor", "257"], "--ffn-factor"),
    (TRAIN, ["--dropout", "1"], "--dropout"),
    (TRAIN, ["--dropout", "0.99999999"], "--dropout"),  # rounds to a keep threshold of 65536/65536
    (TRAIN, ["--dropout", "-0.1"], "--dropout"),
    (TRAIN, ["--dropout", "nan"], "--dropout"),
    (TRAIN, ["--lr", "0"], "--lr"),
    (TRAIN, ["--lr", "inf"], "--lr"),
    (TRAIN, ["--adam-beta1", "1"], "--adam-beta1"),
    (TRAIN, ["--adam-beta2", "-0.1"], "--adam-beta2"),
    (TRAIN, ["--batch-size", "0"], "--batch-size"),
    (TRAIN, ["--epochs", "0"], "--epochs"),
    (TRAIN, ["--epochs", "1.5"], "--epochs"),
    (TRAIN, ["--l2-emb", "-1"], "--l2-emb"),
    (TRAIN, ["--loss", "nope"], "--loss"),
    (TRAIN, ["--negatives", "-1"], "--negatives"),
    (TRAIN, ["--negatives", "0"], "negatives >= 1"),  # bce needs one; ce does not: the loss says
    (TRAIN, ["--loss-option", "t"], "--loss-option"),
    (TRAIN, ["--loss-option", "t=high"], "--loss-option"),
    (TRAIN, ["--loss-option", "tee=1"], "unknown option(s) tee"),  # which keys: the loss says
    (TRAIN, ["--batching", "nope"], "--batching"),
    (TRAIN, ["--eval-every", "0"], "--eval-every"),
    (TRAIN, ["--patience", "-1"], "--patience"),
    (TRAIN, ["--max-minutes", "-1"], "--max-minutes"),
    (TRAIN, ["--metric", "NDCG"], "--metric"),
    (TRAIN, ["--metric", "AUC@10"], "--metric"),
    (TRAIN, ["--val-protocol", "nope"], "--val-protocol"),
    (TRAIN, ["--eval-negatives", "-1"], "--eval-negatives"),
    (TRAIN, ["--seed", "-1"], "--seed"),
    (TRAIN, ["--device", "gpu"], "--device"),
    (TRAIN, ["--threads", "-1"], "--threads"),
    (TRAIN, ["--out", "{FILE}"], "--out"),
    (TRAIN, ["--out", "{RO}/run"], "--out"),
    (["train"], ["--resume", "{MISSING}"], "missing is not a run directory"),
    (EVALUATE, ["--run", "{MISSING}"], "missing is not a run directory"),
    (EVALUATE, ["--run", "{FILE}"], "file.txt is not a run directory"),
    (EVALUATE, ["--checkpoint", "nope"], "--checkpoint"),
    (EVALUATE, ["--baseline", "nope"], "--baseline"),
    (EVALUATE, ["--dataset", "{MISSING}"], "--dataset"),
    (EVALUATE, ["--data-dir", "{FILE}"], "--data-dir"),
    (EVALUATE, ["--protocol", "nope"], "--protocol"),
    (EVALUATE, ["--split", "nope"], "--split"),
    (EVALUATE, ["--k", "0"], "--k"),
    (EVALUATE, ["--k", "10", "-5"], "--k"),
    (EVALUATE, ["--negative-sampling", "nope"], "--negative-sampling"),
    (EVALUATE, ["--negatives", "nope"], "--negatives"),
    (EVALUATE, ["--eval-negatives", "-1"], "--eval-negatives"),
    (EVALUATE, ["--eval-negatives", "0"], "--eval-negatives"),
    (EVALUATE, ["--num-negatives", "0"], "--num-negatives"),
    (EVALUATE, ["--max-users", "0"], "--max-users"),
    (EVALUATE, ["--seed", "-1"], "--seed"),
    (EVALUATE, ["--device", "gpu"], "--device"),
    (EVALUATE, ["--out", "{DIR}"], "--out"),
    (EVALUATE, ["--out", "{FILE}"], "--out"),  # exists: needs --force
    (EVALUATE, ["--out", "{MISSING}/eval.json"], "--out"),
    (EVALUATE, ["--out", "{RO}/eval.json"], "--out"),
    (EVALUATE, ["--json", "{FILE}"], "--json"),  # --json FILE, the former spelling of --out FILE
    (EVALUATE, ["--run", ""], "--run"),
    (EVALUATE, ["--out", ""], "--out"),
    (EVALUATE, ["--json", ""], "--json"),
    (EVALUATE, ["--data-dir", ""], "--data-dir"),
    (["evaluate", "--baseline", "pop"], ["--dataset", ""], "--dataset"),
    (RECOMMEND, ["--run", "{MISSING}"], "missing is not a run directory"),
    (RECOMMEND, ["--checkpoint", "nope"], "--checkpoint"),
    (RECOMMEND, ["--data-dir", "{FILE}"], "--data-dir"),
    (RECOMMEND, ["--device", "gpu"], "--device"),
    (RECOMMEND[:3], ["--user", "zoe"], "unknown user 'zoe'"),  # known only to the run's id map
    (RECOMMEND, ["--history", " , "], "--history"),
    (RECOMMEND[:3], ["--item", "bogus"], "'bogus'"),  # known only to the run's id map
    (RECOMMEND[:3], ["--history-file", "{MISSING}"], "--history-file"),
    (RECOMMEND, ["--k", "0"], "--k"),
    (RECOMMEND, ["--run", ""], "--run"),
    (RECOMMEND[:3], ["--history-file", ""], "--history-file"),
    (SERVE, ["--run", "{MISSING}"], "missing is not a run directory"),
    (SERVE, ["--checkpoint", "nope"], "--checkpoint"),
    (SERVE, ["--data-dir", "{FILE}"], "--data-dir"),
    (SERVE, ["--device", "gpu"], "--device"),
    (SERVE, ["--port", "-1"], "--port"),
    (SERVE, ["--port", "99999"], "--port"),
    (SERVE, ["--host", "192.0.2.1"], "--host"),  # TEST-NET-1: no machine's own address
    (SERVE, ["--max-batch", "0"], "--max-batch"),
    (SERVE, ["--max-body-bytes", "0"], "--max-body-bytes"),
    (SERVE, ["--log-level", "loud"], "--log-level"),
    (SERVE, ["--host", ""], "--host"),  # uvicorn would listen on every interface
    (EXPORT, ["--run", "{MISSING}"], "missing is not a run directory"),
    (EXPORT, ["--checkpoint", "nope"], "--checkpoint"),
    (EXPORT, ["--format", "tflite"], "--format"),
    (EXPORT, ["--out", "{DIR}"], "is a folder"),
    (EXPORT, ["--out", "{FILE}"], "pass --force"),
    (EXPORT, ["--out", "{RO}/model.onnx"], "--out"),
    (EXPORT, ["--opset", "5"], "--opset"),
    (EXPORT, ["--opset", "99"], "--opset"),
    (EXPORT, ["--out", ""], "--out"),
]


# Options renamed for one vocabulary across subcommands: (subcommand, former spelling, current spelling, value).
# The former spellings still work, hidden from --help, so that scripts written before keep running.
FORMER_SPELLINGS: list[tuple[str, str, str, str | None]] = [
    ("preprocess", "--output", "--out", "d"),
    ("download", "--output", "--out", "d"),
    ("download", "--dest", "--raw-dir", "d/raw"),
    ("evaluate", "--json", "--out", "e.json"),
    ("evaluate", "--num-negatives", "--eval-negatives", "50"),
    ("evaluate", "--negatives", "--negative-sampling", "popularity"),
    ("evaluate", "--no-filter-seen", "--include-seen", None),
]


@pytest.mark.parametrize("command, former, current, value", FORMER_SPELLINGS)
def test_former_spellings_mean_the_current_options(command, former, current, value) -> None:
    parser = cli.build_parser(only=command)
    base = ["ml-1m"] if command == "download" else []
    given = [value] if value is not None else []
    old, new = (vars(parser.parse_args([*base, option, *given])) for option in (former, current))
    assert old.pop("spelled") == {current: former}  # error messages name the option as it was typed
    assert old == new and new != vars(parser.parse_args(base))
    if former != "--json":  # --json is also the current flag that prints JSON; the others are hidden
        assert former not in parser.format_help()


def test_evaluate_json_prints_json(places, capsys) -> None:
    import json

    assert main(["evaluate", "--run", places["RUN"], "--protocol", "sampled", "--eval-negatives", "5", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["protocol"] == "sampled" and printed["num_negatives"] == 5
    assert printed == json.loads((Path(places["RUN"]) / "eval_test.json").read_text())


def _writable(directory: Path) -> bool:
    try:
        tempfile.TemporaryFile(dir=directory).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("options")
    run = make_run(root)
    (root / "file.txt").write_text("not a directory\n")
    read_only = root / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if _writable(read_only):  # root ignores permissions; sysfs refuses new files even to root
        read_only = Path("/sys")
    return {
        "RUN": str(run),
        "DATA": str(root / "data" / "tiny.txt"),
        "DIR": str(root / "data"),
        "FILE": str(root / "file.txt"),
        "MISSING": str(root / "missing"),
        "FIX": str(FIXTURES),
        "RO": str(read_only) if read_only.is_dir() and not _writable(read_only) else "",
    }


def tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``roots`` with its size and modification time."""
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for r in roots if r.exists() for p in [r, *r.rglob("*")]}


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A case that got past the checks must not start a server that never returns."""
    import uvicorn

    def refuse(*args, **kwargs):
        raise AssertionError("uvicorn.run was reached")

    monkeypatch.setattr(uvicorn, "run", refuse)


@pytest.mark.parametrize("base, bad, names", CASES, ids=[" ".join(c[0][:1] + c[1]) for c in CASES])
def test_invalid_value_is_one_line_and_writes_nothing(
    base, bad, names, places, tmp_path, capsys, no_server, monkeypatch
) -> None:
    if any("{RO}" in a for a in bad) and not places["RO"]:
        pytest.skip("no directory here refuses new files")
    monkeypatch.chdir(tmp_path)  # default output locations (runs/, data/) land here, and must not appear
    values = {**places, "OUT": str(tmp_path / "out")}
    argv = [a.format(**values) for a in base + bad]
    before = tree(Path(places["DIR"]).parent, tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert names in lines[0]
    assert "Traceback" not in err and out == ""
    assert tree(Path(places["DIR"]).parent, tmp_path) == before


EMPTY = [(base, bad) for base, bad, _ in CASES if not bad[-1].strip()]


@pytest.mark.parametrize("base, bad", EMPTY, ids=[" ".join(c[0][:1] + c[1]) for c in EMPTY])
def test_an_empty_value_is_refused_alike_by_every_option(base, bad, places, tmp_path, capsys, no_server) -> None:
    """``''`` (an unset shell variable) is named as what it is, whatever the option: ``must be ..., got ''``."""
    argv = [a.format(**places, OUT=str(tmp_path / "out")) for a in base + bad]
    assert main(argv) == 2
    assert re.fullmatch(rf"error: {bad[-2]}: must be [^\n]+, got {bad[-1]!r}\n", capsys.readouterr().err)


def _options_taking_values(parser: argparse.ArgumentParser) -> set[str]:
    return {
        (a.option_strings or [a.metavar or a.dest])[-1]
        for a in parser._actions
        if a.nargs != 0 and not isinstance(a, argparse._HelpAction)
    }


def test_the_table_covers_every_option_of_every_subcommand() -> None:
    """Every option that takes a value has a bad-value case, its former spelling too."""
    for name in cli.COMMANDS:
        covered = {a for base, bad, _ in CASES if base[0] == name for a in bad if a.startswith("--")}
        covered |= {"NAME"} if name == "download" else set()
        missing = _options_taking_values(cli.build_parser(only=name)) - covered
        assert not missing, f"sasrec {name}: no invalid-value case for {sorted(missing)}"


def test_exact_message_for_epochs(capsys) -> None:
    assert main(["train", "--epochs", "0"]) == 2
    assert capsys.readouterr().err == "error: --epochs: must be from 1 to 2147483647, got 0\n"


@pytest.mark.parametrize(
    "bad, line",
    [
        (["--threads", "100000"], "--threads: must be from 0 to 1024 (0: PyTorch's choice), got 100000"),
        (["--num-blocks", "100000"], "--num-blocks: must be from 0 to 256, got 100000"),
        (["--maxlen", "1" + "0" * 19], "--maxlen: must be from 1 to 2147483647, got 10000000000000000000"),
        (
            ["--dropout", "0.99999"],
            "--dropout: must be from 0 to 0.9999847412109375 (65535/65536: dropout masks work in steps of 1/65536), "
            "got 0.99999",
        ),
    ],
)
def test_a_bound_is_stated_with_the_value(bad, line, capsys) -> None:
    assert main(["train", *bad]) == 2
    assert capsys.readouterr().err == f"error: {line}\n"


def test_every_count_has_an_upper_bound_shared_by_the_command_line_and_the_api() -> None:
    """The limits of sasrec.config.LIMITS hold for options and for Recommender's parameters alike: the
    largest value is accepted, the next one refused by both."""
    from sasrec import Recommender
    from sasrec.config import LIMITS, field_type

    for name, limit in LIMITS.items():
        integer = field_type(name) is int
        assert limit.maximum is not None or not integer, f"{name}: no upper bound"
        if limit.maximum is None:
            continue
        largest = limit.maximum if not limit.below else math.nextafter(limit.maximum, 0)
        beyond = limit.maximum + 1 if integer else math.nextafter(limit.maximum, math.inf)
        option = "--" + name.replace("_", "-")
        parse = cli.build_parser(only="train").parse_args
        assert getattr(parse([option, repr(largest)]), name) == largest
        with pytest.raises(ConfigError, match=option):
            parse([option, repr(beyond)])
        with pytest.raises(ConfigError, match=f"{name} must be {re.escape(limit.requirement)}, got {beyond!r}"):
            Recommender(**{name: beyond})


def test_the_dropout_bound_is_the_stated_one() -> None:
    resolve({"dropout": MAX_DROPOUT})
    for above in (math.nextafter(MAX_DROPOUT, 1), 0.99999, 0.999985):
        with pytest.raises(ConfigError, match=re.escape(repr(MAX_DROPOUT))):
            resolve({"dropout": above})


def test_console_entry_point_prints_one_line() -> None:
    src = Path(sasrec.__file__).parents[1]  # the code under test, wherever it was imported from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "sasrec", "train", "--epochs", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == "error: --epochs: must be from 1 to 2147483647, got 0\n"


def test_choices_match_the_library() -> None:
    from sasrec.losses import LOSSES
    from sasrec.sampling import BATCHING

    assert sorted(LOSS_NAMES) == sorted(LOSSES) and BATCHINGS == BATCHING


# ----------------------------------------------------------------------------------- config values


def test_largest_accepted_dropout_works_and_the_next_is_refused() -> None:
    keep, scale = CPUKernels(np.random.default_rng(0)).mask(torch.Size([4, 1 << 14]), MAX_DROPOUT)
    assert scale == 65536.0 and 0 < int(keep.sum()) < keep.numel()
    resolve({"dropout": MAX_DROPOUT})
    with pytest.raises(ConfigError, match="dropout"):
        resolve({"dropout": (65535.5 + 1e-6) / 65536})  # rounds to 65536: nothing kept, 1/0 scale


@pytest.mark.parametrize(
    "text, message",
    [
        ("maxlen = '50'", "maxlen must be an integer, got '50'"),
        ("lr = true", "lr must be a number, got True"),
        ("epochs = 0", "epochs must be from 1 to 2147483647"),
        ("threads = 2000", "threads must be from 0 to 1024"),
        ("loss = 'ce'\nnegatives = 3", "--negatives 3 does nothing with --loss ce"),
        ("seed = -1", "seed must be from 0 to 18446744073709551615"),
        ("negatives = 1.5", "negatives must be an integer"),
        ("batching = 'sorted'", "batching must be one of random, shuffle, bucket"),
        ("loss = 'bpr'", "unknown loss 'bpr'"),
        ("loss_options = { tee = 1.0 }", "unknown option(s) tee"),
        ("ffn_factor = 0", "ffn_factor must be from 1 to 256"),
        ("dataset = ''", "dataset must not be empty"),  # was read as the current directory
        ("data_dir = ' '", "data_dir must not be empty"),
        ("out = ''", "out must not be empty"),
        ("metric = ''", "metric must not be empty"),
    ],
)
def test_config_file_values_are_checked_before_anything_runs(text, message, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as raised:
        resolve({}, str(path))
    assert str(raised.value).startswith(f"config file {path}: ")  # where to look
    assert message in str(raised.value)


def test_config_defaults_are_valid() -> None:
    Config().validate()
    for preset in ("ml-1m", "games", "beauty", "steam", "synthetic"):
        resolve({"preset": preset})


# ----------------------------------------------------------------------------------- output locations


def test_evaluate_json_refuses_an_existing_file_unless_forced(places, tmp_path, capsys) -> None:
    target = tmp_path / "eval.json"
    target.write_text("keep me\n")
    args = ["evaluate", "--run", places["RUN"], "--protocol", "sampled", "--eval-negatives", "5", "--out", str(target)]
    assert main(args) == 2
    assert "pass --force" in capsys.readouterr().err and target.read_text() == "keep me\n"
    assert main([*args, "--force"]) == 0
    assert '"protocol": "sampled"' in target.read_text()


def test_serve_refuses_a_busy_port_before_loading_the_model(places, capsys, no_server) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--run", places["RUN"], "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --host 127.0.0.1 --port {port}: cannot listen") and err.count("\n") == 1


# ----------------------------------------------------------------------------------- progress output


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("progress") / "small.txt"
    write_sasrec_file(make_synthetic(num_users=40, num_items=80, seed=3), path)
    return path


def _train(small_file: Path, out: Path, *flags: str) -> int:
    small = "--epochs 1 --hidden 8 --maxlen 10 --num-blocks 1 --batch-size 16 --eval-negatives 20".split()
    return main(["train", "--dataset", str(small_file), "--out", str(out), *small, *flags])


def test_no_progress_bar_without_a_terminal(small_file: Path, tmp_path: Path, capsys) -> None:
    assert _train(small_file, tmp_path / "run") == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and "batch" not in err and "\r" not in out
    assert "test metrics" in out


def test_progress_bar_on_a_terminal_unless_quiet(small_file: Path, tmp_path: Path, monkeypatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert _train(small_file, tmp_path / "run1") == 0
    assert "\r" in terminal.getvalue() and "batch" in terminal.getvalue()
    terminal.seek(0)
    terminal.truncate()
    assert _train(small_file, tmp_path / "run2", "--quiet") == 0
    assert terminal.getvalue() == ""


def test_preprocess_says_what_it_does_after_reading(tmp_path: Path, capsys) -> None:
    assert main([a.format(FIX=FIXTURES, OUT=tmp_path) for a in PREPROCESS]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # the reading bar: terminal only
    assert [line.split()[0] for line in err.splitlines()] == ["filtering", "checksumming", "writing"]
