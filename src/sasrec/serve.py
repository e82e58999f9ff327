"""HTTP service for recommendations: a FastAPI app around one :class:`sasrec.recommend.Recommender`.

Endpoints (interactive OpenAPI description at ``/docs``, schema at ``/openapi.json``):

* ``POST /recommend``: ``{"history": ["i1", "i2", ...], "k": 10, "exclude_seen": true, "unknown": "error"}``
  -> ``{"items": [{"item_id": "...", "score": 1.23}, ...], "skipped": []}``.
* ``POST /recommend/batch``: ``{"histories": [[...], [...]], "k": ..., ...}`` -> ``{"results": [...]}``, one
  forward pass per chunk of histories.
* ``GET /health``: ``{"status": "ok", "num_items": ..., "maxlen": ..., "max_batch": ...}``.

Item ids are the dataset's original ids (strings or integers in requests, strings in responses). Bad requests
get a 4xx with a message: 422 for an empty history, unknown item ids (unless ``"unknown": "skip"``) or ``k``
outside ``1..num_items``; 413 for a batch larger than ``max_batch``.

Concurrent single requests are micro-batched: one worker thread runs the model, and every request that
arrived while it was busy goes into its next forward pass (no waiting when the service is idle).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, StrictInt, StrictStr

from sasrec.errors import SASRecError
from sasrec.recommend import Recommender, UnknownItemsError

MAX_HISTORY = 10_000  # longest accepted history (only the last maxlen items are read)
DEFAULT_MAX_BATCH = 256


ItemIdIn = StrictStr | StrictInt
_K = Field(10, ge=1, description="number of recommendations, 1..num_items")
_SEEN = Field(True, description="leave the history's items out of the recommendations")
_UNKNOWN = Field("error", description="unknown item ids: 'error' (422 naming them) or 'skip' them")


class RecommendRequest(BaseModel):
    history: list[ItemIdIn] = Field(
        min_length=1, max_length=MAX_HISTORY,
        description="original item ids, oldest first; only the last maxlen are read")
    k: int = _K
    exclude_seen: bool = _SEEN
    unknown: Literal["error", "skip"] = _UNKNOWN


class BatchRequest(BaseModel):
    histories: list[list[ItemIdIn]] = Field(
        min_length=1, description="histories of original item ids, at most max_batch (see /health)")
    k: int = _K
    exclude_seen: bool = _SEEN
    unknown: Literal["error", "skip"] = _UNKNOWN


class ScoredItem(BaseModel):
    item_id: str
    score: float


class Recommendations(BaseModel):
    items: list[ScoredItem] = Field(description="best first")
    skipped: list[str] = Field(default_factory=list, description="unknown item ids that were skipped")


class BatchRecommendations(BaseModel):
    results: list[Recommendations]


class Health(BaseModel):
    status: str
    num_items: int
    maxlen: int
    max_batch: int


class MicroBatcher:
    """Runs single-history requests in batches on one worker thread.

    The worker takes the oldest waiting request plus every other one already queued (up to ``max_batch``),
    groups them by ``(k, exclude_seen)`` and runs one forward pass per group.
    """

    def __init__(self, recommender: Recommender, max_batch: int = 64):
        self.recommender = recommender
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="sasrec-batcher", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join(timeout=5)
            self._thread = None

    async def submit(self, ids: list[int], k: int, exclude_seen: bool) -> list[tuple[str, float]]:
        """Top-``k`` for one internal-id history, computed in the worker's next batch."""
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._queue.put((ids, k, exclude_seen, loop, future))
        return await future

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            stop = False
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            groups: dict[tuple[int, bool], list[tuple]] = {}
            for job in jobs:
                groups.setdefault((job[1], job[2]), []).append(job)
            for (k, exclude_seen), group in groups.items():
                try:
                    outcome: Any = self.recommender.recommend_ids([j[0] for j in group], k, exclude_seen)
                    failed = False
                except Exception as exc:  # handed to the awaiting request
                    outcome, failed = exc, True
                for row, (_, _, _, loop, future) in enumerate(group):
                    value = outcome if failed else outcome[row]
                    with contextlib.suppress(RuntimeError):  # the request's event loop is gone
                        loop.call_soon_threadsafe(_resolve, future, value, failed)
            if stop:
                return


