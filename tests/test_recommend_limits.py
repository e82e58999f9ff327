"""What recommend, the service and the ONNX graph do at the edges: fewer than k items left, an empty history,
and integer ids written with leading zeros."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import ITEM_IDS, NUM_ITEMS, make_run, write_map

from sasrec.cli import main
from sasrec.errors import SASRecError
from sasrec.recommend import Recommender
from sasrec.serve import create_app


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("limits"))


def recommend_json(run: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict, str]:
    assert main(["recommend", "--run", str(run), "--json", *args]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


# ------------------------------------------------------------------------------------------ fewer than k


def test_recommend_cli_says_when_fewer_than_k_items_are_left(run_dir: Path, capsys) -> None:
    # 20 items, 2 of them in the history: 18 can be recommended, 19 are asked for.
    history = ",".join(ITEM_IDS[:2])
    out, err = recommend_json(run_dir, capsys, "--history", history, "--k", str(NUM_ITEMS - 1))
    assert (out["requested"], out["returned"], len(out["items"])) == (NUM_ITEMS - 1, NUM_ITEMS - 2, NUM_ITEMS - 2)
    assert err.strip() == (
        f"note: returned {NUM_ITEMS - 2} of the {NUM_ITEMS - 1} items asked for: only {NUM_ITEMS - 2} are left "
        "to recommend (the history's items are left out)"
    )
    assert main(["recommend", "--run", str(run_dir), "--history", history, "--k", str(NUM_ITEMS)]) == 0
    table = capsys.readouterr()
    assert len(table.out.strip().splitlines()) == 1 + NUM_ITEMS - 2 and "returned 18 of the 20" in table.err


def test_recommend_cli_is_quiet_when_k_items_come_back(run_dir: Path, capsys) -> None:
    out, err = recommend_json(run_dir, capsys, "--history", ITEM_IDS[0], "--k", "5")
    assert (out["requested"], out["returned"], len(out["items"])) == (5, 5, 5) and err == ""


@pytest.mark.parametrize("batch", [False, True])
def test_service_says_when_fewer_than_k_items_are_left(run_dir: Path, batch: bool) -> None:
    with TestClient(create_app(Recommender.load(run_dir))) as client:
        payload = {"k": NUM_ITEMS, "exclude_seen": True}
        histories = [ITEM_IDS[:3], ITEM_IDS[:1]]
        if batch:
            answers = client.post("/recommend/batch", json={**payload, "histories": histories}).json()["results"]
        else:
            answers = [client.post("/recommend", json={**payload, "history": h}).json() for h in histories]
        for answer, history in zip(answers, histories, strict=True):
            left = NUM_ITEMS - len(history)
            assert answer["returned"] == len(answer["items"]) == left
            assert f"returned {left} of the {NUM_ITEMS} items" in answer["note"]
        full = client.post("/recommend", json={"history": ITEM_IDS[:1], "k": 3}).json()
        assert full["returned"] == 3 and full["note"] is None


@pytest.mark.parametrize("who", [["--user", "alice"], ["--history", ITEM_IDS[0]]])
def test_recommend_cli_refuses_k_above_the_catalogue_naming_the_option(run_dir: Path, capsys, who) -> None:
    assert main(["recommend", "--run", str(run_dir), *who, "--k", str(NUM_ITEMS + 1)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"error: --k {NUM_ITEMS + 1}: a cut-off can be at most the catalogue's {NUM_ITEMS} items; lower it\n"
    )


# --------------------------------------------------------------------------------------------- empty history


def test_empty_history_is_refused_by_api_cli_and_service(run_dir: Path, capsys) -> None:
    rec = Recommender.load(run_dir)
    with pytest.raises(SASRecError, match="is empty"):
        rec.recommend([], k=3)
    with pytest.raises(SASRecError, match="no known item"):
        rec.recommend(["nope"], k=3, unknown="skip")
    assert main(["recommend", "--run", str(run_dir), "--history", " , "]) == 2
    assert "--history is empty" in capsys.readouterr().err
    with TestClient(create_app(rec)) as client:
        answer = client.post("/recommend", json={"history": ["nope"], "k": 3, "unknown": "skip"})
        assert answer.status_code == 422 and "no known item" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("history", "where"),
    [
        (f"{ITEM_IDS[0]},,{ITEM_IDS[1]}", "the id at position 2 (of 3) is"),
        (f"{ITEM_IDS[0]},{ITEM_IDS[1]},", "the id at position 3 (of 3) is"),
        (f", {ITEM_IDS[0]}, ,{ITEM_IDS[1]}", "the ids at positions 1, 3 (of 4) are"),
    ],
)
def test_recommend_cli_refuses_an_empty_id_in_history_naming_its_position(run_dir, capsys, history, where) -> None:
    assert main(["recommend", "--run", str(run_dir), "--history", history]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: --history {history!r}: {where} empty; ")
    assert captured.err.count("\n") == 1


def test_onnx_flags_an_empty_history_and_ranks_nothing(run_dir: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = tmp_path / "model.onnx"
    assert main(["export", "--run", str(run_dir), "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    # Length 0 (T = 0) failed inside the graph; padding only, and only invalid ids, are empty too.
    for histories in (np.zeros((2, 0), dtype=np.int64), np.array([[0, 0], [-1, NUM_ITEMS + 1]])):
        scores, read, _skipped = session.run(None, {"histories": histories})
        assert scores.shape == (2, NUM_ITEMS + 1) and read.tolist() == [0, 0]
        assert (scores == 0).all()  # a tie: no item is recommended over another
    scores, read, _ = session.run(None, {"histories": np.array([[0, 3]])})
    assert read.tolist() == [1] and np.ptp(scores[0, 1:]) > 0


# ------------------------------------------------------------------------------------------- leading zeros


def test_leading_zeros_without_a_map_are_one_integer_id(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path, maps=False)
    answers = [recommend_json(run, capsys, "--history", h, "--k", "3")[0]["items"] for h in ("3,7", "03,007")]
    assert answers[0] == answers[1]
    users = [recommend_json(run, capsys, "--user", u, "--k", "3")[0]["items"] for u in ("3", "03")]
    assert users[0] == users[1]
    with TestClient(create_app(Recommender.load(run))) as client:
        served = [client.post("/recommend", json={"history": h, "k": 3}).json()["items"] for h in (["3"], ["003"])]
    assert served[0] == served[1]


def test_leading_zeros_in_an_integer_map_are_one_id(tmp_path: Path, capsys) -> None:
    # What preprocess writes for integer-id formats (movielens-dat, sasrec): canonical integers.
    run = make_run(tmp_path, maps=True)
    write_map(tmp_path / "data" / "tiny.item_map.tsv", [str(10 * i) for i in range(1, NUM_ITEMS + 1)])
    write_map(tmp_path / "data" / "tiny.user_map.tsv", [str(i) for i in range(101, 107)])
    rec = Recommender.load(run)
    assert rec.item_index("030") == rec.item_index("30") == rec.item_index(30) == 3
    assert rec.recommend(["0010", "20"], k=4) == rec.recommend(["10", "020"], k=4)
    assert rec.user_index("0102") == rec.user_index("102") == 1
    out, _ = recommend_json(run, capsys, "--user", "0101", "--k", "2")
    assert out["items"] == recommend_json(run, capsys, "--user", "101", "--k", "2")[0]["items"]


def test_text_ids_match_exactly(tmp_path: Path) -> None:
    # A map with text ids (any id not a canonical integer): "03" and "3" are different ids, as in the raw file.
    run = make_run(tmp_path, maps=True)
    ids = ["03", "3"] + [f"x{i}" for i in range(3, NUM_ITEMS + 1)]
    write_map(tmp_path / "data" / "tiny.item_map.tsv", ids)
    rec = Recommender.load(run)
    assert (rec.item_index("03"), rec.item_index("3"), rec.item_index("003")) == (1, 2, None)
