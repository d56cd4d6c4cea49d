"""CPU a predict request costs our code, in process: the real app, model, batcher and metrics.

    uv run python bench/request_cost.py [--requests 30000] [--concurrency 64] [--repeats 3]
        [--rows 100000] [--reasons flagged/approx requested]

Why: through a real server (``bench/http_load.py``) this VM's run-to-run noise is +-20-40%,
more than a change to the request path costs. Here there is no socket, server, wrk or
database: the app the composition root builds (``build_app`` with :class:`Parts`: in-memory
stores holding ``--rows`` applications of the dataset, an in-memory key store; the model from
``FRAUDSCORE_ARTIFACT_DIR``; metrics in prometheus-client's multiprocess mode, as ``serve``
runs them, where the code has metrics) is driven over ASGI by ``--concurrency`` tasks, each
sending ``POST /predict/async/<random id>`` with a valid key, one after another. Batches form
as they do under load. Prints, for each reasons setting, the process CPU time per request
(best of ``--repeats`` runs; all threads: loop, model thread) and the requests per second.

Run it from another checkout with ``PYTHONPATH=<tree>/src:<tree>/adapters`` to compare
trees: it uses only ``build_app``, ``Parts``, ``Stores.in_memory``, the memory adapters and
``mint``, which they share.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Before anything imports prometheus_client: metrics as the server's workers keep them (in a
# directory of this run's own, removed at exit).
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    _PROM_DIR = tempfile.mkdtemp(prefix="fs-bench-prom-")
    atexit.register(shutil.rmtree, _PROM_DIR, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _PROM_DIR

import argparse
import asyncio
import inspect
import random
import time
from typing import Any

from fraudscore_adapters import bootstrap
from fraudscore_adapters.access import MemoryKeyStore, mint
from fraudscore_adapters.baf import load_features
from fraudscore_adapters.dataset import dataset_path
from fraudscore_adapters.memory import MemoryFeatureStore, MemoryPredictionSink
from fraudscore_adapters.settings import Settings


class _Lifespan:
    """Drive an ASGI app's lifespan: start it, and later stop it."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async def send(message: dict[str, Any]) -> None:
            if message["type"].startswith("lifespan.startup"):
                if message["type"].endswith("failed"):
                    raise RuntimeError(message.get("message"))
                self._started.set()

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        await self._inbox.put({"type": "lifespan.startup"})
        self._task = asyncio.create_task(self._app(scope, self._inbox.get, send))
        await self._started.wait()

    async def stop(self) -> None:
        await self._inbox.put({"type": "lifespan.shutdown"})
        if self._task is not None:
            await self._task


def _scope(user_id: int, key: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/predict/async/{user_id}",
        "raw_path": f"/predict/async/{user_id}".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {key}".encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _drive(app: Any, key: str, rows: int, requests: int, concurrency: int) -> list[int]:
    """``requests`` predictions from ``concurrency`` clients; the status of each."""
    statuses: list[int] = []
    rng = random.Random(7)
    left = requests

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # no body; nobody disconnects
        raise AssertionError("unreachable")

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await app(_scope(rng.randrange(rows), key), receive, send)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


async def _measure(settings: Settings, frame: Any, args: argparse.Namespace) -> tuple[float, float]:
    store = MemoryFeatureStore()
    store.load_frame(frame)
    sink = MemoryPredictionSink(capacity=10_000)
    keys = MemoryKeyStore()
    record, key = mint("bench", ["predict"])
    keys.add(record)
    parts = bootstrap.Parts(stores=bootstrap.Stores.in_memory(store, sink), keys=keys)
    build = bootstrap.build_app
    extra = {}
    if "multiprocess_dir" in inspect.signature(build).parameters:
        extra["multiprocess_dir"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    app = build(settings, parts, **extra)
    lifespan = _Lifespan(app)
    await lifespan.start()
    try:
        await _drive(app, key, frame.height, args.requests // 10, args.concurrency)  # warm up
        best_cpu, best_rate = float("inf"), 0.0
        for _ in range(args.repeats):
            cpu, wall = time.process_time(), time.perf_counter()
            statuses = await _drive(app, key, frame.height, args.requests, args.concurrency)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if set(statuses) != {200}:
                raise SystemExit(f"not every request answered 200: {sorted(set(statuses))}")
            best_cpu = min(best_cpu, cpu / len(statuses) * 1e6)
            best_rate = max(best_rate, len(statuses) / wall)
    finally:
        await lifespan.stop()
    return best_cpu, best_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--reasons", nargs="+", default=["flagged/approx"])
    args = parser.parse_args()
    base = Settings.from_env(os.environ)
    frame, _ = load_features(dataset_path(base, create=False))
    frame = frame.head(args.rows)
    print(f"{args.requests:,} requests from {args.concurrency} clients over ASGI, in process")
    for reasons in args.reasons:
        when, _, method = reasons.partition("/")
        fields: dict[str, Any] = {
            "max_queue": max(base.max_queue, args.concurrency),
            "rate_limit_rps": 1e9,  # on, never reached: its cost, not refusals
            "rate_limit_burst": 10**9,
        }
        if hasattr(base, "reasons"):
            fields |= {"reasons": when, "reasons_method": method or "approx"}
        settings = Settings(**{**_fields(base), **fields})
        cpu, rate = asyncio.run(_measure(settings, frame, args))
        print(f"  reasons {reasons:15} {cpu:6.1f} µs CPU a request   {rate:7,.0f} req/s")


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


if __name__ == "__main__":
    main()
