"""A run directory read back honestly: the architecture a checkpoint was trained with, states a kill leaves,
SIGTERM, the dataset's location, options a command would ignore, and what resume says."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

import sasrec
from sasrec.checkpoint import load_checkpoint, save_checkpoint
from sasrec.cli import main
from sasrec.data.dataset import write_sasrec_file
from sasrec.data.synthetic import make_synthetic
from sasrec.recommend import Recommender
from sasrec.runs import load_run

SRC = Path(sasrec.__file__).resolve().parents[1]  # the sources under test, for subprocesses
ARGS = "--hidden 8 --maxlen 10 --batch-size 64 --epochs 2 --patience 0 --quiet --seed 5 --eval-negatives 10".split()


def untimed_log(run: Path) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k} for line in lines]


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "never occur" not in line]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset file, a finished 2-epoch run on it): copied by each test that changes it."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "small.txt"
    write_sasrec_file(make_synthetic(num_users=80, num_items=60, seed=3), data)
    assert main(["train", "--dataset", str(data), *ARGS, "--out", str(root / "run")]) == 0
    return data, root / "run"


@pytest.fixture
def run(trained: tuple[Path, Path], tmp_path: Path) -> Path:
    shutil.copytree(trained[1], tmp_path / "run")
    return tmp_path / "run"


def edit_config(run: Path, **changes: object) -> None:
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, **changes}))


# ------------------------------------------------------------------- 1. the architecture a checkpoint records
@pytest.mark.parametrize(
    "field, value", [("num_heads", 2), ("norm_first", True), ("dropout", 0.5), ("tied_output", False), ("maxlen", 5)]
)
def test_edited_config_that_fits_the_weights_is_refused_everywhere(
    field: str, value: object, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    before = json.loads((run / "config.json").read_text())[field]
    edit_config(run, **{field: value})
    capsys.readouterr()
    for command in (
        ["evaluate", "--run", str(run)],
        ["recommend", "--run", str(run), "--history", "1,2,3"],
        ["train", "--resume", str(run), "--epochs", "3"],
        ["export", "--run", str(run), "--out", str(tmp_path / "m.onnx")],
    ):
        assert main(command) == 2, command
        line = error_line(capsys)
        if field in ("num_heads", "norm_first", "dropout"):  # same shapes: only the record can tell
            shown = json.dumps
            assert f"{field} = {shown(value)}" in line and f"{field} = {shown(before)}" in line, line
            assert "config.json" in line and "retrain" in line or "train a new run" in line, line
        assert "config.json" in line, line
    with pytest.raises(Exception, match=field if field != "tied_output" and field != "maxlen" else "config.json"):
        Recommender.load(run)
    assert not (tmp_path / "m.onnx").exists() and not (run / "eval_test.json").exists()


def test_checkpoints_without_an_architecture_record_still_load(run: Path) -> None:
    """Checkpoints written before the record existed load as they did (unchecked beyond their shapes)."""
    for name in ("best", "last"):
        path = run / f"{name}.safetensors"
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["meta"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        assert meta.pop("architecture")["num_heads"] == 1
        save_file(tensors, str(path), metadata={"meta": json.dumps(meta)})
    loaded = load_run(run)
    assert loaded.meta["epoch"] >= 1 and "architecture" not in loaded.meta
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0


# ------------------------------------------------------------------- 2. every state a kill can leave
def partial(run: Path, log_lines: int, best: bool, fingerprint: bool = True) -> Path:
    """The run as a kill before its first ``last.safetensors`` leaves it."""
    for name in ("last.safetensors", "results.json", "learning_curve.png"):
        (run / name).unlink()
    if not best:
        (run / "best.safetensors").unlink()
    if not fingerprint:
        (run / "fingerprint.json").unlink()
    lines = (run / "log.jsonl").read_text().splitlines()[:log_lines]
    if lines:
        (run / "log.jsonl").write_text("".join(line + "\n" for line in lines))
    else:
        (run / "log.jsonl").unlink()
    return run


@pytest.mark.parametrize(
    "how, log_lines, best, fingerprint",
    [
        ("resume", 0, False, False),
        ("resume", 0, False, True),
        ("resume", 1, True, True),
        ("resume", 1, False, True),
        ("train-out", 0, False, True),
        ("train-out", 1, True, True),
    ],
    ids=["config-only", "config-fingerprint", "log-and-best", "log-only", "out-config", "out-log-and-best"],
)
def test_a_run_killed_before_its_first_checkpoint_is_resumable_and_reusable(
    how: str, log_lines: int, best: bool, fingerprint: bool, trained: tuple[Path, Path], run: Path
) -> None:
    data, whole = trained
    partial(run, log_lines, best, fingerprint)
    command = ["train", "--resume", str(run)] if how == "resume" else ["train", "--dataset", str(data), *ARGS]
    assert main([*command, "--out", str(run)] if how == "train-out" else command) == 0
    # Started over from epoch 0, it ends exactly where the run never killed ended.
    assert untimed_log(run) == untimed_log(whole)
    results = [json.loads((r / "results.json").read_text()) for r in (run, whole)]
    for protocol in ("sampled", "full"):
        assert results[0][protocol]["metrics"] == results[1][protocol]["metrics"]
    assert (run / "last.safetensors").read_bytes() == (whole / "last.safetensors").read_bytes()


def test_an_empty_run_directory_is_reusable_and_resume_names_the_command(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()  # a kill between making the directory and writing config.json
    capsys.readouterr()
    assert main(["train", "--resume", str(empty)]) == 2
    assert f"sasrec train --out {empty}" in error_line(capsys)
    assert main(["train", "--dataset", str(trained[0]), *ARGS, "--out", str(empty)]) == 0


def test_a_log_line_cut_short_by_a_kill_is_dropped_on_resume(trained: tuple[Path, Path], run: Path) -> None:
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n" + '{"epoch": 3, "lo')
    (run / "results.json").unlink()
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    assert [r["epoch"] for r in untimed_log(run)] == [1, 2, 3]


def test_an_interrupted_first_epoch_keeps_files_that_are_not_the_runs(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr("sasrec.train.Trainer.train_epoch", interrupt)
    assert main(["train", "--dataset", str(trained[0]), *ARGS, "--out", str(out)]) == 130
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------- 3. SIGTERM
def test_sigterm_stops_like_ctrl_c(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    args = [*ARGS, "--epochs", "500", "--out", str(run)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sasrec", "train", "--dataset", str(trained[0]), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not (run / "last.safetensors").exists():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before SIGTERM; make it longer"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Traceback" not in err
    meta, _ = load_checkpoint(run / "last.safetensors")
    saved = f"epoch {meta['epoch']} is saved"
    assert f"terminated (SIGTERM); {saved}; continue with `sasrec train --resume {run}`" in err
    assert [r["epoch"] for r in untimed_log(run)] == list(range(1, meta["epoch"] + 1))
    assert not (run / "results.json").exists()
    assert main(["train", "--resume", str(run), "--epochs", str(meta["epoch"] + 1)]) == 0


@pytest.mark.parametrize("delay", [0.5, 1.0, 2.0, 3.0])
def test_a_stop_at_any_moment_of_the_start_is_one_line_and_no_traceback(delay: float, tmp_path: Path) -> None:
    """Ctrl-C while the command imports its modules and torch: before, a traceback (early) or a silent exit
    130 (later), and now and then an abort from torch's C++ code ("terminate called after throwing")."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sasrec", "train", "--epochs", "1", "--out", str(run)],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip(f"the run finished within {delay} s")
    # 130, or killed by SIGINT after the message (a shell shows 130 for both): seen in 2 of 10 stops 2.6-3.5 s in.
    # CPython re-raises SIGINT at exit when a KeyboardInterrupt left code it evaluated for C callers (likely
    # torch's), even though sasrec caught it later.
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err)
    assert "Traceback" not in err and "terminate called" not in err, err
    said = [line for line in (out + err).splitlines() if line.startswith("interrupted")]
    assert len(said) == 1, out + err
    assert said[0] in (
        "interrupted while starting; nothing was written",
        "interrupted before the first epoch was saved; nothing was kept",
        f"interrupted; epoch 1 is saved; continue with `sasrec train --resume {run}`",
    ) or said[0].startswith("interrupted while starting"), said


