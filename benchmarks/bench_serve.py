"""Serving throughput and latency: a real uvicorn server on 127.0.0.1, and the Python API in batches.

Usage: ``python benchmarks/bench_serve.py [--run RUN_DIR] [--requests 500] [--concurrency 4]``

Without ``--run`` it builds (trains nothing) a random-init model of MovieLens-1M's size: 3,416 items,
maxlen 200, d = 50, 2 blocks, saved as a run directory in a temporary folder. Then:

1. starts ``sasrec serve`` in a subprocess on 127.0.0.1 (a free ephemeral port; loopback traffic only),
   sends ``--requests`` single-history ``POST /recommend`` requests (k = 10) from ``--concurrency``
   concurrent clients, stopping early after ``--time-limit`` seconds, and reports requests/s and the
   p50/p99 latency seen by the clients;
2. sends one oversized body of ``--oversized-mb`` MB (0: skip), once with ``Content-Length`` and once chunked,
   and reports its status, response size and time, and the latency of small requests sent meanwhile (the
   service should refuse it with a short 413 before parsing it, without delaying the others);
3. times ``Recommender.recommend_batch`` on batches of ``--batch-size`` histories (histories/s).

Histories have MovieLens-1M-like lengths (log-normal, median about 100, at least 20, so many exceed maxlen and
are truncated to the most recent 200 items). The clients run on the same machine as the server, so on a small
machine they take CPU from it. Results are printed and written to ``results/bench_serve.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import torch

from sasrec.config import Config
from sasrec.recommend import Recommender
from sasrec.runs import build_model, write_run

ML1M_ITEMS, ML1M_MAXLEN = 3416, 200
ROOT = Path(__file__).resolve().parents[1]


def make_random_run(run_dir: Path, num_items: int = ML1M_ITEMS, maxlen: int = ML1M_MAXLEN) -> Path:
    """A run directory holding a random-init SASRec (config.json, fingerprint.json, best.safetensors)."""
    config = Config(dataset="synthetic", maxlen=maxlen, hidden=50, num_blocks=2, num_heads=1, dropout=0.2)
    torch.manual_seed(0)
    model = build_model(config, num_items)
    return write_run(run_dir, config, model, "random-init benchmark").path


def random_histories(rng: np.random.Generator, rec: Recommender, n: int) -> list[list[str]]:
    """``n`` histories of original item ids with MovieLens-1M-like lengths."""
    lengths = np.clip(rng.lognormal(np.log(100), 0.9, size=n), 20, 2000).astype(int)
    return [[rec.item_id(int(i)) for i in rng.integers(1, rec.num_items + 1, size=m)] for m in lengths]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dir: Path, port: int, timeout: float = 120.0) -> subprocess.Popen:
    """``sasrec serve`` on 127.0.0.1:port in a subprocess; returns once /health answers."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sasrec.cli",
            "serve",
            "--run",
            str(run_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    )
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode}")
            try:
                if client.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                    return proc
            except httpx.TransportError:
                time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s")


async def load_test(port: int, histories: list[list[str]], requests: int, concurrency: int, time_limit: float) -> dict:
    """Send up to ``requests`` POST /recommend from ``concurrency`` clients; latency in milliseconds."""
    url = f"http://127.0.0.1:{port}/recommend"
    latencies: list[float] = []
    errors = 0
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=30.0) as client:
        for h in histories[:10]:  # warm-up, not timed
            (await client.post(url, json={"history": h, "k": 10})).raise_for_status()
        start = time.perf_counter()
        deadline = start + time_limit

        async def worker() -> None:
            nonlocal next_index, errors
            while next_index < requests and time.perf_counter() < deadline:
                history = histories[next_index % len(histories)]
                next_index += 1
                t0 = time.perf_counter()
                response = await client.post(url, json={"history": history, "k": 10})
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += response.status_code != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "errors": errors,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
    }


