"""The one entrance of the predict routes, whichever way a request is served.

The predict routes are answered either by the fast path in front of Litestar
(:mod:`~fraudscore_adapters.http.fastpath`) or by Litestar's own handlers
(``FRAUDSCORE_FAST_PATH=off``, or a request the fast path does not take). Litestar middleware
would only see the second, so every cross-cutting step of a predict request lives here, once,
and both call :meth:`FrontDoor.predict`:

0. the request id (:mod:`~fraudscore_adapters.logs`): the caller's ``X-Request-ID`` when it
   is sane, else a new one, which each path answers in the response's ``x-request-id``
   however the request ends. It is returned with the prediction; on an error it is set as
   :data:`~fraudscore_adapters.logs.REQUEST_ID` in the request's task before the error is
   raised, so the records logged about it (the problem table's warnings and tracebacks)
   carry it. Set on the way out, not in: the batch a request joins runs in tasks (and
   threads) started from whichever request's task came first, which must not inherit that
   one's id; and a request answered 200 logs nothing, so it pays no contextvar there;
1. the gate (:mod:`~fraudscore_adapters.access.gate`): the API key, its scope, its rate;
2. the route's batcher, with the key id as the caller (recorded with the prediction) and the
   client watched for a disconnect while the request waits (``WATCH_AFTER_S``);
3. the metrics (:mod:`~fraudscore_adapters.monitoring.prom`): each request counted by route
   and status (and problem type, from the problem table, or flagged), and timed. A request
   whose client left before its batch (``ClientGone``) is answered by nobody: it counts as
   its table entry, 499 ``client-gone``.

Any error is raised; each path turns it into the same problem details through
:mod:`~fraudscore_adapters.http.problems`. The unit tests send every outcome through both
paths and compare the bytes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable

from litestar.types import Receive

from fraudscore import Prediction
from fraudscore_adapters.access import Gate
from fraudscore_adapters.batching import BatchedPredictions
from fraudscore_adapters.http.problems import status_and_type
from fraudscore_adapters.logs import REQUEST_ID, REQUEST_ID_HEADER, accepted, new_request_id
from fraudscore_adapters.monitoring.prom import Metrics

__all__ = ["FrontDoor", "request_id_header"]

PREDICT_SCOPE = "predict"


class FrontDoor:
    """The gate, the batchers and the metrics of the predict routes; all set by the app's
    lifespan."""

    def __init__(self) -> None:
        self.routes: dict[str, BatchedPredictions] = {}
        """Each predict route's batcher, by route name; empty until the lifespan starts."""
        self.gate: Gate | None = None
        self.metrics: Metrics | None = None

    async def predict(
        self,
        route: str,
        user_id: str,
        headers: Iterable[tuple[bytes, bytes]],
        receive: Receive,
        *,
        explain: bool = False,
    ) -> tuple[Prediction, str]:
        """Admit the request (raise :class:`~fraudscore_adapters.access.AccessDenied` if not:
        nothing is looked up or recorded), then score it on ``route``'s batcher (with its
        reasons when ``explain``): its prediction and its request id; on any error,
        :data:`~fraudscore_adapters.logs.REQUEST_ID` is set to the request id before it is
        raised."""
        started = time.perf_counter()
        key = asked = None
        for name, value in headers:
            if name == b"authorization":
                if key is None:
                    key = value
            elif name == REQUEST_ID_HEADER and asked is None:
                asked = value
        request_id = (asked and accepted(asked)) or new_request_id()
        try:
            if self.gate is None:
                raise RuntimeError("the front door is used before the app started")
            caller = self.gate.admit(key, PREDICT_SCOPE)
            watch = functools.partial(_disconnected, receive)
            prediction = await self.routes[route].predict(user_id, caller, watch, explain=explain)
        except BaseException as exc:
            REQUEST_ID.set(request_id)
            if self.metrics is not None:
                self.metrics.failed(route, *status_and_type(exc), started)
            raise
        if self.metrics is not None:
            self.metrics.answered(route, prediction.is_fraud, started)
        return prediction, request_id


def request_id_header() -> tuple[bytes, bytes] | None:
    """The ``x-request-id`` response header of the predict request being handled in this
    task (None outside one: :meth:`FrontDoor.predict` was not reached)."""
    request_id = REQUEST_ID.get()
    return None if request_id is None else (REQUEST_ID_HEADER, request_id.encode())


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone: after the (bodiless) request message, ASGI's
    ``receive`` answers only with ``http.disconnect``."""
    while (await receive())["type"] != "http.disconnect":
        pass
