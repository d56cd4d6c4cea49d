"""CPU cost of the metrics on the predict path, per request and per batch, in process.

    uv run python bench/metrics_cost.py [--multiprocess] [--calls 100000] [--repeats 3]

``--multiprocess`` measures prometheus-client's multiprocess mode, as ``serve`` runs it (every
value written to a memory-mapped file in ``PROMETHEUS_MULTIPROC_DIR``; a temporary directory
here); without it, the single-process mode (a value under a lock). Prints the best of
``--repeats`` runs, µs per call, of:

- what the front door adds to a request: ``answered`` (a counter increment, a latency
  observation, the flag check), the same for a flagged prediction, ``failed`` (two counter
  increments and an observation);
- the front door itself, driven through the fast path with a gate that admits everyone and a
  batcher stub that answers at once, without and with metrics (as ``bench/edge_cost.py``);
- what a batch of 32 reports (batch size, queue depth, the scores into their histogram and
  the drift window, the PSI), per prediction; and one timing decorator around a port call.

The whole request costs ~120-180 µs of server CPU on this VM (``bench/http_load.py``).
Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

MANIFEST = {
    "model_version": "bench",
    "validation_scores": {
        "edges": [0.001, 0.002, 0.003, 0.005, 0.008, 0.012, 0.02, 0.04, 0.1],
        "shares": [0.1] * 10,
        "rows": 150_000,
    },
}


def best_us(call: Callable[[], object], calls: int, repeats: int) -> float:
    """The best of ``repeats`` runs of ``calls`` calls, µs of CPU per call."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(calls):
            call()
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


def main(calls: int, repeats: int, multiprocess: bool) -> None:
    # imported here: prometheus_client picks its mode from the environment when imported
    from fraudscore import Application, Prediction  # noqa: PLC0415
    from fraudscore_adapters.access import Gate  # noqa: PLC0415
    from fraudscore_adapters.http.fastpath import FastPredictRoutes  # noqa: PLC0415
    from fraudscore_adapters.http.frontdoor import FrontDoor  # noqa: PLC0415
    from fraudscore_adapters.monitoring.prom import Metrics  # noqa: PLC0415
    from fraudscore_adapters.monitoring.timed import TimedFeatures  # noqa: PLC0415

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") if multiprocess else None
    metrics = Metrics(multiprocess_dir=directory)
    metrics.model_loaded(MANIFEST)
    started = time.perf_counter()
    per_request = {
        "answered": lambda: metrics.answered("sync", False, started),
        "answered, flagged": lambda: metrics.answered("sync", True, started),
        "failed (404)": lambda: metrics.failed("sync", 404, "unknown-user", started),
    }
    figures = {name: best_us(call, calls, repeats) for name, call in per_request.items()}

    prediction = Prediction(uuid.uuid4(), 42, 0.004, False, 0.5, "v1", "sync", datetime.now(UTC))
    batch: Sequence[Prediction | BaseException] = [prediction] * 32
    route = metrics.route("sync")

    def report_batch() -> None:
        route.batch(32, 5)
        route.waiting(0)
        route.served(batch)

    per_batch = best_us(report_batch, calls // 32, repeats)
    figures["batch of 32 reported, per prediction"] = per_batch / 32

    class Nothing:
        def latest_many(self, user_ids: Sequence[int]) -> Sequence[Application]:
            return ()

    timed = TimedFeatures(Nothing(), metrics.store_time("sync", "read"))
    bare = Nothing()
    figures["timing decorator, per port call"] = best_us(
        lambda: timed.latest_many(()), calls, repeats
    ) - best_us(lambda: bare.latest_many(()), calls, repeats)

    class OpenGate(Gate):
        def admit(self, authorization: bytes | None, scope: str) -> str:
            return "open"

    class Answers:
        async def predict(self, user_id: str, caller: Any = None, watch: Any = None) -> Any:
            return prediction

    def door_app(with_metrics: bool) -> FastPredictRoutes:
        door = FrontDoor()
        door.routes["sync"] = Answers()  # type: ignore[assignment]  # the stub quacks alike
        door.gate = OpenGate(rate=1e9, burst=10**9, max_stale_s=1e9)
        door.metrics = metrics if with_metrics else None
        return FastPredictRoutes(None, door, retry_after_s=1)  # type: ignore[arg-type]

    scope = {
        "type": "http", "method": "POST", "path": "/predict/sync/42", "root_path": "",
        "query_string": b"", "headers": [(b"authorization", b"Bearer x")],
    }  # fmt: skip

    async def receive() -> Any:
        raise AssertionError("unreachable")

    async def send(_: Any) -> None:
        return None

    async def edge(app: FastPredictRoutes) -> float:
        best = float("inf")
        for _ in range(repeats):
            began = time.process_time()
            for _ in range(calls):
                await app(scope, receive, send)  # type: ignore[arg-type]
            best = min(best, (time.process_time() - began) / calls * 1e6)
        return best

    without = asyncio.run(edge(door_app(False)))
    with_metrics = asyncio.run(edge(door_app(True)))

    mode = "multiprocess (mmap files)" if directory else "single process"
    print(f"metrics CPU, {mode}, best of {repeats} x {calls:,} calls:")
    for name, us in figures.items():
        print(f"  {name:40} {us:6.2f} µs")
    print(f"  {'front door without metrics':40} {without:6.2f} µs a request")
    print(f"  {'front door with metrics':40} {with_metrics:6.2f} µs a request"
          f" ({with_metrics - without:+.2f} µs)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--multiprocess", action="store_true")
    args = parser.parse_args()
    if args.multiprocess and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # the mode is chosen when prometheus_client is imported: run again with the variable
        with tempfile.TemporaryDirectory(prefix="fraudscore-bench-") as tmp:
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": tmp}
            sys.exit(subprocess.run([sys.executable, *sys.argv], env=env, check=False).returncode)
    main(args.calls, args.repeats, args.multiprocess)
