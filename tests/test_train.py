"""Training runs: determinism, kill-and-resume, checkpoints, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sasrec.checkpoint import load_checkpoint, save_checkpoint
from sasrec.cli import main
from sasrec.config import resolve
from sasrec.data.dataset import Sequences, write_sasrec_file
from sasrec.data.synthetic import make_synthetic
from sasrec.errors import ConfigError, SASRecError
from sasrec.model import SASRec
from sasrec.train import train

TINY = {"hidden": 16, "maxlen": 20, "epochs": 3, "quiet": True, "batch_size": 64}


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "small.txt"
    write_sasrec_file(make_synthetic(num_users=300, num_items=400, seed=1), path)
    return path


def run_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_same_seed_gives_identical_runs(small_file: Path, tmp_path: Path) -> None:
    results = []
    for name in ("a", "b"):
        config = resolve({**TINY, "dataset": str(small_file), "out": str(tmp_path / name), "seed": 7})
        results.append(train(config))
    assert results[0]["sampled"]["metrics"] == results[1]["sampled"]["metrics"]
    strip = [[{k: v for k, v in r.items() if "seconds" not in k} for r in run_log(tmp_path / n)] for n in "ab"]
    assert strip[0] == strip[1]
    other = train(resolve({**TINY, "dataset": str(small_file), "out": str(tmp_path / "c"), "seed": 8}))
    assert other["sampled"]["metrics"] != results[0]["sampled"]["metrics"]


def test_kill_and_resume_equals_uninterrupted_run(small_file: Path, tmp_path: Path) -> None:
    """kill -9 after epoch 3 and --resume: the same log, results and checkpoint files as a run never stopped,
    at 2 threads while another process keeps the CPU busy."""
    # Batches of ~1200 positions: large enough for ATen to split their sums and gathers between threads.
    args = [
        "--dataset",
        str(small_file),
        "--hidden",
        "32",
        "--maxlen",
        "20",
        "--batch-size",
        "128",
        "--epochs",
        "8",
        "--patience",
        "0",
        "--seed",
        "3",
        "--threads",
        "2",
        "--quiet",
    ]
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert main(["train", *args, "--out", str(tmp_path / "whole")]) == 0
        killed = tmp_path / "killed"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        proc = subprocess.Popen([sys.executable, "-m", "sasrec", "train", *args, "--out", str(killed)], env=env)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (killed / "log.jsonl").exists() and len((killed / "log.jsonl").read_text().splitlines()) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed; make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (killed / "results.json").exists()
        assert main(["train", "--resume", str(killed), "--quiet"]) == 0
    finally:
        burner.kill()
        burner.wait()
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    resumed = json.loads((killed / "results.json").read_text())
    for protocol in ("sampled", "full"):
        assert resumed[protocol]["metrics"] == whole[protocol]["metrics"]
    untimed = [
        [{k: v for k, v in r.items() if "seconds" not in k} for r in run_log(run)]
        for run in (killed, tmp_path / "whole")
    ]
    assert untimed[0] == untimed[1]
    for name in ("last.safetensors", "best.safetensors"):
        assert (killed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = SASRec(num_items=10, maxlen=5, hidden=8)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    optimizer.step()
    rng_state = torch.get_rng_state()
    save_checkpoint(tmp_path / "c.safetensors", model, {"epoch": 3, "num_items": 10}, optimizer, {"rng": rng_state})
    copy = SASRec(num_items=10, maxlen=5, hidden=8)
    copy_opt = torch.optim.Adam(copy.parameters())
    meta, extra = load_checkpoint(tmp_path / "c.safetensors", copy, copy_opt)
    assert meta["epoch"] == 3
    for (name, a), b in zip(model.state_dict().items(), copy.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    saved, loaded = optimizer.state_dict()["state"], copy_opt.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    for index, state in saved.items():
        assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(loaded[index][k])) for k, v in state.items())
    assert torch.equal(extra["rng"], rng_state)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary file


@pytest.mark.parametrize(
    "override, message",
    [
        ({"dropout": -0.1}, "dropout"),
        ({"maxlen": 0}, "maxlen"),
        ({"hidden": 50, "num_heads": 3}, "divisible"),
        ({"preset": "nope"}, "unknown preset"),
    ],
)
def test_bad_hyperparameters_are_clear_errors(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(override)


def test_cli_reports_user_errors_without_traceback(capsys, tmp_path: Path) -> None:
    assert main(["train", "--dropout", "-1"]) == 2
    assert "dropout" in capsys.readouterr().err
    assert main(["train", "--dataset", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_dataset_too_small_to_split(tmp_path: Path) -> None:
    path = tmp_path / "tiny.txt"
    write_sasrec_file(Sequences.from_lists([[1, 2], [2, 3]]), path)
    with pytest.raises(SASRecError, match="too small"):
        train(resolve({**TINY, "dataset": str(path), "out": str(tmp_path / "run")}))


def test_default_run_on_embedded_dataset_learns(tmp_path: Path) -> None:
    """The quick-start run (embedded data) beats the popularity floor it is compared with."""
    config = resolve({"epochs": 10, "quiet": True, "out": str(tmp_path / "run")})
    results = train(config)
    from sasrec.baselines import PopularityScorer
    from sasrec.data.dataset import split_leave_one_out
    from sasrec.evaluate import Evaluator

    split = split_leave_one_out(make_synthetic())
    pop = Evaluator(split, "test", "full").run(PopularityScorer(split.history("test"))).metrics["NDCG@10"]
    assert results["full"]["metrics"]["NDCG@10"] > 2 * pop
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000


def test_run_directory_is_locked_while_training(tmp_path: Path) -> None:
    from sasrec.runs import RunDir

    held = RunDir(tmp_path).lock()
    with pytest.raises(SASRecError, match="in use"):
        RunDir(tmp_path).lock()
    held.unlock()
    RunDir(tmp_path).lock().unlock()
    assert list(tmp_path.iterdir()) == []  # the lock is on the directory: no lock file is left behind


def test_position_weighting_defaults_follow_batching() -> None:
    assert resolve({}).position_weighting is True
    assert resolve({"batching": "random"}).position_weighting is False
    assert resolve({"batching": "random", "position_weighting": True}).position_weighting is True


def test_shared_negatives_sampler(small_file: Path) -> None:
    from sasrec.data.dataset import read_sasrec_file
    from sasrec.sampling import TrainSampler

    data = read_sasrec_file(small_file)
    a, b = (TrainSampler(data, 20, 32, num_negatives=50, seed=4, shared_negatives=True) for _ in range(2))
    users = a.epoch_order()[0]
    assert np.array_equal(users, b.epoch_order()[0])
    neg_a, neg_b = a.make_batch(users).neg, b.make_batch(users).neg
    assert neg_a.shape == (50,) and len(np.unique(neg_a)) == 50  # one set of distinct items per batch
    assert neg_a.min() >= 1 and neg_a.max() <= data.num_items
    assert np.array_equal(neg_a, neg_b)  # seeded
    with pytest.raises(ConfigError, match="catalogue has only"):
        TrainSampler(data, 20, 32, num_negatives=data.num_items + 1, shared_negatives=True)


@pytest.mark.parametrize(
    "loss, negatives, options",
    [
        ("ce", 0, {}),
        ("sampled-ce", 64, {"shared": True}),
        ("bce", 64, {"shared": True}),
        ("gbce", 64, {"shared": True}),
    ],
)
def test_losses_train_end_to_end(small_file: Path, tmp_path: Path, loss, negatives, options) -> None:
    """Every loss trains through the same loop; all but gbce (slow to start: its positive term weighs
    1 / (1 + N), as in gSASRec) end well above the popularity floor within 10 epochs."""
    from sasrec.baselines import PopularityScorer
    from sasrec.data.dataset import read_sasrec_file, split_leave_one_out
    from sasrec.evaluate import Evaluator

    config = resolve(
        {
            **TINY,
            "epochs": 10,
            "lr": 0.005,
            "dataset": str(small_file),
            "out": str(tmp_path / "run"),
            "loss": loss,
            "negatives": negatives,
            "loss_options": options,
            "val_protocol": "full",
        }
    )
    results = train(config)
    log = run_log(tmp_path / "run")
    assert log[-1]["loss"] < log[0]["loss"]
    if loss != "gbce":
        split = split_leave_one_out(read_sasrec_file(small_file))
        pop = Evaluator(split, "test", "full").run(PopularityScorer(split.history("test"))).metrics["HR@10"]
        assert results["full"]["metrics"]["HR@10"] > 1.5 * pop


def test_untied_output_trains_and_serves(small_file: Path, tmp_path: Path) -> None:
    from sasrec.recommend import Recommender

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                str(small_file),
                "--hidden",
                "16",
                "--maxlen",
                "20",
                "--epochs",
                "2",
                "--no-tied-output",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert json.loads((run / "config.json").read_text())["tied_output"] is False
    rec = Recommender.load(run)
    assert rec.model.out_emb is not None
    assert len(rec.recommend_user(1, k=5)) == 5


def test_sampled_losses_default_to_256_negatives() -> None:
    assert resolve({}).negatives == 1 and resolve({}).loss_options == {}  # bce: the paper's one negative
    config = resolve({"loss": "sampled-ce"})
    assert config.negatives == 256 and config.loss_options == {"shared": True}
    gbce = resolve({"loss": "gbce", "loss_options": {"t": 0.5}})  # per position: shared ones did not learn
    assert gbce.negatives == 256 and gbce.loss_options == {"t": 0.5, "shared": False}
    explicit = resolve({"loss": "gbce", "negatives": 8, "loss_options": {"shared": True}})
    assert explicit.negatives == 8 and explicit.loss_options == {"shared": True}
    assert resolve({"loss": "sampled-ce", "loss_options": {"in_batch": True}}).loss_options == {"in_batch": True}
