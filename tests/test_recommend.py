"""The recommendation API (sasrec.recommend) and the `sasrec recommend` command, on the tiny run directory
of ``helpers.make_run`` (random-init model, dataset file and id maps)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ITEM_IDS, MAXLEN, NUM_ITEMS, USER_IDS, make_run, tiny_sequences, write_map

from sasrec.checkpoint import load_checkpoint, save_checkpoint
from sasrec.cli import main
from sasrec.config import Config
from sasrec.data.dataset import Sequences, file_sha256, read_sasrec_file
from sasrec.errors import ConfigError, SASRecError
from sasrec.model import SASRec
from sasrec.recommend import Recommender, UnknownItemsError, read_id_map
from sasrec.runs import build_model, write_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("rec"))


@pytest.fixture(scope="module")
def rec(run_dir: Path) -> Recommender:
    return Recommender.load(run_dir)


def reference_scores(rec: Recommender, internal: list[int]) -> np.ndarray:
    """Scores (num_items + 1,) computed straight from the model on the last maxlen items."""
    with torch.no_grad():
        seq = torch.tensor([internal[-MAXLEN:]])
        return rec.model.score(rec.model.last_hidden(seq))[0].numpy()


# ------------------------------------------------------------------------------------------------ API


def test_id_map_round_trip_and_unescape(run_dir: Path, rec: Recommender) -> None:
    assert read_id_map(run_dir.parent / "data" / "tiny.item_map.tsv") == ITEM_IDS
    assert rec.item_id(NUM_ITEMS) == "tab\there"
    assert rec.item_index("m101") == 1 and rec.item_index("1") is None


def test_recommend_returns_original_ids_in_score_order(rec: Recommender) -> None:
    history = ["m103", "m105", "tab\there"]
    got = rec.recommend(history, k=5)
    scores = reference_scores(rec, [3, 5, NUM_ITEMS])
    scores[[0, 3, 5, NUM_ITEMS]] = -np.inf
    expected = np.argsort(-scores, kind="stable")[:5]
    assert [item for item, _ in got] == [ITEM_IDS[i - 1] for i in expected]
    np.testing.assert_allclose([s for _, s in got], scores[expected], rtol=1e-5)


def test_seen_items_excluded_and_padding_never_recommended(rec: Recommender) -> None:
    history = ["m101", "m102", "m102", "m107"]
    everything = rec.recommend(history, k=NUM_ITEMS, exclude_seen=False)
    assert len(everything) == NUM_ITEMS and {i for i, _ in everything} == set(ITEM_IDS)
    unseen = rec.recommend(history, k=NUM_ITEMS)
    assert len(unseen) == NUM_ITEMS - 3
    assert not {"m101", "m102", "m107"} & {i for i, _ in unseen}
    assert "<pad>" not in {i for i, _ in everything}


def test_long_history_keeps_most_recent_items(rec: Recommender) -> None:
    recent = ITEM_IDS[5:15]  # exactly maxlen items
    a = rec.recommend(ITEM_IDS[:5] + recent, k=NUM_ITEMS, exclude_seen=False)
    b = rec.recommend(["m119", "m118"] + recent, k=NUM_ITEMS, exclude_seen=False)
    c = rec.recommend(recent, k=NUM_ITEMS, exclude_seen=False)
    assert [i for i, _ in a] == [i for i, _ in b] == [i for i, _ in c]
    np.testing.assert_allclose([s for _, s in a], [s for _, s in c], rtol=1e-6)
    # ... but the older items are still excluded as seen
    assert not set(ITEM_IDS[:15]) & {i for i, _ in rec.recommend(ITEM_IDS[:15], k=5)}


def test_unknown_items_error_or_skip(rec: Recommender) -> None:
    with pytest.raises(UnknownItemsError, match="'nope'.*'m999'") as info:
        rec.recommend(["m101", "nope", "m999"])
    assert info.value.ids == ["nope", "m999"]
    assert isinstance(info.value, SASRecError)
    assert rec.recommend(["m101", "nope"], unknown="skip") == rec.recommend(["m101"])
    with pytest.raises(SASRecError, match="no known item"):
        rec.recommend(["nope"], unknown="skip")
    with pytest.raises(SASRecError, match="empty"):
        rec.recommend([])
    with pytest.raises(ConfigError, match="between 1 and"):
        rec.recommend(["m101"], k=NUM_ITEMS + 1)
    with pytest.raises(ConfigError, match="between 1 and"):
        rec.recommend(["m101"], k=0)


def test_batch_matches_single(rec: Recommender) -> None:
    histories = [["m101"], ITEM_IDS[:15], ["m110", "m104", "m110"], ITEM_IDS[3:6]]
    rec_small = Recommender(rec.model, ITEM_IDS, chunk_size=3)  # forces two chunks
    batch = rec_small.recommend_batch(histories, k=4)
    for history, row in zip(histories, batch, strict=True):
        single = rec.recommend(history, k=4)
        assert [i for i, _ in row] == [i for i, _ in single]
        np.testing.assert_allclose([s for _, s in row], [s for _, s in single], rtol=1e-5, atol=1e-6)
    with pytest.raises(UnknownItemsError, match="index 2"):
        rec.recommend_batch([["m101"], ["m102"], ["zzz"]])


def test_recommend_user_uses_full_sequence(rec: Recommender) -> None:
    seq = tiny_sequences()
    history = [ITEM_IDS[i - 1] for i in seq[2].tolist()]
    assert rec.user_history("carol") == history
    assert rec.recommend_user("carol", k=3) == rec.recommend(history, k=3)
    with pytest.raises(SASRecError, match="unknown user 'zoe'"):
        rec.recommend_user("zoe")


def test_similar_items(rec: Recommender) -> None:
    got = rec.similar_items("m105", k=4)
    assert len(got) == 4 and "m105" not in {i for i, _ in got}
    weight = torch.nn.functional.normalize(rec.model.item_emb.weight.detach(), dim=1)
    cos = (weight @ weight[5]).numpy()
    cos[[0, 5]] = -np.inf
    expected = np.argsort(-cos, kind="stable")[:4]
    assert [i for i, _ in got] == [ITEM_IDS[i - 1] for i in expected]
    assert len(rec.similar_items("m105", k=NUM_ITEMS)) == NUM_ITEMS - 1
    with pytest.raises(UnknownItemsError):
        rec.similar_items("nope")


def test_without_maps_ids_are_the_datasets_integers(tmp_path: Path) -> None:
    rec = Recommender.load(make_run(tmp_path, maps=False))
    got = rec.recommend([3, "4"], k=3)
    assert all(i.isdigit() and 1 <= int(i) <= NUM_ITEMS for i, _ in got)
    assert rec.recommend([3, 4], k=3) == got
    assert rec.recommend_user(1, k=2) == rec.recommend_user("1", k=2)
    with pytest.raises(UnknownItemsError):
        rec.recommend([0])
    with pytest.raises(UnknownItemsError):
        rec.recommend(["m101"])


def test_missing_dataset_is_reported_and_data_dir_overrides(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)
    with pytest.raises(SASRecError, match="data_dir"):
        Recommender.load(run_dir)
    rec = Recommender.load(run_dir, data_dir=moved)
    # The user's history and the id maps are read from the moved folder: alice is user 1, items 1..15.
    alice = [ITEM_IDS[i - 1] for i in tiny_sequences()[0].tolist()]
    assert rec.user_history("alice") == alice
    assert rec.recommend_user("alice", k=2) == rec.recommend(alice, k=2)


def test_trained_run(tmp_path: Path) -> None:
    """End to end with a run written by sasrec.train (1 epoch)."""
    from sasrec.config import resolve
    from sasrec.train import train

    make_run(tmp_path)  # writes the data files
    config = resolve(
        {
            "dataset": str(tmp_path / "data" / "tiny.txt"),
            "epochs": 1,
            "hidden": 8,
            "maxlen": 10,
            "quiet": True,
            "eval_negatives": 5,
            "out": str(tmp_path / "trained"),
        }
    )
    train(config)
    rec = Recommender.load(tmp_path / "trained")
    # The model is the best checkpoint training wrote, not a fresh initialisation ...
    best = build_model(config, NUM_ITEMS)
    load_checkpoint(tmp_path / "trained" / "best.safetensors", best)
    for name, tensor in best.state_dict().items():
        torch.testing.assert_close(rec.model.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    # ... the user and item maps next to the dataset are found, and the list is that model's top 3 unseen.
    bob = tiny_sequences()[1].tolist()
    assert rec.user_history("bob") == [ITEM_IDS[i - 1] for i in bob]
    scores = reference_scores(rec, bob)
    scores[[0, *bob]] = -np.inf
    expected = np.argsort(-scores, kind="stable")[:3]
    got = rec.recommend_user("bob", k=3)
    assert [i for i, _ in got] == [ITEM_IDS[i - 1] for i in expected]
    np.testing.assert_allclose([s for _, s in got], scores[expected], rtol=1e-5)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_json_and_table(run_dir: Path, rec: Recommender, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["recommend", "--run", str(run_dir), "--history", "m101, m102,m103", "--k", "3", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in out["items"]] == [1, 2, 3]
    assert [(r["item_id"], r["score"]) for r in out["items"]] == [
        (i, pytest.approx(s, rel=1e-5)) for i, s in rec.recommend(["m101", "m102", "m103"], k=3)
    ]

    assert main(["recommend", "--run", str(run_dir), "--user", "alice", "--k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "item", "id", "score"] and len(lines) == 3
    assert lines[1].split()[:2] == ["1", rec.recommend_user("alice", k=2)[0][0]]


def test_cli_seen_and_unknown(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["recommend", "--run", str(run_dir), "--k", str(NUM_ITEMS), "--json"]
    assert main([*args, "--history", "m101,m102", "--include-seen"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == NUM_ITEMS
    assert main([*args, "--history", "m101,bogus"]) == 2
    assert "'bogus'" in capsys.readouterr().err
    assert main([*args, "--history", "m101,bogus", "--skip-unknown"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["skipped"] == ["bogus"] and len(out["items"]) == NUM_ITEMS - 1
    assert main(["recommend", "--run", str(run_dir), "--user", "zoe"]) == 2
    assert "unknown user" in capsys.readouterr().err
    assert main(["recommend", "--run", str(run_dir), "--history", "m101", "--k", "0"]) == 2


# -------------------------------------------------------------- agreement with evaluation, non-finite scores


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_evaluation_hits_are_what_recommend_shows(exclude_seen: bool) -> None:
    """On a log full of repeats, a full-protocol hit@k is exactly "recommend's top k holds the held-out item"
    (filter_seen <-> exclude_seen): a held-out item already in the history is a miss for both."""
    from sasrec.data.dataset import split_leave_one_out
    from sasrec.evaluate import Evaluator, ModelScorer

    rng = np.random.default_rng(1)
    seqs = Sequences.from_lists([list(rng.integers(1, 16, size=rng.integers(4, 14))) for _ in range(30)], 15)
    split = split_leave_one_out(seqs)
    torch.manual_seed(0)
    model = SASRec(15, maxlen=8, hidden=8, num_blocks=1, num_heads=1, dropout=0.0).eval()
    rec, scorer = Recommender(model), ModelScorer(model)
    evaluator = Evaluator(split, "test", "full", ks=(5,), filter_seen=exclude_seen)
    history = split.history("test")
    shown_hits = repeats = 0
    for u in evaluator.users:
        shown = {int(i) for i, _ in rec.recommend_ids([history[u].tolist()], k=5, exclude_seen=exclude_seen)[0]}
        hit = evaluator.run(scorer, users=np.array([u])).metrics["HR@5"]
        assert hit == float(split.test[u] in shown), u
        shown_hits += int(hit)
        repeats += int(split.test[u] in history[u])
    assert shown_hits > 0 and repeats > 5  # the case is not vacuous
    assert evaluator.run(scorer).held_out_in_history == repeats


def poisoned_run(root: Path, item: int | None = None) -> tuple[Path, SASRec]:
    """A run whose checkpoint holds NaN weights: every weight, or only item ``item``'s embedding row."""
    run_dir = make_run(root)
    model = SASRec(NUM_ITEMS, maxlen=MAXLEN, hidden=8, num_blocks=2, num_heads=2, dropout=0.0)
    load_checkpoint(run_dir / "best.safetensors", model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if item is None:
                param.fill_(torch.nan)
            elif name == "item_emb.weight":
                param[item] = torch.nan
    save_checkpoint(run_dir / "best.safetensors", model, {"epoch": 0, "num_items": NUM_ITEMS})
    return run_dir, model


@pytest.mark.parametrize("item", [None, 4])
def test_diverged_model_is_refused_everywhere(
    tmp_path: Path, item: int | None, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, model = poisoned_run(tmp_path, item)
    with pytest.raises(SASRecError, match="non-finite weights.*lower --lr"):
        Recommender.load(run_dir)  # a diverged checkpoint is refused when the run is loaded
    # A model handed over directly (not through a run directory) is refused at every call.
    rec = Recommender(model, ITEM_IDS, USER_IDS, lambda: read_sasrec_file(tmp_path / "data" / "tiny.txt"))
    calls = [
        lambda: rec.recommend(["m101", "m104"], k=3),  # m104 (item 4) seen: still refused
        lambda: rec.recommend(["m101"], k=3, exclude_seen=False),
        lambda: rec.recommend_batch([["m101"], ["m102"]], k=3),
        lambda: rec.recommend_ids([[1, 2]], k=3),
        lambda: rec.recommend_user("alice", k=3),
        lambda: rec.score_ids([[1]]),
        lambda: rec.similar_items("m101", k=3),
    ]
    for call in calls:
        with pytest.raises(SASRecError, match="NaN or infinity.*lower --lr") as info:
            call()
        assert type(info.value).__name__ == "DivergedModelError"  # for callers (the service) to catch
    assert main(["recommend", "--run", str(run_dir), "--history", "m101", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "diverged" in captured.err and captured.err.count("error:") == 1


def test_healthy_model_scores_are_finite(rec: Recommender) -> None:
    # Seen items are left out as -inf internally; none of those leak into what is returned.
    for _, score in rec.recommend(ITEM_IDS[:15], k=NUM_ITEMS) + rec.similar_items("m101", k=NUM_ITEMS):
        assert np.isfinite(score)


# -------------------------------------------------------------------------------- ids with commas in the CLI


def test_cli_item_ids_with_commas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = make_run(tmp_path, maps=False)
    ids = [f"film {i}, part {i % 3}" for i in range(1, NUM_ITEMS + 1)]  # every id holds a comma and a space
    write_map(tmp_path / "data" / "tiny.item_map.tsv", ids)
    rec = Recommender.load(run_dir)
    history = [ids[4], ids[0], ids[7]]
    expected = [(i, pytest.approx(s, rel=1e-5)) for i, s in rec.recommend(history, k=4)]
    args = ["recommend", "--run", str(run_dir), "--k", "4", "--json"]

    def shown() -> list[tuple[str, float]]:
        return [(r["item_id"], r["score"]) for r in json.loads(capsys.readouterr().out)["items"]]

    assert main([*args, *(a for i in history for a in ("--item", i))]) == 0
    assert shown() == expected
    lines = tmp_path / "history.txt"
    lines.write_text("\n".join(history) + "\r\n\n", encoding="utf-8")  # CRLF and a blank line are tolerated
    assert main([*args, "--history-file", str(lines)]) == 0
    assert shown() == expected
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(history)))
    assert main([*args, "--history-file", "-"]) == 0
    assert shown() == expected
    # --history splits on commas, so these ids come out as pieces that are not in the catalogue.
    assert main([*args, "--history", ids[4]]) == 2
    assert "'film 5'" in capsys.readouterr().err
    assert main([*args, "--history-file", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt: cannot read it" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n")
    assert main([*args, "--history-file", str(tmp_path / "empty.txt")]) == 2
    assert "no item id" in capsys.readouterr().err
    assert main([*args, "--item", ids[0], "--history", "1"]) == 2  # one way of giving the history at a time
    assert "not allowed with" in capsys.readouterr().err


def test_user_ids_of_a_file_with_gaps_are_the_files_own(tmp_path: Path) -> None:
    """Without a user map, `--user 7` is the file's user 7, even when user ids have gaps."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "gaps.txt").write_text(
        "".join(f"{u} {i}\n" for u in (3, 7, 20) for i in range(1, NUM_ITEMS + 1) if (i + u) % 3 == 0)
    )
    cfg = Config(dataset=str(data / "gaps.txt"), maxlen=MAXLEN, hidden=8, num_blocks=1, num_heads=1, dropout=0.0)
    model = SASRec(NUM_ITEMS, maxlen=MAXLEN, hidden=8, num_blocks=1, num_heads=1, dropout=0.0)
    rec = Recommender.load(write_run(tmp_path / "run", cfg, model, f"sha256:{file_sha256(data / 'gaps.txt')}").path)
    assert rec.user_history("7") == [str(i) for i in range(1, NUM_ITEMS + 1) if (i + 7) % 3 == 0]
    with pytest.raises(SASRecError, match="unknown user '2'"):
        rec.user_history("2")  # the second row is user 7, not user 2