def test_a_signal_the_process_was_started_ignoring_stays_ignored(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """A job started with `&` from a script ignores SIGINT. Before, it was honoured while the command
    started (exit 130) and ignored afterwards: whether a stop worked depended on its timing."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sasrec", "train", "--dataset", str(trained[0]), *ARGS, "--out", str(run)],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    time.sleep(0.5)  # while it starts (torch alone takes longer to import)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (proc.returncode, err)
    assert (run / "results.json").exists()


def test_signals_ignored_by_the_parent_stay_ignored_in_every_stop_handler() -> None:
    """`nohup`-style ignoring: SIGTERM turned into Terminated despite SIG_IGN, and a held SIGINT or SIGTERM
    would have been re-delivered."""
    from sasrec.stops import deferred, held, sigterm_as_interrupt

    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with sigterm_as_interrupt(), deferred(), held() as received:
            for signum in (signal.SIGINT, signal.SIGTERM):
                os.kill(os.getpid(), signum)
            time.sleep(0.05)
        assert received == []
        assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_a_stop_held_while_starting_is_reported_after_it(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A signal that arrives while the command line parses and imports torch is held, then reported in one
    line; the command does not run."""
    import sasrec.cli

    ran = []
    parser = sasrec.cli.build_parser()
    monkeypatch.setattr(sasrec.cli, "run_train", lambda args: ran.append(args) or 0)
    for signum, status, what in ((signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")):

        class Stopped(type(parser)):
            def parse_args(self, argv=None, namespace=None, signum=signum):
                args = parser.parse_args(argv, namespace)
                args.func = sasrec.cli.run_train
                os.kill(os.getpid(), signum)  # held: nothing happens until the start is over
                time.sleep(0.05)
                return args

        monkeypatch.setattr(sasrec.cli, "build_parser", lambda only=None: Stopped())
        assert main(["train", "--epochs", "1"]) == status
        assert capsys.readouterr().err == f"{what} while starting; nothing was written\n"
    assert ran == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.parametrize("stop", ["Terminated", "KeyboardInterrupt"])
def test_a_stop_while_starting_says_so_and_writes_nothing(
    stop: str, trained: tuple[Path, Path], run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import sasrec.stops
    import sasrec.train

    def stopped(*args, **kwargs):
        raise getattr(sasrec.stops, stop, KeyboardInterrupt)()

    monkeypatch.setattr(sasrec.train, "load_dataset", stopped)
    new = tmp_path / "new"
    assert main(["train", "--dataset", str(trained[0]), *ARGS, "--out", str(new)]) == (
        143 if stop == "Terminated" else 130
    )
    reason = "terminated (SIGTERM)" if stop == "Terminated" else "interrupted"
    assert f"{reason} while starting; nothing was written" in capsys.readouterr().err
    assert not new.exists()
    # a resume stopped while starting leaves the run as it was
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["train", "--resume", str(run), "--epochs", "9"]) in (130, 143)
    assert "while starting; the run was not changed" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_stop_in_the_last_wait_of_a_complete_run_does_not_fail_it(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Before, Ctrl-C during distributed.finish (the barrier after the results are printed) ended a complete
    run with 130."""
    import sasrec.distributed

    def stopped(info):
        raise KeyboardInterrupt

    monkeypatch.setattr(sasrec.distributed, "finish", stopped)
    new = tmp_path / "new"
    assert main(["train", "--dataset", str(trained[0]), *ARGS, "--out", str(new)]) == 0
    assert (new / "results.json").exists() and "interrupted" not in capsys.readouterr().err


def test_a_second_ctrl_c_during_the_clean_up_does_not_break_it_off(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import sasrec.train
    from sasrec.runs import RunDir

    def first_stop(self):
        raise KeyboardInterrupt

    remove = RunDir.remove_if_unfinished

    def second_stop_then_remove(self):
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C again, at the worst moment
        remove(self)

    monkeypatch.setattr(sasrec.train.Trainer, "fit", first_stop)
    monkeypatch.setattr(RunDir, "remove_if_unfinished", second_stop_then_remove)
    new = tmp_path / "new"
    assert main(["train", "--dataset", str(trained[0]), *ARGS, "--out", str(new)]) == 130
    assert "interrupted before the first epoch was saved; nothing was kept" in capsys.readouterr().err
    assert not new.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again afterwards


# ------------------------------------------------------------------- 4. the dataset's location
def test_a_run_finds_its_dataset_from_any_working_directory_and_after_a_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    home, elsewhere, moved = tmp_path / "home", tmp_path / "elsewhere", tmp_path / "moved"
    for folder in (home / "data", elsewhere, moved):
        folder.mkdir(parents=True)
    write_sasrec_file(make_synthetic(num_users=80, num_items=60, seed=3), home / "data" / "small.txt")
    monkeypatch.chdir(home)
    assert main(["train", "--dataset", "data/small.txt", *ARGS, "--out", "run"]) == 0
    assert json.loads((home / "run" / "config.json").read_text())["dataset"] == str(home / "data" / "small.txt")
    monkeypatch.chdir(elsewhere)
    run = str(home / "run")
    assert main(["evaluate", "--run", run, "--protocol", "full"]) == 0
    assert Recommender.load(run).recommend_user(1, k=3)
    assert main(["train", "--resume", run, "--epochs", "3", "--dataset", "../home/data/small.txt"]) == 0

    # A config written with a relative path (by hand, or by an older version) is read against the recorded cwd.
    edit_config(home / "run", dataset="data/small.txt")
    assert main(["evaluate", "--run", run, "--protocol", "full"]) == 0

    shutil.move(home / "data" / "small.txt", moved / "small.txt")
    capsys.readouterr()
    assert main(["evaluate", "--run", run]) == 2
    assert "--data-dir" in error_line(capsys)
    assert main(["evaluate", "--run", run, "--protocol", "full", "--data-dir", str(moved)]) == 0
    assert main(["train", "--resume", run, "--epochs", "4", "--data-dir", str(moved)]) == 0
    assert json.loads((home / "run" / "config.json").read_text())["dataset"] == str(moved / "small.txt")
    with open(moved / "small.txt", "a") as f:  # the fingerprint is still checked
        f.write("999 1\n999 2\n999 3\n")
    capsys.readouterr()
    assert main(["evaluate", "--run", run, "--data-dir", str(moved)]) == 2
    assert "changed since" in error_line(capsys)
    assert main(["train", "--resume", run, "--epochs", "5", "--data-dir", str(moved)]) == 2
    assert "changed since" in error_line(capsys)


# ------------------------------------------------------------------- 5. options a command would ignore
@pytest.mark.parametrize(
    "extra, option",
    [
        (["--run", "{RUN}", "--dataset", "{DATA}"], "--dataset"),
        (["--baseline", "pop", "--dataset", "{DATA}", "--checkpoint", "last"], "--checkpoint"),
        (["--baseline", "pop", "--dataset", "{DATA}", "--device", "cpu"], "--device"),
        (["--baseline", "pop", "--dataset", "{DATA}", "--data-dir", "{TMP}"], "--data-dir"),
        (["--run", "{RUN}", "--protocol", "full", "--eval-negatives", "5"], "--eval-negatives"),
        (["--run", "{RUN}", "--protocol", "full", "--num-negatives", "5"], "--num-negatives"),
        (["--run", "{RUN}", "--protocol", "full", "--negative-sampling", "popularity"], "--negative-sampling"),
        (["--run", "{RUN}", "--protocol", "sampled", "--include-seen"], "--include-seen"),
        (["--run", "{RUN}", "--protocol", "full", "--seed", "3"], "--seed"),
        (["--run", "{RUN}", "--force"], "--force"),
    ],
)
def test_evaluate_refuses_an_option_it_would_ignore(
    extra: list[str], option: str, run: Path, trained: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    places = {"{RUN}": str(run), "{DATA}": str(trained[0]), "{TMP}": str(tmp_path)}
    capsys.readouterr()
    assert main(["evaluate", *(places.get(a, a) for a in extra)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {option} applies only to"), line
    assert not (run / "eval_test.json").exists()
    if option == "--dataset":
        assert "--data-dir" in line


def test_evaluate_uses_the_options_it_accepts(run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--run", str(run), "--protocol", "sampled", "--eval-negatives", "7", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_negatives"] == 7
    assert main(["evaluate", "--run", str(run), "--protocol", "full", "--max-users", "5", "--seed", "3"]) == 0


# ------------------------------------------------------------------- 6. what resume says
def set_last_meta(run: Path, **changes: object) -> None:
    path = run / "last.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["meta"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(changes)
    save_file(tensors, str(path), metadata={"meta": json.dumps(meta)})


def test_resuming_a_complete_run_says_it_is_complete(run: Path, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    line = error_line(capsys)
    assert "is complete" in line and "--epochs N with N > 2" in line and "stopped early" not in line, line
    # Its last evaluation did not improve and --patience 1 is reached at the same time as --epochs.
    set_last_meta(run, best={"epoch": 1, "value": 0.5, "bad_evals": 1})
    assert main(["train", "--resume", str(run), "--epochs", "4", "--patience", "1"]) == 2
    line = error_line(capsys)
    assert "is complete" in line and "--patience N with N > 1" in line and "stopped early" not in line, line


@pytest.mark.parametrize("how", ["truncated", "pickle"])
def test_a_damaged_last_checkpoint_on_resume_names_the_file_and_a_fix_that_works(
    how: str, trained: tuple[Path, Path], run: Path, capsys: pytest.CaptureFixture
) -> None:
    last = run / "last.safetensors"
    if how == "truncated":
        last.write_bytes(last.read_bytes()[:100])
    else:
        import torch

        torch.save({"w": torch.zeros(2)}, last)
    (run / "results.json").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    line = error_line(capsys)
    assert str(last) in line and f"sasrec train --resume {run}" in line and "--checkpoint" not in line, line
    last.unlink()  # the fix it names
    assert main(["train", "--resume", str(run)]) == 0
    assert untimed_log(run) == untimed_log(trained[1])


def test_a_damaged_best_checkpoint_names_an_option_that_exists(run: Path, capsys: pytest.CaptureFixture) -> None:
    (run / "best.safetensors").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run)]) == 2
    line = error_line(capsys)
    assert "best.safetensors" in line and "--checkpoint last" in line, line
    assert main(["evaluate", "--run", str(run), "--checkpoint", "last", "--protocol", "full"]) == 0


def test_checkpoint_written_outside_a_run_loads(tmp_path: Path) -> None:
    """save_checkpoint / load_checkpoint stay usable without a run directory (no architecture record)."""
    from sasrec.model import SASRec

    model = SASRec(num_items=5, maxlen=4, hidden=8)
    save_checkpoint(tmp_path / "m.safetensors", model, {"num_items": 5})
    meta, _ = load_checkpoint(tmp_path / "m.safetensors", SASRec(num_items=5, maxlen=4, hidden=8))
    assert meta == {"num_items": 5}


def test_a_signal_during_the_epochs_writes_takes_effect_after_them() -> None:
    """SIGTERM or Ctrl-C arriving while an epoch's checkpoints and log line are written waits for them."""
    from sasrec.stops import Terminated, deferred, sigterm_as_interrupt

    for signum, expected in ((signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)):
        written = []
        with pytest.raises(expected), sigterm_as_interrupt():
            with deferred():
                os.kill(os.getpid(), signum)
                time.sleep(0.05)
                written.append("checkpoint")  # still runs: the signal waits
            written.append("after")  # the signal is delivered when the block ends
        assert written == ["checkpoint"], signum


@pytest.mark.parametrize("field, value", [("loss", "ce"), ("lr", 0.1), ("seed", 7), ("precision", "bf16")])
def test_resume_refuses_a_config_json_edited_in_a_setting_it_cannot_change(run: Path, capsys, field, value) -> None:
    """A resume continues the saved run: config.json edited since (not only its architecture) is refused."""
    edit_config(run, **{field: value, "negatives": 0} if field == "loss" else {field: value})
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"config.json says {field} = " in err[0] and "restore the value" in err[0], err
    assert len(untimed_log(run)) == 2  # nothing trained


def test_resume_accepts_what_a_resume_may_change_in_config_json(run: Path) -> None:
    edit_config(run, patience=3, threads=1)
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