def _resolve(future: asyncio.Future, value: Any, failed: bool) -> None:
    if future.done():
        return
    if failed:
        future.set_exception(value)
    else:
        future.set_result(value)


def create_app(recommender: Recommender, max_batch: int = DEFAULT_MAX_BATCH,
               micro_batch: bool = True) -> FastAPI:
    """The FastAPI app serving ``recommender``; ``max_batch`` bounds ``/recommend/batch`` requests.

    ``micro_batch=False`` runs each single request on its own (in FastAPI's thread pool) instead.
    """
    num_items = recommender.num_items

    batcher = MicroBatcher(recommender, max_batch) if micro_batch else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if batcher is not None:
            batcher.start()
        yield
        if batcher is not None:
            batcher.stop()

    app = FastAPI(title="SASRec recommendations", version="1.0",
                  description="Next-item recommendations from a trained SASRec run, in the dataset's "
                              "original item ids.", lifespan=lifespan)

    def check_k(k: int) -> None:
        if not 1 <= k <= num_items:
            raise HTTPException(422, f"k must be between 1 and the number of items ({num_items}), got {k}")

    def encode(history: list, unknown: str, row: int | None = None) -> tuple[list[int], list[str]]:
        where = "history" if row is None else f"history at index {row}"
        if len(history) > MAX_HISTORY:
            raise HTTPException(422, f"{where} has {len(history)} items; at most {MAX_HISTORY} are accepted")
        try:
            encoded = recommender.encode(history, unknown)
        except UnknownItemsError as exc:
            raise HTTPException(422, {"message": str(UnknownItemsError(exc.ids, where)),
                                      "unknown_items": exc.ids, "index": row}) from None
        if not encoded.ids:
            raise HTTPException(422, f"{where} is empty" if not encoded.skipped else
                                f"{where} has no known item (all skipped: {encoded.skipped[:10]})")
        return encoded.ids, encoded.skipped

    def respond(items: list[tuple[str, float]], skipped: list[str]) -> Recommendations:
        return Recommendations(items=[ScoredItem(item_id=i, score=s) for i, s in items], skipped=skipped)

    @app.get("/health", response_model=Health, summary="Service status and model size")
    def health() -> Health:
        return Health(status="ok", num_items=num_items, maxlen=recommender.maxlen, max_batch=max_batch)

    @app.post("/recommend", response_model=Recommendations, summary="Top-k next items for one history",
              responses={422: {"description": "empty history, unknown item ids or k out of range"}})
    async def recommend(request: RecommendRequest) -> Recommendations:
        check_k(request.k)
        ids, skipped = encode(request.history, request.unknown)
        if batcher is not None:
            items = await batcher.submit(ids, request.k, request.exclude_seen)
        else:
            rows = await run_in_threadpool(recommender.recommend_ids, [ids], request.k, request.exclude_seen)
            items = rows[0]
        return respond(items, skipped)

    @app.post("/recommend/batch", response_model=BatchRecommendations,
              summary="Top-k next items for many histories (one forward pass per chunk)",
              responses={413: {"description": f"more than {max_batch} histories"},
                         422: {"description": "an empty history, unknown item ids or k out of range"}})
    async def recommend_batch(request: BatchRequest) -> BatchRecommendations:
        if len(request.histories) > max_batch:
            raise HTTPException(413, f"batch of {len(request.histories)} histories is larger than the limit "
                                     f"of {max_batch}; split it into smaller requests")
        check_k(request.k)
        encoded = [encode(h, request.unknown, row) for row, h in enumerate(request.histories)]
        results = await run_in_threadpool(recommender.recommend_ids, [ids for ids, _ in encoded], request.k,
                                          request.exclude_seen)
        return BatchRecommendations(results=[respond(items, skipped)
                                             for items, (_, skipped) in zip(results, encoded, strict=True)])

    return app


# ------------------------------------------------------------------------------------------------- CLI


def serve_command(args: argparse.Namespace) -> int:
    """``sasrec serve`` (arguments: :mod:`sasrec.cli`)."""
    import uvicorn

    if args.max_batch < 1:
        raise SASRecError(f"--max-batch must be >= 1, got {args.max_batch}")
    recommender = Recommender.load(args.run, args.checkpoint, args.device, data_dir=args.data_dir)
    app = create_app(recommender, max_batch=args.max_batch)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
