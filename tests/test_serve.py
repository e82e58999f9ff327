"""The HTTP service (sasrec.serve) through FastAPI's TestClient: no real server, no network."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from test_recommend import ITEM_IDS, NUM_ITEMS, make_run

from sasrec.recommend import Recommender
from sasrec.serve import MicroBatcher, create_app

MAX_BATCH = 4


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    return Recommender.load(make_run(tmp_path_factory.mktemp("serve")))


@pytest.fixture(scope="module", params=[True, False], ids=["micro-batch", "thread-pool"])
def client(rec: Recommender, request: pytest.FixtureRequest):
    with TestClient(create_app(rec, max_batch=MAX_BATCH, micro_batch=request.param)) as c:
        yield c


def as_pairs(items: list[dict]) -> list[tuple[str, float]]:
    return [(r["item_id"], pytest.approx(r["score"], rel=1e-5)) for r in items]


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "num_items": NUM_ITEMS, "maxlen": 10,
                                            "max_batch": MAX_BATCH}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/recommend/batch", "/health"} <= set(paths)


def test_recommend_matches_api(client: TestClient, rec: Recommender) -> None:
    response = client.post("/recommend", json={"history": ["m101", "m105", "tab\there"], "k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["skipped"] == []
    assert as_pairs(body["items"]) == rec.recommend(["m101", "m105", "tab\there"], k=3)
    seen = client.post("/recommend", json={"history": ["m101"], "k": NUM_ITEMS, "exclude_seen": False}).json()
    assert len(seen["items"]) == NUM_ITEMS


def test_batch_matches_api(client: TestClient, rec: Recommender) -> None:
    histories = [["m101"], ITEM_IDS[:15], ["m110", "nope"]]
    response = client.post("/recommend/batch", json={"histories": histories, "k": 5, "unknown": "skip"})
    assert response.status_code == 200
    results = response.json()["results"]
    expected = rec.recommend_batch(histories, k=5, unknown="skip")
    assert [as_pairs(r["items"]) for r in results] == expected
    assert [r["skipped"] for r in results] == [[], [], ["nope"]]


def test_unknown_items_skip(client: TestClient, rec: Recommender) -> None:
    body = client.post("/recommend", json={"history": ["m101", "x1"], "k": 2, "unknown": "skip"}).json()
    assert body["skipped"] == ["x1"] and as_pairs(body["items"]) == rec.recommend(["m101"], k=2)


@pytest.mark.parametrize(("path", "payload", "status", "message"), [
    ("/recommend", {"history": []}, 422, "at least 1"),
    ("/recommend", {"history": ["m101", "x1", "x2"]}, 422, "x1"),
    ("/recommend", {"history": ["x1"], "unknown": "skip"}, 422, "no known item"),
    ("/recommend", {"history": ["m101"], "k": 0}, 422, "greater than or equal to 1"),
    ("/recommend", {"history": ["m101"], "k": NUM_ITEMS + 1}, 422, f"number of items ({NUM_ITEMS})"),
    ("/recommend", {"history": "m101"}, 422, "list"),
    ("/recommend", {"history": [1.5]}, 422, "history"),
    ("/recommend", {"history": ["m101"], "unknown": "guess"}, 422, "'error' or 'skip'"),
    ("/recommend", {}, 422, "history"),
    ("/recommend/batch", {"histories": []}, 422, "at least 1"),
    ("/recommend/batch", {"histories": [["m101"], []]}, 422, "history at index 1 is empty"),
    ("/recommend/batch", {"histories": [["m101"], ["m102", "zz"]]}, 422, "history at index 1"),
    ("/recommend/batch", {"histories": [["m101"]] * (MAX_BATCH + 1)}, 413, "split it"),
    ("/recommend/batch", {"histories": [["m101"]], "k": NUM_ITEMS + 1}, 422, "between 1 and"),
])
def test_bad_requests(client: TestClient, path: str, payload: dict, status: int, message: str) -> None:
    response = client.post(path, json=payload)
    assert response.status_code == status, response.text
    assert message in response.text


def test_unknown_items_are_listed(client: TestClient) -> None:
    detail = client.post("/recommend", json={"history": ["m101", "x1", 7]}).json()["detail"]
    assert detail["unknown_items"] == ["x1", "7"]


def test_micro_batcher_groups_concurrent_requests(rec: Recommender) -> None:
    batcher = MicroBatcher(rec, max_batch=8)
    histories = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10], [11], [12, 13]] * 3
    keys = [(3, True), (3, True), (5, False)] * 6

    async def run_all() -> list:
        jobs = [batcher.submit(h, k, ex) for h, (k, ex) in zip(histories, keys, strict=True)]
        return await asyncio.gather(*jobs)

    try:
        results = asyncio.run(run_all())
    finally:
        batcher.stop()
    for h, (k, ex), got in zip(histories, keys, results, strict=True):
        assert got == [(i, pytest.approx(s, rel=1e-5)) for i, s in rec.recommend_ids([h], k, ex)[0]]
