"""The Litestar application: a thin adapter from HTTP to the scoring use case.

Built by :func:`create_app` from a runtime factory (the composition root's): the lifespan
enters it (open pools, load the model) and leaves it (close them), in that order. Routes:

- ``GET /healthcheck``: liveness, ``ok`` while the process answers;
- ``GET /readyz``: readiness, 200 when the model scores a probe and the store answers, else 503
  naming the part that failed;
- ``GET /metrics``: Prometheus metrics (:mod:`~fraudscore_adapters.monitoring.prom`), every
  worker's in a multi-worker server; open like the probes, or behind an API key with the
  ``admin`` scope (``FRAUDSCORE_METRICS_ACCESS=admin``);
- ``POST /admin/reload``, ``POST /admin/rollback`` and ``GET /admin/model``, behind an API key
  with the ``admin`` scope: load a new model without downtime, roll back, and say what serves
  (:mod:`~fraudscore_adapters.reloading`);
- ``POST /predict/sync/{user_id}`` and ``POST /predict/async/{user_id}``, behind an API key
  with the ``predict`` scope (``Authorization: Bearer <key>``; see
  :mod:`~fraudscore_adapters.http.frontdoor`): score the user's
  newest stored application and record the prediction before answering. POST, because each
  call creates a prediction record (not safe, not idempotent). Same body from both routes;
  sync runs the blocking use case (blocking pool, model) in worker threads, async runs the
  async use case on the event loop (the model in a thread of its own). Both batch concurrent
  requests (:class:`~fraudscore_adapters.batching.BatchedPredictions`): one store read, one
  model call and one commit per batch, one thread hop per batch, never one per request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import JSONBody, PathParameter, QueryParameter

from fraudscore import MAX_USER_ID, AsyncScoringService, ScoringService
from fraudscore_adapters.access import Gate
from fraudscore_adapters.batching import DEFAULT_BATCHING, BatchedPredictions, Batching
from fraudscore_adapters.http.fastpath import FastPredictRoutes
from fraudscore_adapters.http.frontdoor import FrontDoor
from fraudscore_adapters.http.problems import PROBLEM_MEDIA_TYPE, exception_handlers
from fraudscore_adapters.http.schemas import (
    ModelStatusOut,
    PredictionOut,
    Problem,
    Readiness,
    ReloadIn,
    ReloadOut,
)
from fraudscore_adapters.monitoring.prom import CONTENT_TYPE, Metrics
from fraudscore_adapters.reloading import Reloader, VersionError

__all__ = ["Batching", "Runtime", "RuntimeFactory", "create_app"]

log = logging.getLogger("fraudscore.http")


def at_most(limit: int) -> str:
    """A regular expression for the decimal strings of 0 to ``limit`` (leading zeros allowed,
    no more digits than ``limit`` has): shorter strings, then for each digit of ``limit`` its
    prefix followed by a smaller digit and anything, then ``limit`` itself."""
    digits = str(limit)
    branches = [f"[0-9]{{1,{len(digits) - 1}}}"] if len(digits) > 1 else []
    for i, digit in enumerate(digits):
        if digit != "0":
            rest = len(digits) - i - 1
            tail = f"[0-9]{{{rest}}}" if rest else ""
            branches.append(f"{digits[:i]}[0-{int(digit) - 1}]{tail}")
    branches.append(digits)
    return f"^(?:{'|'.join(branches)})$"


USER_ID_PATTERN = at_most(MAX_USER_ID)
"""The documented shape of a user id: exactly the strings the core's parse_user_id takes."""

UserIdPath = Annotated[
    str,
    PathParameter(
        description="The user's id: 1 to 19 decimal digits, at most 2**63-1 (a bigint).",
        # documented exactly (a fuzzer's schema-valid id must be accepted), and enforced by
        # the core's parse_user_id, whose 400 names the rule
        schema_extra={"pattern": USER_ID_PATTERN},
    ),
]

ExplainQuery = Annotated[
    bool,
    QueryParameter(
        name="explain",
        description="Also give the reasons of a prediction that is not flagged (flagged"
        " predictions carry them anyway, unless the server runs with FRAUDSCORE_REASONS="
        "requested).",
    ),
]

PREDICT_QUERY = frozenset({"explain"})
"""The query parameters the predict routes take; any other is refused (400)."""

