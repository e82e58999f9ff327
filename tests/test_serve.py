"""The HTTP service (sasrec.serve) through FastAPI's TestClient: no real server, no network."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import starlette.requests
import torch
from fastapi.testclient import TestClient
from helpers import ITEM_IDS, MAXLEN, NUM_ITEMS, make_run

from sasrec.cli import main
from sasrec.errors import SASRecError
from sasrec.recommend import Recommender
from sasrec.serve import MAX_ERRORS, MAX_SHOWN_IDS, BodyLimit, MicroBatcher, create_app, default_max_body_bytes

MAX_BATCH = 4
MiB = 1 << 20


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
    assert client.get("/health").json() == {
        "status": "ok",
        "num_items": NUM_ITEMS,
        "maxlen": 10,
        "max_batch": MAX_BATCH,
        "max_body_bytes": MiB,
    }
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


@pytest.mark.parametrize(
    ("path", "payload", "status", "message"),
    [
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
    ],
)
def test_bad_requests(client: TestClient, path: str, payload: dict, status: int, message: str) -> None:
    response = client.post(path, json=payload)
    assert response.status_code == status, response.text
    assert message in response.text


def test_unknown_items_are_listed(client: TestClient) -> None:
    detail = client.post("/recommend", json={"history": ["m101", "x1", 7]}).json()["detail"]
    assert detail["unknown_items"] == ["x1", "7"] and detail["unknown_count"] == 2


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


# ------------------------------------------------------------------------- request size and error size


def strict_json(text: str) -> object:
    """``json.loads`` that refuses NaN and Infinity, which are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def body_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of Starlette's Request.body, through which FastAPI reads every body it parses."""
    calls: list[int] = []
    original = starlette.requests.Request.body

    async def counted(self: starlette.requests.Request) -> bytes:
        calls.append(1)
        return await original(self)

    monkeypatch.setattr(starlette.requests.Request, "body", counted)
    return calls


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_oversized_body_gets_413_before_parsing(client: TestClient, body_reads: list[int], framing: str) -> None:
    body = json.dumps({"history": ["m101"] * 1_400_000}).encode()  # 10 MB
    assert len(body) > 10_000_000
    content = body if framing == "content-length" else iter([body])  # an iterator: no Content-Length
    start = time.perf_counter()
    response = client.post("/recommend", content=content, headers={"content-type": "application/json"})
    elapsed = time.perf_counter() - start
    assert response.status_code == 413, response.text[:300]
    assert (
        "content-length" in response.request.headers
        if framing == "content-length"
        else "content-length" not in response.request.headers
    )
    assert "--max-body-bytes" in response.json()["detail"] and len(response.content) < 300
    assert body_reads == []  # FastAPI never read, so never parsed, the body
    assert elapsed < 2.0  # 2.8-4 s before the limit, most of it parsing and echoing the body


