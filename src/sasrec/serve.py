"""HTTP service for recommendations: a FastAPI app around one :class:`sasrec.recommend.Recommender`.

Endpoints (interactive OpenAPI description at ``/docs``, schema at ``/openapi.json``):

* ``POST /recommend``: ``{"history": ["i1", "i2", ...], "k": 10, "exclude_seen": true, "unknown": "error"}``
  -> ``{"items": [{"item_id": "...", "score": 1.23}, ...], "skipped": [], "returned": 10, "note": null}``.
  ``returned`` is the number of items; when it is below ``k`` (fewer items are left to recommend once the
  history's are left out), ``note`` says so.
* ``POST /recommend/batch``: ``{"histories": [[...], [...]], "k": ..., ...}`` -> ``{"results": [...]}``, one
  forward pass per chunk of histories.
* ``GET /health``: ``{"status": "ok", "num_items": ..., "maxlen": ..., "max_batch": ..., "max_body_bytes": ...}``.

Item ids are the dataset's original ids (strings or integers in requests, strings in responses). Bad requests
get a 4xx with a JSON ``detail``: 422 for an empty history, unknown item ids (unless ``"unknown": "skip"``),
``k`` outside ``1..num_items`` or a body that does not match the schema; 413 for a batch larger than
``max_batch`` and for a body larger than ``max_body_bytes``. The body limit is enforced while the body arrives
(with or without ``Content-Length``), before anything parses it. Error messages never echo the request: a
422 names where the problem is and what it is, shows at most :data:`MAX_SHOWN_IDS` offending ids (each cut
to :data:`MAX_ID_CHARS` characters) and at most :data:`MAX_ERRORS` validation errors.

A score that is not finite (a diverged model) is never sent: such a request gets a 500 with a JSON ``detail``
saying so, never ``NaN`` or ``Infinity`` (which are not JSON) nor the ``null`` FastAPI would write for them.
Any other server-side failure is a 500 with a short JSON ``detail`` as well.

Concurrent single requests are micro-batched: one worker thread runs the model, and every request that
arrived while it was busy goes into its next forward pass (no waiting when the service is idle).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt, StrictStr

from sasrec.errors import SASRecError
from sasrec.recommend import Recommender, UnknownItemsError, shortfall_note

MAX_HISTORY = 10_000  # longest accepted history (only the last maxlen items are read)
DEFAULT_MAX_BATCH = 256
MIN_DEFAULT_BODY_BYTES = 1 << 20  # the default body limit is never below 1 MiB
MAX_ERRORS = 10  # validation errors listed in a 422
MAX_SHOWN_IDS = 10  # unknown item ids listed in a 422
MAX_ID_CHARS = 40  # characters of an item id quoted in an error
MAX_MESSAGE_CHARS = 300  # characters of any one message in an error response


ItemIdIn = StrictStr | StrictInt
_K = Field(10, ge=1, description="number of recommendations, 1..num_items")
_SEEN = Field(True, description="leave the history's items out of the recommendations")
_UNKNOWN = Field("error", description="unknown item ids: 'error' (422 naming them) or 'skip' them")


class RecommendRequest(BaseModel):
    history: list[ItemIdIn] = Field(
        min_length=1,
        max_length=MAX_HISTORY,
        description="original item ids, oldest first; only the last maxlen are read",
    )
    k: int = _K
    exclude_seen: bool = _SEEN
    unknown: Literal["error", "skip"] = _UNKNOWN


class BatchRequest(BaseModel):
    histories: list[list[ItemIdIn]] = Field(
        min_length=1, description="histories of original item ids, at most max_batch (see /health)"
    )
    k: int = _K
    exclude_seen: bool = _SEEN
    unknown: Literal["error", "skip"] = _UNKNOWN


class ScoredItem(BaseModel):
    item_id: str
    score: float


class Recommendations(BaseModel):
    items: list[ScoredItem] = Field(description="best first")
    skipped: list[str] = Field(default_factory=list, description="unknown item ids that were skipped")
    returned: int = Field(description="number of items: below k when fewer are left to recommend")
    note: str | None = Field(None, description="why fewer than k items were returned; null when k were")


class BatchRecommendations(BaseModel):
    results: list[Recommendations]


class Health(BaseModel):
    status: str
    num_items: int
    maxlen: int
    max_batch: int
    max_body_bytes: int


# ------------------------------------------------------------------------------ request size and errors

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def default_max_body_bytes(recommender: Recommender, max_batch: int) -> int:
    """Body limit that fits a full batch: ``max_batch`` histories of ``maxlen`` of the catalogue's longest ids.

    Each id is counted as its JSON string (ASCII-escaped) plus a separator; the result is at least 1 MiB, which
    also holds a single history of :data:`MAX_HISTORY` ids of up to about 100 characters.
    """
    longest = max(len(json.dumps(recommender.item_id(i))) for i in range(1, recommender.num_items + 1))
    full_batch = max_batch * (recommender.maxlen * (longest + 2) + 2) + 4096  # + brackets and other fields
    return max(MIN_DEFAULT_BODY_BYTES, full_batch)


class BodyLimit:
    """ASGI middleware: a request whose body exceeds ``max_bytes`` gets a 413 before the app sees any of it.

    A ``Content-Length`` above the limit is refused without reading the body; otherwise the body is read here,
    counting bytes as they arrive (chunked requests have no ``Content-Length``), and refused as soon as the
    count passes the limit. A body within the limit is handed to the app as one message.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()  # after the body: waits for the client to disconnect
            message, body = body, None
            return message

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = (
            f"request body is larger than the limit of {self.max_bytes} bytes (serve --max-body-bytes); "
            "split the batch or send shorter histories"
        )
        # The connection stays open: the server discards the rest of the body unparsed, so the client can finish
        # sending it and read this answer (closing now would reset the connection under a client still sending).
        response = JSONResponse({"detail": detail}, status_code=413)
        await response(scope, receive, send)