async def oversized_test(port: int, history: list[str], megabytes: float) -> dict:
    """POST /recommend with a ``megabytes`` MB body (Content-Length, then chunked) while small requests run.

    Returns per framing the status, response bytes and seconds, and the p50 and worst latency in ms of small
    requests sent one after another until it is answered (and their p50 when idle, for comparison).
    """
    url = f"http://127.0.0.1:{port}/recommend"
    item = json.dumps(history[0]).encode()
    body = b'{"history": [' + b", ".join([item] * int(megabytes * 1e6 / (len(item) + 2))) + b"]}"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent with chunked transfer encoding
        for i in range(0, len(body), 1 << 16):
            yield body[i : i + (1 << 16)]

    async with httpx.AsyncClient(trust_env=False, timeout=120.0) as client:

        async def small(latencies: list[float]) -> None:
            t0 = time.perf_counter()
            (await client.post(url, json={"history": history, "k": 10})).raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1000)

        idle: list[float] = []
        for _ in range(10):
            await small(idle)
        results: dict = {"body_bytes": len(body), "small_p50_ms_idle": round(float(np.median(idle)), 2)}
        for framing in ("content-length", "chunked"):
            t0 = time.perf_counter()
            big = asyncio.create_task(
                client.post(
                    url,
                    content=body if framing == "content-length" else chunks(),
                    headers={"content-type": "application/json"},
                )
            )
            during: list[float] = []
            while not big.done() or not during:  # small requests one after another until the big one is answered
                await small(during)
            response = await big
            results[framing] = {
                "status": response.status_code,
                "response_bytes": len(response.content),
                "seconds": round(time.perf_counter() - t0, 3),
                "small_requests": len(during),
                "small_p50_ms": round(float(np.median(during)), 2),
                "small_max_ms": round(max(during), 2),
            }
    return results


def api_throughput(rec: Recommender, histories: list[list[str]], batch_size: int, batches: int) -> dict:
    """Histories per second of ``recommend_batch`` (k = 10) on batches of ``batch_size``."""
    chunks = [histories[i * batch_size : (i + 1) * batch_size] for i in range(batches)]
    rec.recommend_batch(chunks[0], k=10)  # warm-up
    start = time.perf_counter()
    for chunk in chunks:
        rec.recommend_batch(chunk, k=10)
    elapsed = time.perf_counter() - start
    return {
        "batch_size": batch_size,
        "batches": batches,
        "seconds": round(elapsed, 3),
        "histories_per_s": round(batch_size * batches / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run directory to benchmark (default: random-init model)")
    parser.add_argument("--requests", type=int, default=500, help="single-history requests to send")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent clients")
    parser.add_argument("--time-limit", type=float, default=30.0, help="stop sending after this many seconds")
    parser.add_argument(
        "--oversized-mb", type=float, default=10.0, help="size of the oversized request body in MB (0: skip that test)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="histories per Python API call")
    parser.add_argument("--batches", type=int, default=8, help="Python API calls to time")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_serve.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or make_random_run(Path(tmp) / "run")
        rec = Recommender.load(run_dir)
        histories = random_histories(rng, rec, max(args.batch_size * args.batches, 1000))
        lengths = np.array([len(h) for h in histories])
        print(
            f"model: {rec.num_items} items, maxlen {rec.maxlen}; histories: median length "
            f"{int(np.median(lengths))}, {np.mean(lengths > rec.maxlen):.0%} longer than maxlen"
        )

        port = free_port()
        server = start_server(run_dir, port)
        try:
            http = asyncio.run(load_test(port, histories, args.requests, args.concurrency, args.time_limit))
            oversized = None
            if args.oversized_mb:
                oversized = asyncio.run(oversized_test(port, histories[0], args.oversized_mb))
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(
            f"HTTP POST /recommend: {http['requests']} requests ({http['errors']} errors) from "
            f"{http['concurrency']} clients in {http['seconds']} s: {http['requests_per_s']} req/s, "
            f"p50 {http['p50_ms']} ms, p99 {http['p99_ms']} ms"
        )
        if oversized:
            print(
                f"oversized body of {oversized['body_bytes']} bytes (small requests idle: p50 "
                f"{oversized['small_p50_ms_idle']} ms):"
            )
            for framing in ("content-length", "chunked"):
                r = oversized[framing]
                print(
                    f"  {framing}: status {r['status']}, {r['response_bytes']} bytes back in {r['seconds']} s; "
                    f"{r['small_requests']} small requests meanwhile: p50 {r['small_p50_ms']} ms, "
                    f"worst {r['small_max_ms']} ms"
                )

        api = api_throughput(rec, histories, args.batch_size, args.batches)
        print(
            f"Python API recommend_batch: {api['histories_per_s']} histories/s "
            f"(batches of {api['batch_size']}, {api['batches']} batches in {api['seconds']} s)"
        )

    results = {
        "model": {
            "run": str(args.run) if args.run else "random-init",
            "num_items": rec.num_items,
            "maxlen": rec.maxlen,
            "hidden": rec.model.item_emb.embedding_dim,
            "blocks": len(rec.model.blocks),
        },
        "http": http,
        "oversized": oversized,
        "api": api,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
