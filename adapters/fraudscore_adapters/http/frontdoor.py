"""The one entrance of the predict routes, whichever way a request is served.

The predict routes are answered either by the fast path in front of Litestar
(:mod:`~fraudscore_adapters.http.fastpath`) or by Litestar's own handlers
(``FRAUDSCORE_FAST_PATH=off``, or a request the fast path does not take). Litestar middleware
would only see the second, so every cross-cutting step of a predict request lives here, once,
and both call :meth:`FrontDoor.predict`:

1. the gate (:mod:`~fraudscore_adapters.access.gate`): the API key, its scope, its rate;
2. the route's batcher, with the key id as the caller (recorded with the prediction) and the
   client watched for a disconnect while the request waits (``WATCH_AFTER_S``).

Any error is raised; each path turns it into the same problem details through
:mod:`~fraudscore_adapters.http.problems`. The unit tests send every outcome through both
paths and compare the bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from litestar.types import Receive

from fraudscore import Prediction
from fraudscore_adapters.access import Gate
from fraudscore_adapters.batching import BatchedPredictions

__all__ = ["FrontDoor", "authorization"]

PREDICT_SCOPE = "predict"


class FrontDoor:
    """The gate and the batchers of the predict routes; both are set by the app's lifespan."""

    def __init__(self) -> None:
        self.routes: dict[str, BatchedPredictions] = {}
        """Each predict route's batcher, by route name; empty until the lifespan starts."""
        self.gate: Gate | None = None

    async def predict(
        self,
        route: str,
        user_id: str,
        headers: Iterable[tuple[bytes, bytes]],
        receive: Receive,
    ) -> Prediction:
        """Admit the request (raise :class:`~fraudscore_adapters.access.AccessDenied` if not:
        nothing is looked up or recorded), then score it on ``route``'s batcher."""
        if self.gate is None:
            raise RuntimeError("the front door is used before the app started")
        caller = self.gate.admit(authorization(headers), PREDICT_SCOPE)
        watch = functools.partial(_disconnected, receive)
        return await self.routes[route].predict(user_id, caller, watch)


def authorization(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The ``Authorization`` header of an ASGI scope's (lower-cased) headers."""
    for name, value in headers:
        if name == b"authorization":
            return value
    return None


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone: after the (bodiless) request message, ASGI's
    ``receive`` answers only with ``http.disconnect``."""
    while (await receive())["type"] != "http.disconnect":
        pass
