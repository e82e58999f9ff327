"""Runs that cannot finish fail before their first epoch; runs that diverge stop at the first bad step.

Every refusal is one ``error:`` line naming the option to change, exit status 2, and no run directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import sasrec.train
from sasrec.cli import main
from sasrec.config import resolve
from sasrec.data.dataset import Sequences, read_sasrec_file, write_sasrec_file
from sasrec.data.synthetic import make_synthetic
from sasrec.errors import ConfigError
from sasrec.runs import load_run
from sasrec.sampling import ItemSets, sample_uniform_unseen

ARGS = ["--hidden", "8", "--maxlen", "10", "--batch-size", "64", "--patience", "0", "--quiet", "--seed", "5"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "small.txt"
    write_sasrec_file(make_synthetic(num_users=120, num_items=300, seed=3), path)
    return path


def write(tmp_path: Path, seqs: list[list[int]], num_items: int) -> Path:
    path = tmp_path / "data.txt"
    write_sasrec_file(Sequences.from_lists(seqs, num_items), path)
    return path


def refused(capsys: pytest.CaptureFixture, args: list[str], out: Path) -> str:
    """Train with ``args``; assert it failed with one error line and left no run directory; return the line."""
    capsys.readouterr()
    assert main(["train", *args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = [line for line in captured.err.strip().splitlines() if "never occur" not in line]  # loader note aside
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "test metrics" not in captured.out
    assert not out.exists(), "the run failed before its first epoch: it must leave no directory"
    return err[0]


def repeat_buyer(num_items: int = 50) -> list[list[int]]:
    """60 users; the first one's training part (all but its last 2 items) holds every item of the catalogue."""
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, num_items + 1, size=int(rng.integers(5, 20))).tolist() for _ in range(60)]
    seqs[0] = [*range(1, num_items + 1), 1, 2]
    return seqs