MAX_BODY_BYTES = 1024
"""The predict routes take no body: anything over 1 KiB is refused with 413."""


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the routes need, built and owned by the composition root."""

    service: ScoringService
    async_service: AsyncScoringService
    gate: Gate
    """Who may call the protected routes (kept fresh by the composition root)."""
    checks: Callable[[], Awaitable[dict[str, str]]]
    """Readiness probes: part -> ``ok`` or what failed."""
    metrics: Metrics
    """What the predict routes and their batchers report to, and ``/metrics`` shows."""
    liveness: Callable[[], list[str]] = list
    """What of the runtime's own parts is wedged (the model's thread); empty when none."""
    models: Reloader | None = None
    """What serves the model and reloads it (the admin routes); None: no admin routes."""


RuntimeFactory = Callable[[], AbstractAsyncContextManager[Runtime]]


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type=PROBLEM_MEDIA_TYPE,
        generate_examples=False,
    )


PREDICT_RESPONSES = {
    400: _problem("The user id breaks the id rule (1-19 decimal digits, at most 2**63-1)."),
    401: _problem("No valid API key (missing, malformed, unknown or revoked: one answer)."),
    403: _problem("The API key lacks the `predict` scope."),
    429: _problem("The API key is over its rate limit; see Retry-After."),
    404: _problem("No features are stored for this user."),
    422: _problem("The stored features fail validation; `problems` names each field."),
    500: _problem("The store refused the work (`store-error`), or a bug (`internal-error`)."),
    503: _problem(
        "Unavailable for now, see Retry-After: the store or the model (`store-unavailable`,"
        " `model-unavailable`), no answer within the request timeout (`timeout`), the route's"
        " queue is full (`overloaded`), the server is stopping (`shutting-down`), or the API keys"
        " could not be read for too long (`keys-unavailable`)."
    ),
}


_GATE_RESPONSES = {
    401: PREDICT_RESPONSES[401],
    403: _problem("The API key lacks the `admin` scope."),
    429: PREDICT_RESPONSES[429],
    503: _problem("The API keys could not be read for too long (`keys-unavailable`)."),
}
RELOAD_RESPONSES = {
    **_GATE_RESPONSES,
    400: _problem("The body is not JSON of the documented shape."),
    409: _problem(
        "Nothing to switch to as asked (`model-switch-refused`): no such version, no previous"
        " one, a `current` pointer this server may not move (a read-only artifact folder), or a"
        " model handed in rather than loaded."
    ),
    422: _problem(
        "The new model failed a check (`model-refused`): not pinned, its manifest or a"
        " checksum, the library versions, unpickling or the self-check; the old model keeps"
        " serving, and `detail` says why."
    ),
}


async def _refuse_bodies(request: Request[Any, Any, Any]) -> None:
    """Bodies over 1 KiB are refused up front (413): the predict routes read none, the admin
    routes a few bytes.

    Async on purpose: Litestar runs a sync hook in a worker thread, a hop per request.
    """
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise HTTPException(
            status_code=413, detail=f"request bodies over {MAX_BODY_BYTES} bytes are refused"
        )


SECURITY_SCHEME = "apiKey"
_COMPONENTS = Components(
    security_schemes={
        SECURITY_SCHEME: SecurityScheme(
            type="http",
            scheme="bearer",
            description="An API key: `python -m fraudscore_adapters keys create --name NAME`.",
        )
    }
)


class _Holder:
    runtime: Runtime

    def __init__(self) -> None:
        self.door = FrontDoor()
        """The predict routes' gate and batchers (``door.routes``), set by the lifespan."""


