"""CPU cost of the predict routes' front door (API key, scope, rate limit) per request.

    uv run python bench/edge_cost.py [--calls 200000] [--repeats 5]

Drives the fast path (:class:`~fraudscore_adapters.http.fastpath.FastPredictRoutes`) in
process, with a batcher stub that answers at once, so only the HTTP edge runs: no socket, no
store, no model. Three gates behind the same front door:

- ``open``: a gate that admits everyone (what the edge cost before keys);
- ``keyed``: the real :class:`~fraudscore_adapters.access.Gate` and a valid key, the rate
  limit on but never reached (what every served request pays);
- ``refused``: the real gate and an unknown key (a 401: what an attacker's request costs).

Prints the best of ``--repeats`` runs of ``--calls`` requests, µs a request, and the
difference from ``open``. The whole request costs ~120-180 µs of server CPU on this VM
(``bench/http_load.py``); through a real server the difference drowns in run-to-run noise,
which is why it is measured here. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from litestar.types import Message

from fraudscore import Prediction
from fraudscore_adapters.access import Gate, mint
from fraudscore_adapters.batching import Watch
from fraudscore_adapters.http.fastpath import FastPredictRoutes
from fraudscore_adapters.http.frontdoor import FrontDoor

PREDICTION = Prediction(uuid.uuid4(), 42, 0.1, False, 0.5, "v1", "sync", datetime.now(UTC))


class _Answers:
    """A batcher that answers every request at once with the same prediction."""

    async def predict(
        self,
        user_id: str,
        caller: str | None = None,
        watch: Watch | None = None,
        *,
        explain: bool = False,
    ) -> Prediction:
        return PREDICTION


class _OpenGate(Gate):
    """Admits everyone: the edge without authentication or rate limits."""

    def admit(self, authorization: bytes | None, scope: str) -> str:
        return "open"


def _app(gate: Gate) -> FastPredictRoutes:
    door = FrontDoor()
    door.routes["sync"] = _Answers()  # type: ignore[assignment]  # the stub quacks alike
    door.gate = gate
    return FastPredictRoutes(None, door, retry_after_s=1)  # type: ignore[arg-type]  # no Litestar


async def _receive() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _send(_: Message) -> None:
    return None


def _scope(key: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/predict/sync/42",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"wrk"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-length", b"0"),
        ],
    }


async def _best_us(
    app: FastPredictRoutes, scope: dict[str, Any], calls: int, repeats: int
) -> float:
    for _ in range(calls // 10):  # warm up
        await app(scope, _receive, _send)  # type: ignore[arg-type]
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(calls):
            await app(scope, _receive, _send)  # type: ignore[arg-type]
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


async def main(calls: int, repeats: int) -> None:
    record, key = mint("bench", ["predict"])
    gates: dict[str, tuple[Gate, str]] = {}
    for name, cls, presented in (
        ("open", _OpenGate, key),
        ("keyed", Gate, key),
        ("refused", Gate, f"fsk_{record.id}_not-the-secret"),
    ):
        gate = cls(rate=1e9, burst=10**9, max_stale_s=1e9)
        gate.load([record])
        gates[name] = (gate, presented)
    results = {}
    for name, (gate, presented) in gates.items():
        results[name] = await _best_us(_app(gate), _scope(presented), calls, repeats)
    print(f"HTTP edge CPU per request, best of {repeats} x {calls:,} calls (batcher stubbed):")
    for name, us in results.items():
        print(f"  {name:8} {us:6.2f} µs   {us - results['open']:+5.2f} µs vs open")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.repeats))