def _clip(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``str(text)`` cut to ``limit`` characters (marked with an ellipsis), so no error echoes a large input."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show_ids(ids: Sequence[str]) -> str:
    """The first :data:`MAX_SHOWN_IDS` ids, each quoted and clipped, and how many more there are."""
    shown = ", ".join(repr(_clip(i, MAX_ID_CHARS)) for i in ids[:MAX_SHOWN_IDS])
    return shown + (f" and {len(ids) - MAX_SHOWN_IDS} more" if len(ids) > MAX_SHOWN_IDS else "")


def _validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's validation errors without the ``input`` they quote: ``type``, ``loc`` and ``msg`` only.

    At most :data:`MAX_ERRORS` are kept (a last entry counts the rest); every string is clipped.
    """
    out = []
    for error in errors[:MAX_ERRORS]:
        message = error.get("msg", "")
        if error.get("type") == "json_invalid" and "error" in (error.get("ctx") or {}):
            message = f"{message}: {error['ctx']['error']}"  # the parser's reason; it never quotes the input
        out.append(
            {
                "type": _clip(error.get("type", ""), 50),
                "loc": [p if isinstance(p, int) else _clip(p, MAX_ID_CHARS) for p in error.get("loc", ())],
                "msg": _clip(message),
            }
        )
    if len(errors) > MAX_ERRORS:
        out.append(
            {"type": "too_many_errors", "loc": ["body"], "msg": f"{len(errors) - MAX_ERRORS} more errors not listed"}
        )
    return out


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


def create_app(
    recommender: Recommender,
    max_batch: int = DEFAULT_MAX_BATCH,
    micro_batch: bool = True,
    max_body_bytes: int | None = None,
) -> FastAPI:
    """The FastAPI app serving ``recommender``; ``max_batch`` bounds ``/recommend/batch`` requests.

    ``max_body_bytes`` bounds every request body (413 above it); None: :func:`default_max_body_bytes`.
    ``micro_batch=False`` runs each single request on its own (in FastAPI's thread pool) instead.
    """
    num_items = recommender.num_items
    if max_body_bytes is None:
        max_body_bytes = default_max_body_bytes(recommender, max_batch)

    batcher = MicroBatcher(recommender, max_batch) if micro_batch else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if batcher is not None:
            batcher.start()
        yield
        if batcher is not None:
            batcher.stop()

    app = FastAPI(
        title="SASRec recommendations",
        version="1.0",
        description="Next-item recommendations from a trained SASRec run, in the dataset's original item ids.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_errors(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # A JSON answer instead of Starlette's plain-text one; the traceback still goes to the server log.
        return JSONResponse({"detail": _clip(f"internal server error: {type(exc).__name__}: {exc}")}, status_code=500)

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
            message = (
                f"unknown item id(s) in the {where}: {_show_ids(exc.ids)}. They are not in the catalogue "
                'the run was trained on; remove them, or skip them ("unknown": "skip")'
            )
            raise HTTPException(
                422,
                {
                    "message": message,
                    "unknown_count": len(exc.ids),
                    "unknown_items": [_clip(i, MAX_ID_CHARS) for i in exc.ids[:MAX_SHOWN_IDS]],
                    "index": row,
                },
            ) from None
        if not encoded.ids:
            raise HTTPException(
                422,
                f"{where} is empty"
                if not encoded.skipped
                else f"{where} has no known item (all skipped: {_show_ids(encoded.skipped)})",
            )
        return encoded.ids, encoded.skipped

    def respond(items: list[tuple[str, float]], skipped: list[str], k: int, exclude_seen: bool) -> Recommendations:
        if not all(math.isfinite(score) for _, score in items):
            # NaN or infinity is not JSON; such a model has diverged and no ranking of it means anything.
            raise HTTPException(
                500,
                "the model produced non-finite scores (NaN or infinity): its weights have "
                "diverged; serve another checkpoint or retrain",
            )
        return Recommendations(
            items=[ScoredItem(item_id=i, score=s) for i, s in items],
            skipped=skipped,
            returned=len(items),
            note=shortfall_note(k, len(items), exclude_seen) or None,
        )

    @app.get("/health", response_model=Health, summary="Service status and model size")
    def health() -> Health:
        return Health(
            status="ok",
            num_items=num_items,
            maxlen=recommender.maxlen,
            max_batch=max_batch,
            max_body_bytes=max_body_bytes,
        )

    @app.post(
        "/recommend",
        response_model=Recommendations,
        summary="Top-k next items for one history",
        responses={
            413: {"description": "request body larger than max_body_bytes (see /health)"},
            422: {"description": "empty history, unknown item ids or k out of range"},
            500: {"description": "the model produced non-finite scores, or another server fault"},
        },
    )
    async def recommend(request: RecommendRequest) -> Recommendations:
        check_k(request.k)
        ids, skipped = encode(request.history, request.unknown)
        if batcher is not None:
            items = await batcher.submit(ids, request.k, request.exclude_seen)
        else:
            rows = await run_in_threadpool(recommender.recommend_ids, [ids], request.k, request.exclude_seen)
            items = rows[0]
        return respond(items, skipped, request.k, request.exclude_seen)

    @app.post(
        "/recommend/batch",
        response_model=BatchRecommendations,
        summary="Top-k next items for many histories (one forward pass per chunk)",
        responses={
            413: {
                "description": f"more than {max_batch} histories, or a request body larger "
                "than max_body_bytes (see /health)"
            },
            422: {"description": "an empty history, unknown item ids or k out of range"},
            500: {"description": "the model produced non-finite scores, or another server fault"},
        },
    )
    async def recommend_batch(request: BatchRequest) -> BatchRecommendations:
        if len(request.histories) > max_batch:
            raise HTTPException(
                413,
                f"batch of {len(request.histories)} histories is larger than the limit "
                f"of {max_batch}; split it into smaller requests",
            )
        check_k(request.k)
        encoded = [encode(h, request.unknown, row) for row, h in enumerate(request.histories)]
        results = await run_in_threadpool(
            recommender.recommend_ids, [ids for ids, _ in encoded], request.k, request.exclude_seen
        )
        return BatchRecommendations(
            results=[
                respond(items, skipped, request.k, request.exclude_seen)
                for items, (_, skipped) in zip(results, encoded, strict=True)
            ]
        )

    return app


# ------------------------------------------------------------------------------------------------- CLI


def serve_command(args: argparse.Namespace) -> int:
    """``sasrec serve`` (arguments: :mod:`sasrec.cli`)."""
    import uvicorn

    # Every option is checked before the model loads or a socket opens.
    if not 0 <= args.port <= 65535:
        raise SASRecError(f"--port must be between 0 and 65535 (0: any free port), got {args.port}")
    if args.max_batch < 1:
        raise SASRecError(f"--max-batch must be >= 1, got {args.max_batch}")
    max_body_bytes = args.max_body_bytes
    if max_body_bytes is not None and max_body_bytes < 1:
        raise SASRecError(f"--max-body-bytes must be >= 1, got {max_body_bytes}")
    recommender = Recommender.load(args.run, args.checkpoint, args.device, data_dir=args.data_dir)
    app = create_app(recommender, max_batch=args.max_batch, max_body_bytes=max_body_bytes)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