def _lifespan(
    holder: _Holder, runtime: RuntimeFactory, batching: Batching
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """Enter the runtime for the app's life, with the batchers and the sync route's threads.

    On shutdown the batchers are drained first (new requests get 503 ``shutting-down``, the
    accepted ones are answered, within the request timeout and a second), then the runtime
    closes its pools: never under a batch in flight.
    """

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        threads = ThreadPoolExecutor(batching.concurrency, thread_name_prefix="sync-route")
        try:
            async with runtime() as rt:
                holder.runtime = rt
                holder.door.gate = rt.gate
                holder.door.metrics = rt.metrics
                holder.door.routes["sync"] = BatchedPredictions.in_threads(
                    rt.service,
                    threads,
                    route="sync",
                    batching=batching,
                    observer=rt.metrics.route("sync"),
                )
                holder.door.routes["async"] = BatchedPredictions.on_loop(
                    rt.async_service,
                    route="async",
                    batching=batching,
                    observer=rt.metrics.route("async"),
                )
                gc.collect()
                gc.freeze()  # the model and data are long-lived: keep them out of GC passes
                try:
                    yield
                finally:
                    await _drain(holder.door.routes, batching.timeout_s + 1.0)
        finally:
            holder.door.routes.clear()
            threads.shutdown(wait=False, cancel_futures=True)

    return lifespan


async def _drain(routes: dict[str, BatchedPredictions], timeout_s: float) -> None:
    started = time.monotonic()
    drained = await asyncio.gather(*(r.batcher.drain(timeout_s) for r in routes.values()))
    waited = time.monotonic() - started
    if all(drained):
        log.info("shutdown: every accepted request answered (%.2f s)", waited)
    else:
        log.warning("shutdown: batches still running after %.1f s; closing anyway", waited)


def _liveness(holder: _Holder, batching: Batching) -> list[str]:
    """What is wedged: a route's batch running a whole request timeout past its deadline,
    or a part the runtime reports (the model thread)."""
    problems = [
        f"route {name}: a batch is {stuck:.1f} s past its deadline"
        for name, route in holder.door.routes.items()
        if (stuck := route.batcher.stuck_s()) > batching.timeout_s
    ]
    return problems + (holder.runtime.liveness() if hasattr(holder, "runtime") else [])


def _health_routes(holder: _Holder, batching: Batching) -> list[HTTPRouteHandler]:
    @get(
        "/healthcheck",
        media_type=MediaType.TEXT,
        tags=["health"],
        sync_to_thread=False,
        responses={
            503: ResponseSpec(str, description="Wedged: restart me", media_type="text/plain")
        },
    )
    def healthcheck() -> Response[str]:
        """Liveness: the process answers and nothing in it is wedged (a batch or a model call
        running a whole request timeout past its deadline); 503 naming what is, if so."""
        problems = _liveness(holder, batching)
        return Response("; ".join(problems) or "ok", status_code=503 if problems else 200)

    @get(
        "/readyz",
        tags=["health"],
        responses={503: ResponseSpec(Readiness, description="Not ready")},
    )
    async def readyz() -> Response[Readiness]:
        """Readiness: the model scores a probe and the feature store answers."""
        checks = await holder.runtime.checks()
        ready = all(v == "ok" for v in checks.values())
        body = Readiness("ready" if ready else "not ready", checks)
        return Response(body, status_code=200 if ready else 503)

    return [healthcheck, readyz]


METRICS_ACCESS = ("open", "admin")
"""Who may read ``/metrics``: anyone who reaches it, or a key with the ``admin`` scope."""
ADMIN_SCOPE = "admin"


def _metrics_route(holder: _Holder, access: str) -> HTTPRouteHandler:
    if access not in METRICS_ACCESS:
        raise ValueError(f"metrics access {access!r}: use one of {', '.join(METRICS_ACCESS)}")

    @get(
        "/metrics",
        media_type=CONTENT_TYPE,
        tags=["health"],
        responses={
            401: _problem("`FRAUDSCORE_METRICS_ACCESS=admin` and no valid API key."),
            403: _problem("`FRAUDSCORE_METRICS_ACCESS=admin` and a key without `admin`."),
        },
    )
    async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Prometheus metrics in the text format: requests, latency, batches, store and model
        time, pools, errors, the model version, the flag rate, score drift. Open unless
        ``FRAUDSCORE_METRICS_ACCESS=admin`` (then a key with the ``admin`` scope)."""
        runtime = holder.runtime
        if access == ADMIN_SCOPE:
            headers = request.scope["headers"]
            key = next((value for name, value in headers if name == b"authorization"), None)
            runtime.gate.admit(key, ADMIN_SCOPE)
        runtime.metrics.refresh()
        # reading (and in multiprocess mode merging) the metrics takes a few ms: not on the loop
        body = await asyncio.to_thread(runtime.metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    return metrics


_PREDICT_ROUTES = {
    "sync": "Score the user's newest application with blocking I/O in a worker thread.",
    "async": "Score the user's newest application on the event loop (batched with its peers).",
}
"""The predict routes by name (the name is also the route recorded with each prediction)."""


def _predict_routes(holder: _Holder) -> list[HTTPRouteHandler]:
    """One handler per predict route: the same code, only the batcher differs."""

    def route(name: str, doc: str) -> HTTPRouteHandler:
        async def predict(
            user_id: UserIdPath, request: Request[Any, Any, Any], explain: ExplainQuery = False
        ) -> Response[PredictionOut]:
            unknown = sorted(set(request.query_params) - PREDICT_QUERY)
            if unknown:  # a typo (`?explian=true`) must not pass for a request without it
                raise ValidationException(
                    detail=f"unknown query parameter {', '.join(map(repr, unknown))}:"
                    " the predict routes take only `explain`"
                )
            headers = request.scope["headers"]
            prediction, request_id = await holder.door.predict(
                name, user_id, headers, request.receive, explain=explain
            )
            return Response(PredictionOut.of(prediction), headers={"x-request-id": request_id})

        predict.__name__, predict.__doc__ = f"predict_{name}", doc
        return post(
            f"/predict/{name}/{{user_id:str}}",
            status_code=200,
            tags=["predict"],
            responses=PREDICT_RESPONSES,
            security=[{SECURITY_SCHEME: []}],
        )(predict)

    return [route(name, doc) for name, doc in _PREDICT_ROUTES.items()]


def _admin_routes(holder: _Holder) -> list[HTTPRouteHandler]:
    """Reload, roll back, and say what serves: the ``admin`` scope only. Each answers for the
    worker process that got it; the others follow the ``current`` pointer (see
    :mod:`~fraudscore_adapters.reloading`)."""

    async def admitted(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        """The guard: the gate, with the ``admin`` scope, before the body is read."""
        gate = holder.door.gate
        if gate is None:
            raise RuntimeError("an admin route is used before the app started")
        key = next((v for k, v in connection.scope["headers"] if k == b"authorization"), None)
        connection.state.admin_key = gate.admit(key, ADMIN_SCOPE)

    def models(request: Request[Any, Any, Any]) -> Reloader:
        found = holder.runtime.models
        if found is None:
            raise VersionError("this server has no model reloader")
        if request.method != "GET":  # who changed the model: an audit line, whatever the outcome
            log.info(
                "%s %s by API key %s", request.method, request.url.path, request.state.admin_key
            )
        return found

    admin: dict[str, Any] = {
        "tags": ["admin"],
        "guards": [admitted],
        "security": [{SECURITY_SCHEME: []}],
    }

    @post("/admin/reload", status_code=200, responses=RELOAD_RESPONSES, **admin)
    async def reload_model(
        request: Request[Any, Any, Any], data: JSONBody[ReloadIn | None] = None
    ) -> ReloadOut:
        """Load the model the artifact folder's `current` pointer names (or `version`, which
        then becomes current), verified and self-checked off the request path, and swap it in
        between batches; the old model keeps serving if the new one fails a check (422, saying
        why). With `sha256`, only a model whose manifest has that SHA-256, which a pinned
        server then accepts. This worker answers; the others follow `current` within
        FRAUDSCORE_MODEL_WATCH_S."""
        asked = data or ReloadIn()
        attempt = await models(request).reload(version=asked.version, sha256=asked.sha256)
        return ReloadOut.of(attempt, os.getpid())

    @post("/admin/rollback", status_code=200, responses=RELOAD_RESPONSES, **admin)
    async def rollback_model(request: Request[Any, Any, Any]) -> ReloadOut:
        """Load the version the `previous` pointer names and make it current (`previous` then
        names the old one: a second rollback goes forward again). Needs write access to the
        artifact folder (409 without: use `python -m fraudscore_adapters model rollback`)."""
        attempt = await models(request).rollback()
        return ReloadOut.of(attempt, os.getpid())

    @get("/admin/model", responses=_GATE_RESPONSES, **admin)
    async def model_status(request: Request[Any, Any, Any]) -> ModelStatusOut:
        """What this worker serves (version, pin, when loaded), what `current` and
        `previous` name now, and how its last reload went."""
        status = await models(request).status()
        return ModelStatusOut.of(status, os.getpid())

    return [reload_model, rollback_model, model_status]


def create_app(
    runtime: RuntimeFactory,
    *,
    retry_after_s: int = 1,
    batching: Batching = DEFAULT_BATCHING,
    fast_path: bool = True,
    metrics_access: str = "open",
    debug: bool = False,
) -> Litestar | FastPredictRoutes:
    """The HTTP application; ``runtime`` is entered in the lifespan and left on shutdown.

    With ``fast_path`` the predict routes are answered in front of Litestar (see
    :mod:`~fraudscore_adapters.http.fastpath`); without, Litestar answers everything.
    ``metrics_access``: ``open`` or ``admin`` (see :data:`METRICS_ACCESS`).
    """
    holder = _Holder()
    app = Litestar(
        route_handlers=[
            *_health_routes(holder, batching),
            _metrics_route(holder, metrics_access),
            *_predict_routes(holder),
            *_admin_routes(holder),
        ],
        before_request=_refuse_bodies,
        lifespan=[_lifespan(holder, runtime, batching)],
        exception_handlers=exception_handlers,
        request_max_body_size=MAX_BODY_BYTES,
        # Logging is configured once, by the composition root (fraudscore_adapters.logs):
        # Litestar's default config would replace the root logger's handlers with its own.
        logging_config=None,
        openapi_config=OpenAPIConfig(title="fraudscore", version="0.1.0", components=_COMPONENTS),
        debug=debug,
    )
    app.state.retry_after_s = retry_after_s
    if fast_path:
        return FastPredictRoutes(app, holder.door, retry_after_s=retry_after_s)
    return app
