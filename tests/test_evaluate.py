"""Metrics against slow obvious definitions; protocols' candidates, ties, leakage and chunking."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import sasrec.evaluate as evaluate_module
from sasrec.baselines import PopularityScorer, TransitionScorer
from sasrec.data.dataset import Sequences, split_leave_one_out
from sasrec.data.synthetic import make_synthetic
from sasrec.evaluate import Evaluator, sample_unseen_without_replacement
from sasrec.metrics import ranking_metrics
from sasrec.sampling import ItemSets


def slow_metrics(scores: np.ndarray, relevant: list[set[int]], k: int) -> dict[str, float]:
    """Sort each user's candidates (ties: relevant items last), then apply the textbook definitions."""
    totals = dict.fromkeys(("HR", "NDCG", "Precision", "Recall", "MRR"), 0.0)
    for row, rel in zip(scores, relevant, strict=True):
        order = sorted(range(len(row)), key=lambda c: (-row[c], c in rel))
        top = order[:k]
        hits = [i for i, c in enumerate(top) if c in rel]
        totals["HR"] += 1.0 if hits else 0.0
        totals["Precision"] += len(hits) / k
        totals["Recall"] += len(hits) / len(rel)
        dcg = sum(1 / math.log2(i + 2) for i in hits)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(len(rel), k)))
        totals["NDCG"] += dcg / idcg
        totals["MRR"] += 1 / (hits[0] + 1) if hits else 0.0
    return {f"{name}@{k}": v / len(scores) for name, v in totals.items()}


def positions_from_scores(scores: np.ndarray, relevant: list[set[int]]) -> np.ndarray:
    """Pessimistic positions, the way the protocols compute them, for several relevant items per user."""
    width = max(map(len, relevant))
    out = np.full((len(scores), width), -1)
    for u, (row, rel) in enumerate(zip(scores, relevant, strict=True)):
        for j, r in enumerate(sorted(rel)):
            others = [c for c in range(len(row)) if c not in rel]
            above_others = sum(row[c] >= row[r] for c in others)
            above_relevant = sum(row[c] > row[r] or (row[c] == row[r] and c < r) for c in rel if c != r)
            out[u, j] = above_others + above_relevant
    return out


@pytest.mark.parametrize("num_relevant", [1, 3])
def test_metrics_match_slow_reference_with_ties(num_relevant: int) -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(40, 25)).astype(float)  # few distinct values: many ties
    relevant = [set(rng.choice(25, size=rng.integers(1, num_relevant + 1), replace=False).tolist()) for _ in range(40)]
    positions = positions_from_scores(scores, relevant)
    for k in (1, 3, 5, 10):
        got = ranking_metrics(positions, (k,))
        expected = slow_metrics(scores, relevant, k)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-12), key


def test_hand_computed_single_item() -> None:
    m = ranking_metrics(np.array([0, 1, 9, 10]), (10,))
    assert m["HR@10"] == pytest.approx(3 / 4)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 4)
    assert m["MRR@10"] == pytest.approx((1 + 1 / 2 + 1 / 10) / 4)
    assert m["Recall@10"] == m["HR@10"]
    assert m["Precision@10"] == pytest.approx(m["HR@10"] / 10)