def test_real_server_answers_413_to_a_client_still_sending(rec: Recommender) -> None:
    """Through uvicorn and a socket: the client that is still uploading reads the 413 (the connection is not
    reset under it) and can send its next request on the same connection."""
    uvicorn = pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    server = uvicorn.Server(
        uvicorn.Config(create_app(rec, max_batch=MAX_BATCH), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/recommend"
        body = json.dumps({"history": ["m101"] * 1_400_000}).encode()

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 1 << 16):
                yield body[i : i + (1 << 16)]

        async def send_all() -> list[int]:
            async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
                statuses = []
                for content in (body, chunks()):
                    response = await client.post(url, content=content, headers={"content-type": "application/json"})
                    assert len(response.content) < 300
                    statuses.append(response.status_code)
                statuses.append((await client.post(url, json={"history": ["m101"], "k": 2})).status_code)
                return statuses

        assert asyncio.run(send_all()) == [413, 413, 200]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_body_limit_counts_streamed_bytes() -> None:
    """A body without Content-Length is refused as soon as the bytes received pass the limit."""
    received, sent = [], []

    async def app(scope: dict, receive: object, send: object) -> None:
        raise AssertionError("the app must not be called")

    async def receive() -> dict:
        received.append(1)
        return {"type": "http.request", "body": b"x" * 100, "more_body": True}  # an endless stream

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/recommend", "headers": [], "query_string": b""}
    asyncio.run(BodyLimit(app, max_bytes=1000)(scope, receive, send))
    assert sent[0]["status"] == 413 and len(received) == 11


def test_configured_body_limit(rec: Recommender) -> None:
    with TestClient(create_app(rec, max_batch=MAX_BATCH, max_body_bytes=200)) as client:
        assert client.get("/health").json()["max_body_bytes"] == 200
        small = {"history": ITEM_IDS[:5], "k": 2}
        assert client.post("/recommend", json=small).status_code == 200
        assert client.post("/recommend", json={"history": ITEM_IDS * 3}).status_code == 413


def test_default_body_limit_fits_a_full_batch(rec: Recommender) -> None:
    assert default_max_body_bytes(rec, MAX_BATCH) == MiB
    big_batch = 20_000
    limit = default_max_body_bytes(rec, big_batch)
    longest = max(ITEM_IDS, key=lambda i: len(json.dumps(i)))
    full = json.dumps(
        {"histories": [[longest] * MAXLEN] * big_batch, "k": 10, "exclude_seen": True, "unknown": "error"}
    )
    assert MiB < len(full) <= limit < 2 * len(full)


@pytest.mark.parametrize(
    ("payload", "marker"),
    [
        ({"history": ["marker-id"] * 50_000}, "marker-id"),  # too long: 10,000 at most
        ({"history": [1.5] * 100_000}, "1.5"),  # 100,000 type errors
        ({"history": [f"marker-{i}" for i in range(10_000)]}, "marker-"),  # 10,000 unknown ids
        ({"history": ["marker" * 100_000]}, "marker" * 10),  # one unknown id of 600 kB
        ({"histories": [["m101"], ["marker"] * 5000]}, "marker"),
        ({"history": {"marker": 1}}, "marker"),  # not a list
    ],
)
def test_422_does_not_echo_the_input(client: TestClient, payload: dict, marker: str) -> None:
    path = "/recommend/batch" if "histories" in payload else "/recommend"
    response = client.post(path, json=payload)
    assert response.status_code == 422
    assert len(response.content) < 2000, len(response.content)
    assert '"input"' not in response.text
    # Unknown ids are named, but no more than MAX_SHOWN_IDS of them, in the message and in the list.
    assert response.text.count(marker) <= 2 * MAX_SHOWN_IDS, response.text


def test_validation_errors_keep_location_and_message(client: TestClient) -> None:
    detail = client.post("/recommend", json={"history": [1.5] * 50}).json()["detail"]
    assert len(detail) == MAX_ERRORS + 1
    assert detail[0]["loc"][:3] == ["body", "history", 0] and "valid string" in detail[0]["msg"]
    assert set(detail[0]) == {"type", "loc", "msg"}
    # Two errors per float: it is neither a string nor an integer.
    assert detail[-1] == {
        "type": "too_many_errors",
        "loc": ["body"],
        "msg": f"{2 * 50 - MAX_ERRORS} more errors not listed",
    }
    broken = client.post("/recommend", content=b'{"history": [', headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "JSON decode error" in broken.json()["detail"][0]["msg"]


# ---------------------------------------------------------------------------------- non-finite scores


class NaNRecommender(Recommender):
    """Returns a NaN and an infinite score whatever the history (what a diverged model could give)."""

    def recommend_ids(self, histories, k=10, exclude_seen=True):  # noqa: ANN001, ANN201
        return [[("m101", float("nan")), ("m102", float("inf"))][:k] for _ in histories]


class RefusingRecommender(Recommender):
    """Refuses every history, as a Recommender that detects a diverged model may."""

    def recommend_ids(self, histories, k=10, exclude_seen=True):  # noqa: ANN001, ANN201
        raise SASRecError("the model's scores are not finite")


@pytest.mark.parametrize("micro_batch", [True, False])
@pytest.mark.parametrize(
    ("fake", "message"), [(NaNRecommender, "non-finite scores"), (RefusingRecommender, "scores are not finite")]
)
def test_scoring_faults_give_a_json_500(rec: Recommender, micro_batch: bool, fake: type, message: str) -> None:
    app = create_app(fake(rec.model, ITEM_IDS), max_batch=MAX_BATCH, micro_batch=micro_batch)
    with TestClient(app, raise_server_exceptions=False) as client:
        for path, payload in [
            ("/recommend", {"history": ["m103"], "k": 2}),
            ("/recommend/batch", {"histories": [["m103"]], "k": 2}),
        ]:
            response = client.post(path, json=payload)
            assert response.status_code == 500
            assert message in strict_json(response.text)["detail"]


def test_diverged_model_never_sends_nan(tmp_path: Path) -> None:
    """Whatever the Recommender does with a NaN model (refuse, or drop NaN scores), the answer is JSON with no
    NaN, Infinity or null score (FastAPI writes NaN as null)."""
    diverged = Recommender.load(make_run(tmp_path))
    with torch.no_grad():
        diverged.model.item_emb.weight[1:] = float("nan")
    with TestClient(create_app(diverged, max_batch=MAX_BATCH), raise_server_exceptions=False) as client:
        for path, payload in [
            ("/recommend", {"history": ["m103"], "k": 3}),
            ("/recommend/batch", {"histories": [["m103"], ["m104"]], "k": 3}),
        ]:
            response = client.post(path, json=payload)
            assert response.headers["content-type"] == "application/json", response.text[:200]
            body = strict_json(response.text)
            assert response.status_code in (200, 500, 503), response.text[:200]
            if response.status_code != 200:
                assert body["detail"]
                continue
            results = body["results"] if "results" in body else [body]
            scores = [item["score"] for r in results for item in r["items"]]
            assert all(isinstance(s, float) and math.isfinite(s) for s in scores), scores  # not null either


# ------------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--port", "99999", "--port must be between 0 and 65535 (0: any free port)"),
        ("--port", "-1", "--port must be between 0 and 65535 (0: any free port)"),
        ("--port", "65536", "--port must be between 0 and 65535 (0: any free port)"),
        ("--max-body-bytes", "0", "--max-body-bytes must be >= 1"),
        ("--max-batch", "0", "--max-batch must be >= 1"),
    ],
)
def test_bad_serve_options(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
    message: str,
) -> None:
    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("started although an option is bad")

    monkeypatch.setattr(Recommender, "load", must_not_run)
    monkeypatch.setattr("uvicorn.run", must_not_run)
    assert main(["serve", "--run", str(tmp_path), option, value]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"error: {message}, got {value}"] and captured.out == ""
