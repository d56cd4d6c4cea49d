"""The two predict routes, answered in front of Litestar by a plain ASGI callable.

Why: measured here (``bench/http_load.py --floors --fast-path on off``: granian, one worker,
wrk at 64 connections, CPU from /proc; three runs), a bare Litestar route costs the server
83-133 µs of CPU per request and a raw ASGI app 21-38 µs; through Litestar a whole prediction
on PostgreSQL cost 240-299 µs, a third to two fifths of it the framework's per-request
machinery (request object, parameter parsing, hooks, response object). The predict routes are
the service's hot path, so :class:`FastPredictRoutes` answers them itself (154-193 µs a
prediction in the same runs),
through the same front door (:mod:`~fraudscore_adapters.http.frontdoor`: the API key check,
rate limit, batcher), the same problem table and the same msgspec schema, byte for byte: the
unit tests send every kind of request through both paths and compare the responses.

It takes only what it recognises exactly: ``POST /predict/{sync,async}/<one segment>`` with no
request body and no query string but ``explain=true`` or ``explain=false``. Everything else
(another method, a body, another query, a trailing slash, other routes, the lifespan) goes to
Litestar, which also owns the routes' OpenAPI description, docs, health and
readiness. ``FRAUDSCORE_FAST_PATH=off`` serves the predict routes through Litestar too.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from fraudscore import FraudscoreError
from fraudscore_adapters.batching import ClientGone
from fraudscore_adapters.http.frontdoor import FrontDoor, request_id_header
from fraudscore_adapters.http.problems import (
    PROBLEM_MEDIA_TYPE,
    domain_problem,
    problem_headers,
    unexpected_problem,
)
from fraudscore_adapters.http.schemas import PredictionOut
from fraudscore_adapters.logs import REQUEST_ID_HEADER

__all__ = ["PREDICT_PREFIX", "FastPredictRoutes"]

PREDICT_PREFIX = "/predict/"
_JSON = b"application/json"
_PROBLEM = PROBLEM_MEDIA_TYPE.encode()
_ENCODER = msgspec.json.Encoder()
_EXPLAIN = {b"": False, b"explain=false": False, b"explain=true": True}
"""The query strings the fast path takes, and whether each asks for reasons."""


class FastPredictRoutes:
    """An ASGI app: the predict routes answered directly, everything else by ``app``.

    ``door.routes`` maps a route name (``sync``, ``async``) to its batcher; it is filled in by
    the lifespan, so until then every request goes to Litestar.
    """

    def __init__(self, app: Litestar, door: FrontDoor, *, retry_after_s: int) -> None:
        self.litestar = app
        self._door = door
        self._routes = door.routes
        self._retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a predict request, or hand the connection to Litestar."""
        if scope["type"] == ScopeType.HTTP and scope["method"] == "POST" and not scope["root_path"]:
            path = scope["path"]
            if path.startswith(PREDICT_PREFIX):
                route, _, user_id = path[len(PREDICT_PREFIX) :].partition("/")
                headers = scope["headers"]
                explain = _EXPLAIN.get(scope["query_string"])
                if (
                    route in self._routes
                    and user_id
                    and "/" not in user_id
                    and explain is not None
                    and _bodiless(headers)
                ):
                    await self._predict(route, user_id, scope, receive, send, explain=explain)
                    return
        await self.litestar(scope, receive, send)

    async def _predict(
        self, route: str, user_id: str, scope: Scope, receive: Receive, send: Send, *, explain: bool
    ) -> None:
        path = scope["path"]
        try:
            prediction, request_id = await self._door.predict(
                route, user_id, scope["headers"], receive, explain=explain
            )
        except ClientGone:
            return  # nobody to answer
        except FraudscoreError as exc:
            problem = domain_problem(exc, "POST", path)
            extra = problem_headers(exc, self._retry_after_s) or {}
            headers = [(k.lower().encode(), v.encode()) for k, v in extra.items()]
            headers += _named()
            await _respond(send, problem.status, _PROBLEM, _ENCODER.encode(problem), headers)
        except Exception as exc:
            problem = unexpected_problem(exc, "POST", path)
            await _respond(send, problem.status, _PROBLEM, _ENCODER.encode(problem), _named())
        else:
            body = _ENCODER.encode(PredictionOut.of(prediction))
            await _respond(send, 200, _JSON, body, [(REQUEST_ID_HEADER, request_id.encode())])


def _named() -> list[tuple[bytes, bytes]]:
    """The request id header of a problem: the front door set the id as it raised."""
    header = request_id_header()
    return [] if header is None else [header]


def _bodiless(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """No request body announced (a body goes to Litestar, which refuses one over 1 KiB)."""
    for name, value in headers:
        if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
            return False
    return True


async def _respond(
    send: Send,
    status: int,
    content_type: bytes,
    body: bytes,
    extra: list[tuple[bytes, bytes]],
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers += extra
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": headers,
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(end)