class ConstantScorer:
    def __init__(self, num_items: int):
        self.num_items = num_items

    def encode(self, histories: Sequences, users: np.ndarray) -> int:
        return len(users)

    def score(self, batch: int, items: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.ones(batch, items.shape[-1])


class RandomScorer:
    """Fixed random score per (user, item), recording the histories it was given."""

    def __init__(self, num_users: int, num_items: int, seed: int = 0):
        self.num_items = num_items
        self.table = torch.from_numpy(np.random.default_rng(seed).random((num_users, num_items + 1)))
        self.seen_histories: dict[int, list[int]] = {}

    def encode(self, histories: Sequences, users: np.ndarray) -> torch.Tensor:
        for u in users:
            self.seen_histories[int(u)] = histories[u].tolist()
        return torch.from_numpy(users)

    def score(self, users: torch.Tensor, items: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.table[users]
        return rows[:, items] if items.dim() == 1 else rows.gather(1, items)


def small_synthetic() -> Sequences:
    return make_synthetic(num_users=300, num_items=120, seed=3)


@pytest.fixture(scope="module")
def split():
    return split_leave_one_out(small_synthetic())


def test_ties_are_pessimistic(split) -> None:
    full = Evaluator(split, "test", "full").run(ConstantScorer(split.num_items))
    sampled = Evaluator(split, "test", "sampled", num_negatives=60).run(ConstantScorer(split.num_items))
    assert full.metrics["HR@10"] == 0.0 and full.metrics["HR@50"] == 0.0
    assert sampled.metrics["HR@50"] == 0.0  # 60 tied negatives all rank above the target


@pytest.mark.parametrize("filter_seen", [True, False])
@pytest.mark.parametrize("budget", [1 << 25, 50])  # 50 forces many item chunks
def test_full_ranking_matches_slow_loop(split, filter_seen: bool, budget: int, monkeypatch) -> None:
    monkeypatch.setattr(evaluate_module, "SCORE_BUDGET", budget)
    scorer = RandomScorer(split.num_users, split.num_items)
    result = Evaluator(split, "test", "full", filter_seen=filter_seen, ks=(1, 10)).run(scorer, batch_size=7)
    history, targets = split.history("test"), split.targets("test")
    ranks = []
    for u in range(split.num_users):
        if targets[u] == 0:
            continue
        row = scorer.table[u].numpy()
        excluded = {0, targets[u]} | (set(history[u].tolist()) if filter_seen else set())
        ranks.append(sum(row[i] >= row[targets[u]] for i in range(split.num_items + 1) if i not in excluded))
    expected = ranking_metrics(np.array(ranks), (1, 10))
    assert result.users == len(ranks)
    for key, value in expected.items():
        assert result.metrics[key] == pytest.approx(value, abs=1e-12)


def test_sampled_negatives_are_unseen_distinct_and_reproducible(split) -> None:
    a = Evaluator(split, "test", "sampled", num_negatives=60, seed=5)
    b = Evaluator(split, "test", "sampled", num_negatives=60, seed=5)
    np.testing.assert_array_equal(a.negatives, b.negatives)
    full = split.history("test")
    for row, u in zip(a.negatives, a.users, strict=True):
        assert len(set(row.tolist())) == 60
        assert not set(row.tolist()) & (set(full[u].tolist()) | {int(split.test[u]), 0})
    scorer = RandomScorer(split.num_users, split.num_items)
    assert a.run(scorer).metrics == b.run(scorer).metrics


def test_popularity_negatives_follow_popularity() -> None:
    sets = ItemSets(Sequences.from_lists([[1]], num_items=400))
    weights = np.ones(400)
    weights[399] = 10_000.0  # item 400 dominates
    negatives = sample_unseen_without_replacement(
        np.random.default_rng(0), sets, np.zeros(200, dtype=np.int64), 5, 400, weights=weights
    )
    assert (negatives == 400).any(axis=1).mean() > 0.95


def test_no_test_item_leaks_into_validation_input(split) -> None:
    # Against the raw sequences, not the split's own arrays: validation reads all but the last two items
    # and ranks the second-to-last; test reads all but the last and ranks the last.
    raw = small_synthetic().to_lists()
    for name, cut in (("valid", 2), ("test", 1)):
        scorer = RandomScorer(split.num_users, split.num_items)
        evaluator = Evaluator(split, name, "full")
        evaluator.run(scorer)
        assert sorted(scorer.seen_histories) == list(range(len(raw)))  # every user has >= 5 items
        for u, history in scorer.seen_histories.items():
            assert history == raw[u][:-cut], (name, u)
            assert split.targets(name)[u] == raw[u][-cut], (name, u)


def test_max_users_subset_is_seeded(split) -> None:
    a = Evaluator(split, "test", "full", max_users=50, seed=1)
    b = Evaluator(split, "test", "full", max_users=50, seed=1)
    assert len(a.users) == 50
    np.testing.assert_array_equal(a.users, b.users)


def test_transition_baseline_beats_popularity_on_sequential_data(split) -> None:
    history = split.history("test")
    pop = Evaluator(split, "test", "full").run(PopularityScorer(history)).metrics["HR@10"]
    trans = Evaluator(split, "test", "full").run(TransitionScorer(history)).metrics["HR@10"]
    assert trans > pop


def test_evaluate_command_on_a_run_and_a_baseline(tmp_path, capsys) -> None:
    from sasrec.cli import main
    from sasrec.data.dataset import write_sasrec_file

    data = tmp_path / "small.txt"
    write_sasrec_file(make_synthetic(num_users=200, num_items=300, seed=2), data)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                str(data),
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--maxlen",
                "10",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert main(["evaluate", "--run", str(run), "--protocol", "both", "--k", "5", "10"]) == 0
    out = capsys.readouterr().out
    assert "full protocol" in out and "sampled protocol" in out and "NDCG" in out
    saved = json.loads((run / "eval_test.json").read_text())
    assert {r["protocol"] for r in saved} == {"full", "sampled"}
    assert saved[0]["metrics"]["Recall@10"] == saved[0]["metrics"]["HR@10"]
    # The test metrics equal those training wrote for the same (best) checkpoint.
    trained = json.loads((run / "results.json").read_text())
    full = next(r for r in saved if r["protocol"] == "full")
    assert full["metrics"]["HR@10"] == trained["full"]["metrics"]["HR@10"]
    # Every result, the one training writes included, reports repeats and non-finite scores.
    for protocol in ("full", "sampled"):
        assert trained[protocol]["held_out_in_history"] == 0 and trained[protocol]["held_out_in_history_share"] == 0
        assert trained[protocol]["nonfinite_target_scores"] == 0
    assert "held-out item already in the input history: 0 of 200 users (0.0%)" in out
    assert main(["evaluate", "--baseline", "pop", "--dataset", str(data), "--protocol", "full"]) == 0
    assert "full protocol" in capsys.readouterr().out
    assert main(["evaluate", "--baseline", "pop"]) == 2  # no dataset: a clear error, not a traceback


# ------------------------------------------------------------------------ repeat consumption, non-finite scores

# Four users over items 1..6, split leave-one-out (train | valid | test):
#   u0  1 2 6 | 3 | 6   test item 6 is already in its test input history
#   u1  1 2   | 4 | 5
#   u2  2 5   | 6 | 5   test item 5 is already in its test input history
#   u3  3 1   | 3 | 4   valid item 3 is already in its valid input history
REPEATS = [[1, 2, 6, 3, 6], [1, 2, 4, 5], [2, 5, 6, 5], [3, 1, 3, 4]]


class TableScorer:
    """Scores from a fixed ``(num_users, num_items + 1)`` table; by default item i scores i (6 best)."""

    def __init__(self, num_users: int, num_items: int):
        self.num_items = num_items
        self.table = torch.arange(num_items + 1, dtype=torch.float32).repeat(num_users, 1)

    def encode(self, histories: Sequences, users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(users)

    def score(self, users: torch.Tensor, items: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.table[users]
        return rows[:, items] if items.dim() == 1 else rows.gather(1, items)


@pytest.fixture
def repeats():
    return split_leave_one_out(Sequences.from_lists(REPEATS, num_items=6))


def test_seen_held_out_item_is_a_miss_under_filter_seen(repeats) -> None:
    scorer = TableScorer(4, 6)
    # Test split, seen items filtered (candidates: the items outside the input history):
    #   u0 item 6 is seen: miss;  u1 candidates {3, 6}: rank 1;  u2 item 5 is seen: miss;  u3 {2, 5, 6}: rank 2.
    got = Evaluator(repeats, "test", "full", ks=(1, 3)).run(scorer)
    assert got.metrics["HR@1"] == 0.0  # ranking u0 and u2 among unseen items only would give 0.5
    assert got.metrics["HR@3"] == pytest.approx(2 / 4)
    assert got.metrics["NDCG@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 4)
    assert got.metrics["MRR@3"] == pytest.approx((1 / 2 + 1 / 3) / 4)
    assert (got.held_out_in_history, got.held_out_in_history_share) == (2, 0.5)
    # Kept (candidates: every other item): u0 rank 0, u1 rank 1 (6), u2 rank 1 (6), u3 rank 2 (5, 6).
    kept = Evaluator(repeats, "test", "full", ks=(1, 3), filter_seen=False).run(scorer)
    assert kept.metrics["HR@1"] == pytest.approx(1 / 4) and kept.metrics["HR@3"] == 1.0
    assert kept.held_out_in_history == 2
    # Valid split: only u3's item 3 is seen. u0 {4, 5}: rank 2; u1 {3, 5, 6}: rank 2; u2 {1, 3, 4}: rank 0.
    valid = Evaluator(repeats, "valid", "full", ks=(1, 3)).run(scorer)
    assert (valid.held_out_in_history, valid.held_out_in_history_share) == (1, 0.25)
    assert valid.metrics["HR@1"] == pytest.approx(1 / 4) and valid.metrics["HR@3"] == pytest.approx(3 / 4)
    # The sampled protocol ranks seen held-out items as the paper does, and reports them too.
    sampled = Evaluator(repeats, "test", "sampled", num_negatives=1).run(scorer)
    assert sampled.held_out_in_history == 2 and sampled.to_json()["held_out_in_history_share"] == 0.5
    assert got.to_json()["held_out_in_history"] == 2


@pytest.mark.parametrize("budget", [1 << 25, 3])  # 3: one user per batch, items in chunks of 3
def test_nonfinite_scores_count_against_the_model(repeats, budget: int, monkeypatch) -> None:
    monkeypatch.setattr(evaluate_module, "SCORE_BUDGET", budget)
    scorer = TableScorer(4, 6)
    scorer.table[0, 6] = torch.nan  # u0's held-out item: ranks below all 5 candidates
    scorer.table[1, 3] = torch.nan  # u1 (item 5): 6 and the NaN candidate 3 rank above it
    scorer.table[2, 1] = -torch.inf  # u2 (item 5): 6 and the -inf candidate 1 rank above it
    scorer.table[3, 4] = torch.inf  # u3's held-out item 4 scores +inf: last as well
    got = Evaluator(repeats, "test", "full", ks=(1, 3, 10), filter_seen=False).run(scorer)
    # Ranks 5, 2, 2, 5 (ignoring the non-finite scores would give 0, 1, 1, 0 and HR@1 = 0.5).
    assert got.metrics["HR@1"] == 0.0
    assert got.metrics["HR@3"] == pytest.approx(2 / 4)
    assert got.metrics["HR@10"] == 1.0
    assert got.metrics["MRR@10"] == pytest.approx((1 / 6 + 1 / 3 + 1 / 3 + 1 / 6) / 4)
    assert (got.nonfinite_target_scores, got.users_with_nonfinite_scores) == (2, 4)
    # A non-finite score on an item that is not a candidate (u0's seen item 1) is not counted.
    scorer = TableScorer(4, 6)
    scorer.table[0, 1] = torch.nan
    clean = Evaluator(repeats, "test", "full", ks=(1,)).run(scorer)
    assert (clean.nonfinite_target_scores, clean.users_with_nonfinite_scores) == (0, 0)


def test_nonfinite_scores_under_the_sampled_protocol(repeats) -> None:
    scorer = TableScorer(4, 6)
    scorer.table[torch.arange(4), torch.from_numpy(repeats.test)] = 100.0  # each held-out item scores best ...
    scorer.table[0, 6] = torch.nan  # ... but u0's, NaN: below its negative
    scorer.table[1, [1, 2, 3, 4, 6]] = torch.nan  # u1's negative (3 or 6) is NaN: above its item 5
    got = Evaluator(repeats, "test", "sampled", ks=(1,), num_negatives=1).run(scorer)
    assert got.metrics["HR@1"] == pytest.approx(2 / 4)  # ignoring the NaNs would give 1.0
    assert (got.nonfinite_target_scores, got.users_with_nonfinite_scores) == (1, 2)


def test_progress_bar_only_on_a_terminal(split, monkeypatch) -> None:
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        Evaluator(split, "test", "full").run(RandomScorer(split.num_users, split.num_items), batch_size=50)
        assert ("full test" in stream.getvalue()) is shown
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    Evaluator(split, "test", "full").run(RandomScorer(split.num_users, split.num_items), progress=False)
    assert stream.getvalue() == ""


def test_evaluate_command_reports_repeats(tmp_path, capsys) -> None:
    from sasrec.cli import main
    from sasrec.data.dataset import write_sasrec_file

    data = tmp_path / "repeats.txt"
    write_sasrec_file(Sequences.from_lists(REPEATS, num_items=6), data)
    out_json = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--baseline",
                "pop",
                "--dataset",
                str(data),
                "--protocol",
                "full",
                "--k",
                "1",
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "held-out item already in the input history: 2 of 4 users (50.0%); each counts as a miss" in out
    saved = json.loads(out_json.read_text())
    assert (saved["held_out_in_history"], saved["held_out_in_history_share"]) == (2, 0.5)
    assert saved["nonfinite_target_scores"] == 0 and "warning" not in out


@pytest.mark.parametrize("filter_seen", [True, False])
@pytest.mark.parametrize("budget", [1 << 25, 40])  # 40: several item chunks per batch
def test_full_ranks_equal_the_obvious_count_with_ties_repeats_and_nonfinite_scores(filter_seen, budget, monkeypatch):
    """The one-pass count (all items >= target, less the non-candidates) gives each user the rank of the
    obvious per-user loop, on integer scores full of ties, histories with repeated items, and NaN/inf scores
    on candidates, on non-candidates and on held-out items."""
    monkeypatch.setattr(evaluate_module, "SCORE_BUDGET", budget)
    rng = np.random.default_rng(5)
    num_items = 30
    lists = [rng.integers(1, num_items + 1, size=rng.integers(3, 12)).tolist() for _ in range(60)]
    split = split_leave_one_out(Sequences.from_lists(lists, num_items=num_items))
    scorer = TableScorer(60, num_items)
    scorer.table = torch.from_numpy(rng.integers(0, 4, size=(60, num_items + 1)).astype(np.float32))
    spots = rng.integers(0, num_items + 1, size=(25, 2))
    spots[:, 0] = rng.choice(60, size=25, replace=False)
    for (u, i), value in zip(spots, [torch.nan, torch.inf, -torch.inf] * 9, strict=False):
        scorer.table[u, i] = value
    evaluator = Evaluator(split, "test", "full", filter_seen=filter_seen)
    rows = np.arange(len(evaluator.users))
    ranks, bad_target, bad_any = evaluator._ranks(scorer, rows, {})
    history, targets = split.history("test"), split.targets("test")
    for row, u in zip(rows, evaluator.users, strict=True):
        scores = scorer.table[u].numpy()
        target = scores[targets[u]] if np.isfinite(scores[targets[u]]) else np.finfo(np.float32).min
        excluded = {0, int(targets[u])} | (set(history[u].tolist()) if filter_seen else set())
        candidates = [scores[i] for i in range(num_items + 1) if i not in excluded]
        expected = sum(not np.isfinite(s) or s >= target for s in candidates)
        if filter_seen and targets[u] in history[u]:
            expected = evaluate_module.UNREACHABLE
        assert ranks[row] == expected, (u, ranks[row], expected)
        assert bad_target[row] == (not np.isfinite(scores[targets[u]]))
        assert bad_any[row] == (bad_target[row] or not all(np.isfinite(candidates)))
    assert bad_any.sum() >= 10  # the NaN/inf spots hit enough candidates to exercise the exact path


@pytest.mark.parametrize(
    "k, message",
    [
        ("100000000000000000000", "--k: must be an integer from 1 to 2147483647"),
        ("2147483647", "--k 2147483647: a cut-off can be at most the catalogue's"),
        ("1000", "--k 1000: a cut-off can be at most the catalogue's"),
    ],
)
def test_evaluate_refuses_a_cut_off_beyond_the_catalogue(tmp_path, capsys, k: str, message: str) -> None:
    from helpers import make_run

    from sasrec.cli import main

    run = make_run(tmp_path)
    assert main(["evaluate", "--run", str(run), "--protocol", "full", "--k", "10", k]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_huge_metric_k_is_refused_and_metrics_at_a_large_k_need_no_large_array() -> None:
    from sasrec.config import split_metric
    from sasrec.errors import ConfigError
    from sasrec.metrics import metric_sums

    with pytest.raises(ConfigError, match="K from 1 to 2147483647"):
        split_metric("NDCG@100000000000000000000")
    sums = metric_sums(np.array([0, 3, 7]), (2**31 - 1,))  # would allocate 16 GB if the ideal DCG were a full table
    assert sums["HR@2147483647"] == 3 and sums["NDCG@2147483647"] == pytest.approx(1 + 1 / np.log2(5) + 1 / np.log2(9))


def test_evaluate_a_run_with_its_own_number_of_negatives(tmp_path, capsys) -> None:
    from helpers import make_run

    from sasrec.cli import main

    run = make_run(tmp_path, eval_negatives=5)  # too few items for the default 100
    assert main(["evaluate", "--run", str(run), "--protocol", "sampled", "--k", "1", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    results = out if isinstance(out, list) else out.get("results", [out])
    assert [r["num_negatives"] for r in results if r.get("protocol") == "sampled"] == [5], out


def test_evaluate_prints_its_tables_without_a_leading_blank_line(tmp_path, capsys) -> None:
    from helpers import make_run

    from sasrec.cli import main

    run = make_run(tmp_path, eval_negatives=5)
    assert main(["evaluate", "--run", str(run), "--k", "1", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"best checkpoint of {run} (epoch ") and "\n\nfull protocol" in out
    assert "\n\nsampled protocol" in out


def test_model_scores_written_into_reused_buffers_are_the_models_own() -> None:
    """The evaluator reuses one score buffer across batches of different sizes: the scores written there
    equal SASRec.score's bit for bit, and the metrics do not depend on the batch size."""
    from sasrec.evaluate import ModelScorer
    from sasrec.model import SASRec

    torch.manual_seed(0)
    data = make_synthetic(num_users=90, num_items=70, seed=4)
    split = split_leave_one_out(data)
    model = SASRec(data.num_items, maxlen=20, hidden=16).eval()
    scorer = ModelScorer(model)
    state = scorer.encode(split.history("test"), np.arange(1, 12))
    items = torch.arange(data.num_items + 1)
    buffer = torch.full((11, data.num_items + 1), torch.nan)
    written = scorer.score(state, items, out=buffer)
    assert written.data_ptr() == buffer.data_ptr()
    assert torch.equal(written, model.score(state, items))
    evaluator = Evaluator(split, "test", "full")
    rows = np.arange(len(evaluator.users))
    whole = evaluator._ranks(scorer, rows, {})[0]
    buffers: dict[str, torch.Tensor] = {}
    batches = [evaluator._ranks(scorer, rows[lo : lo + 7], buffers)[0] for lo in range(0, len(rows), 7)]
    assert len(batches[-1]) < 7 and set(buffers) == {"scores", "above"}
    assert np.array_equal(np.concatenate(batches), whole)
    # A float64 model (or default dtype) scores without the float32 buffer, and ranks the same here.
    double = ModelScorer(model.double())
    assert np.array_equal(evaluator._ranks(double, rows, {})[0], whole)