# ------------------------------------------------------------------------------------ impossible settings
def test_user_who_has_seen_every_item_is_refused_not_a_hang(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write(tmp_path, repeat_buyer(), 50)
    line = refused(
        capsys,
        ["--dataset", str(data), *ARGS, "--epochs", "1", "--eval-negatives", "5", "--val-protocol", "full"],
        tmp_path / "run",
    )
    assert "1 user (the first: user #1," in line and "all 50 items in their training part" in line
    assert "--loss-option shared=true" in line and "--loss ce" in line
    # Negatives from the whole catalogue need no unseen item: then the sampled test protocol is what fails.
    line = refused(
        capsys,
        ["--dataset", str(data), *ARGS, "--epochs", "1", "--eval-negatives", "5", "--loss-option", "shared=true"],
        tmp_path / "run",
    )
    assert "1 user (the first: user #1," in line and "no negative to rank" in line


def test_sampler_never_loops_forever() -> None:
    """A user with no unseen item is an error; one with 3 unseen of 2000 gets exactly those, uniformly."""
    rng = np.random.default_rng(0)
    everything = Sequences.from_lists([list(range(1, 21)), [1, 2]], 20)
    with pytest.raises(ConfigError, match="user #1 .* all 20 items"):
        sample_uniform_unseen(rng, ItemSets(everything), np.array([1, 0]), (4, 2), 20)
    seen = [i for i in range(1, 2001) if i not in (7, 500, 1999)]
    sets = ItemSets(Sequences.from_lists([seen], 2000))
    neg = sample_uniform_unseen(rng, sets, np.array([0]), (300, 10), 2000)
    values, counts = np.unique(neg, return_counts=True)
    assert values.tolist() == [7, 500, 1999]
    assert counts.min() > 900  # 3000 draws, about 1000 each


def test_catalogue_smaller_than_eval_negatives_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = write(tmp_path, make_synthetic(num_users=80, num_items=60, seed=2).to_lists(), 60)
    # The final test always runs the sampled protocol, even when validation uses the full one.
    for protocol in ("full", "sampled"):
        line = refused(
            capsys, ["--dataset", str(data), *ARGS, "--epochs", "2", "--val-protocol", protocol], tmp_path / "run"
        )
        assert line.startswith("error: --eval-negatives 100:") and "the catalogue has 60 items" in line
        most = int(line.rsplit("at most ", 1)[1])
        assert 0 < most < 60
    # The bound it names works.
    assert (
        main(
            [
                "train",
                "--dataset",
                str(data),
                *ARGS,
                "--epochs",
                "1",
                "--eval-negatives",
                str(most),
                "--out",
                str(tmp_path / "ok"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "ok" / "results.json").read_text())["sampled"]["num_negatives"] == most


@pytest.mark.parametrize(
    "args, message",
    [
        (["--loss", "sampled-ce", "--negatives", "400"], "--negatives 400: shared negatives"),
        (["--metric", "HR@200"], "--metric HR@200 is the same for every model under --val-protocol sampled"),
        (["--metric", "Recall@300", "--val-protocol", "full"], "the catalogue has only 300 items; choose K < 300"),
    ],
    ids=["shared-negatives", "K-over-sampled-candidates", "K-over-catalogue"],
)
def test_settings_that_cannot_work_are_refused_before_training(
    args: list[str], message: str, data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert message in refused(capsys, ["--dataset", str(data_file), *ARGS, "--epochs", "1", *args], tmp_path / "run")


def test_dataset_with_nothing_to_train_on_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write(tmp_path, [[1, 2, 3], [2, 3, 4], [4, 1, 2]], 4)  # 3 each: all held out but one
    line = refused(capsys, ["--dataset", str(data), *ARGS, "--epochs", "1"], tmp_path / "run")
    assert "no user has 4 or more interactions" in line


@pytest.mark.parametrize("metric", ["ndcg@10", "AUC@10", "NDCG@0", "NDCG@", "NDCG", "HR@1.5"])
def test_unknown_metric_is_refused_by_the_config(metric: str) -> None:
    with pytest.raises(ConfigError, match="--metric .*HR, NDCG, Precision, Recall, MRR"):
        resolve({"metric": metric})


def test_any_computed_metric_selects_epochs(data_file: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert (
        main(["train", "--dataset", str(data_file), *ARGS, "--epochs", "2", "--metric", "NDCG@20", "--out", str(run)])
        == 0
    )
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all({"NDCG@20", "HR@10", "NDCG@10"} <= set(r["valid"]) for r in log)
    results = json.loads((run / "results.json").read_text())
    best = max(log, key=lambda r: r["valid"]["NDCG@20"])
    assert results["best_epoch"] == best["epoch"]
    assert results["valid_NDCG@20"] == best["valid"]["NDCG@20"]


# ------------------------------------------------------------------------------------ divergence
def test_huge_learning_rate_stops_at_the_first_non_finite_loss(
    data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    line = refused(capsys, ["--dataset", str(data_file), *ARGS, "--epochs", "1", "--lr", "1e30"], tmp_path / "run")
    assert line.startswith("error: training diverged in epoch 1: step ")
    assert "has loss nan" in line and "try a lower --lr (now 1e+30)" in line and "no epoch was saved" in line


def test_weights_made_non_finite_by_the_last_step_are_not_saved(
    data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # One batch per epoch: the step that overflows the weights (its own loss still finite) is the last.
    line = refused(
        capsys,
        ["--dataset", str(data_file), *ARGS, "--batch-size", "1000", "--epochs", "1", "--lr", "1e39"],
        tmp_path / "run",
    )
    assert "training diverged in epoch 1: its last step left non-finite weights in item_emb.weight" in line


class FaultyLoss(nn.Module):
    """The run's loss, except that call ``at`` returns NaN (``fault="loss"``) or a finite value whose
    gradient is NaN (``fault="gradient"``: d sqrt(x)/dx at 0 is inf, times 0)."""

    def __init__(self, loss: nn.Module, at: int, fault: str):
        super().__init__()
        self.loss, self.at, self.fault, self.calls = loss, at, fault, 0
        self.num_negatives, self.shared = loss.num_negatives, loss.shared

    def forward(self, hidden, positives, negatives, item_weight) -> torch.Tensor:
        self.calls += 1
        value = self.loss(hidden, positives, negatives, item_weight)
        if self.calls != self.at:
            return value
        if self.fault == "loss":
            return value * torch.nan
        return value + torch.sqrt((item_weight * 0.0).sum())


@pytest.mark.parametrize(
    "fault, batch_size, message",
    [
        ("loss", 1000, "step 1 of 1 has loss nan"),
        # A finite loss with a NaN gradient: on the epoch's last step only the weight check sees it; earlier,
        # the next step's loss does.
        ("gradient", 1000, "its last step left non-finite weights in item_emb.weight"),
        ("gradient", 64, "step 2 of 2 has loss nan"),
    ],
    ids=["nan-loss", "nan-gradient-last-step", "nan-gradient-mid-epoch"],
)
def test_diverged_epoch_keeps_the_last_good_one(
    fault: str,
    batch_size: int,
    message: str,
    data_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = sasrec.train.make_loss
    trained_users = int((read_sasrec_file(data_file).lengths >= 4).sum())  # 2+ training items each
    first_of_epoch_2 = -(-trained_users // batch_size) + 1
    monkeypatch.setattr(sasrec.train, "make_loss", lambda *a, **k: FaultyLoss(real(*a, **k), first_of_epoch_2, fault))
    run = tmp_path / "run"
    capsys.readouterr()
    args = ["--dataset", str(data_file), *ARGS, "--batch-size", str(batch_size), "--epochs", "2", "--lr", "0.01"]
    assert main(["train", *args, "--out", str(run)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == (
        f"error: training diverged in epoch 2: {message}; try a lower --lr (now 0.01) "
        f"in a new run; {run} keeps epoch 1, the last good one (no results were written)"
    )
    assert "test metrics" not in captured.out
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == [1]
    assert not (run / "results.json").exists()
    for name in ("last", "best"):  # epoch 1's weights, usable (load_run refuses non-finite ones)
        assert load_run(run, name).meta["epoch"] == 1
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # the kept epoch resumes
    assert (run / "results.json").exists()


# ------------------------------------------------------------------------------------ memory


def test_training_memory_counts_each_part_by_hand() -> None:
    from sasrec.data.dataset import split_leave_one_out
    from sasrec.losses import make_loss
    from sasrec.preflight import training_memory

    # 3 users of 7, 5 and 4 items over 9 items: training parts of 5, 3, 2 items, so the longest training
    # example is 4 positions and all 3 users train.
    split = split_leave_one_out(Sequences.from_lists([[1, 2, 3, 4, 5, 6, 7], [2, 3, 4, 5, 6], [7, 8, 9, 1]], 9))
    config = resolve({"hidden": 8, "maxlen": 10, "num_blocks": 2, "num_heads": 2, "batch_size": 64, "negatives": 3})
    parts = {p.what: p.nbytes for p in training_memory(config, split, make_loss("bce", 3))}
    assert parts == {
        "the item embeddings": 16 * 10 * 8,  # (9 + padding) x hidden, each with gradient and two Adam moments
        "the position embeddings": 16 * 10 * 8,  # maxlen x hidden
        "the blocks' weights": 16 * 2 * 6 * 8 * 8,
        "the attention probabilities": 4 * 2 * 2 * 3 * 2 * 4 * 4,  # blocks x (value, gradient) x B x heads x T^2
        "the blocks' activations": 4 * 2 * 4 * 3 * 4 * 8,  # blocks x 4 x B x T x hidden
        "the negatives' embeddings": 4 * 3 * 4 * 3 * 8 * 2,  # B x T x negatives x hidden (+ gradient)
    }
    shared = {p.what: p.nbytes for p in training_memory(config, split, make_loss("bce", 3, shared=True))}
    assert shared["the negatives' embeddings"] == 4 * (3 * 8 * 2 + 3 * 4 * 3 * 2)  # one set, and B x T x N logits


def test_a_model_larger_than_the_memory_is_refused_naming_the_option(data_file: Path) -> None:
    from sasrec.data.dataset import split_leave_one_out
    from sasrec.losses import make_loss
    from sasrec.preflight import GIB, check_memory

    split = split_leave_one_out(read_sasrec_file(data_file))
    config = resolve({"maxlen": 50, "batch_size": 128, "num_heads": 1, "negatives": 100})
    check_memory(config, split, make_loss("bce", 100), available=(GIB, "the test's budget"))  # fits in 1 GiB
    with pytest.raises(ConfigError) as raised:
        check_memory(config, split, make_loss("bce", 100), available=(GIB // 1000, "the test's budget"))
    assert str(raised.value).startswith("--negatives 100 --batch-size 128: training needs at least 0.")
    assert str(raised.value).endswith("but the test's budget has 0.0 GiB; lower --negatives or --batch-size")


def test_a_selection_metric_cut_off_beyond_the_catalogue_is_refused() -> None:
    from sasrec.config import resolve
    from sasrec.data.dataset import split_leave_one_out
    from sasrec.data.synthetic import make_synthetic
    from sasrec.errors import ConfigError
    from sasrec.preflight import check_metric

    split = split_leave_one_out(make_synthetic(num_users=50, num_items=40, seed=1))
    for metric in ("NDCG@41", "MRR@2147483647"):
        with pytest.raises(ConfigError, match=f"--metric {metric}: a cut-off can be at most the catalogue's 40"):
            check_metric(resolve({"metric": metric, "val_protocol": "full"}), split.num_items)
