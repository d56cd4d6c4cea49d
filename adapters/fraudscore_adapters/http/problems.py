"""One table from errors to HTTP problems: the only place that knows status codes.

Domain errors carry no HTTP status; this edge maps them. Unexpected exceptions become a plain
500 problem (the traceback goes to the log, never to the client). The problems Litestar
answers for a predict request carry its ``x-request-id``, as the fast path's do; those of
other requests (or of a predict request refused before the front door, a 413) carry none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from fraudscore import (
    FraudscoreError,
    InvalidFeatures,
    InvalidUserId,
    ModelUnavailable,
    StoreError,
    StoreUnavailable,
    UnknownUser,
)
from fraudscore_adapters.access.gate import (
    Forbidden,
    KeysUnavailable,
    RateLimited,
    Unauthenticated,
)
from fraudscore_adapters.batching import ClientGone, DeadlineExceeded, Overloaded, ShuttingDown
from fraudscore_adapters.http.schemas import FieldProblemOut, Problem
from fraudscore_adapters.logs import REQUEST_ID
from fraudscore_adapters.reloading import ModelRefused, VersionError

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "STATUS",
    "domain_problem",
    "exception_handlers",
    "problem_headers",
    "problem_response",
    "status_and_type",
    "unexpected_problem",
    "with_request_id",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("fraudscore.http")


@dataclass(frozen=True, slots=True)
class _Kind:
    status: int
    slug: str
    title: str


STATUS: dict[type[FraudscoreError], _Kind] = {
    Unauthenticated: _Kind(401, "unauthenticated", "Unauthenticated"),
    Forbidden: _Kind(403, "forbidden", "Forbidden"),
    RateLimited: _Kind(429, "rate-limited", "Too many requests"),
    KeysUnavailable: _Kind(503, "keys-unavailable", "API keys unavailable"),
    InvalidUserId: _Kind(400, "invalid-user-id", "Invalid user id"),
    UnknownUser: _Kind(404, "unknown-user", "Unknown user"),
    InvalidFeatures: _Kind(422, "invalid-stored-features", "Stored features are invalid"),
    StoreUnavailable: _Kind(503, "store-unavailable", "Feature store unavailable"),
    StoreError: _Kind(500, "store-error", "Feature store error"),
    ModelUnavailable: _Kind(503, "model-unavailable", "Model unavailable"),
    ModelRefused: _Kind(422, "model-refused", "New model refused"),
    VersionError: _Kind(409, "model-switch-refused", "Model switch refused"),
    DeadlineExceeded: _Kind(503, "timeout", "No answer in time"),
    Overloaded: _Kind(503, "overloaded", "Service overloaded"),
    ShuttingDown: _Kind(503, "shutting-down", "Service shutting down"),
    ClientGone: _Kind(499, "client-gone", "Client closed the request"),
}
_INTERNAL = _Kind(500, "internal-error", "Internal server error")


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response[bytes]:
    """A problem-details response (with the request id, as every Litestar response of a
    predict request: :func:`with_request_id`)."""
    return Response(
        msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=with_request_id(headers),
    )


def with_request_id(headers: dict[str, str] | None = None) -> dict[str, str] | None:
    """``headers`` and the ``x-request-id`` of the predict request being handled in this
    task, if any (set by :mod:`~fraudscore_adapters.http.frontdoor`)."""
    request_id = REQUEST_ID.get()
    if request_id is None:
        return headers
    return {**(headers or {}), "x-request-id": request_id}


def _kind_of(exc: FraudscoreError) -> _Kind:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return _INTERNAL


def status_and_type(exc: BaseException) -> tuple[int, str]:
    """The status and problem type (its slug) a request that raised ``exc`` ends with, from
    this table: what :func:`domain_problem` answers for a domain error, what
    :func:`unexpected_problem` answers for any other exception. A ``BaseException`` that is
    not an ``Exception`` (the request's task cancelled) is answered by nobody: it counts as
    ``ClientGone``'s kind, as a client gone before its batch does."""
    if isinstance(exc, FraudscoreError):
        kind = _kind_of(exc)
    elif isinstance(exc, Exception):
        kind = _INTERNAL
    else:
        kind = STATUS[ClientGone]
    return kind.status, kind.slug


def domain_problem(exc: FraudscoreError, method: str, path: str) -> Problem:
    """The problem a domain error is answered with (a 5xx is logged as a warning)."""
    kind = _kind_of(exc)
    if kind.status >= 500:
        log.warning("%s %s: %s", method, path, exc)
    return Problem(
        type=f"/problems/{kind.slug}",
        title=kind.title,
        status=kind.status,
        detail=str(exc),
        instance=path,
        rule=exc.rule if isinstance(exc, InvalidUserId) else None,
        problems=(
            [FieldProblemOut(p.field, p.problem) for p in exc.problems]
            if isinstance(exc, InvalidFeatures)
            else None
        ),
    )


def unexpected_problem(exc: Exception, method: str, path: str) -> Problem:
    """The plain 500 an unexpected error is answered with; its traceback goes to the log."""
    log.exception("unhandled error on %s %s", method, path, exc_info=exc)
    return Problem(
        type=f"/problems/{_INTERNAL.slug}",
        title=_INTERNAL.title,
        status=500,
        detail="the server failed to answer; the error is logged",
        instance=path,
    )


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="fraudscore"'}


def problem_headers(exc: FraudscoreError, retry_after_s: int) -> dict[str, str] | None:
    """The extra headers the problem of ``exc`` is answered with: the challenge of a 401 or
    403 (RFC 6750), ``Retry-After`` on a 429 (when the key's bucket has a token again) and on
    a 503 (``retry_after_s``)."""
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, Forbidden):
        scope = f'Bearer realm="fraudscore", error="insufficient_scope", scope="{exc.scope}"'
        return {"WWW-Authenticate": scope}
    if isinstance(exc, Unauthenticated):
        return _CHALLENGE
    return {"Retry-After": str(retry_after_s)} if _kind_of(exc).status == 503 else None


def _domain(request: Request[Any, Any, Any], exc: FraudscoreError) -> Response[bytes]:
    problem = domain_problem(exc, request.method, request.url.path)
    return problem_response(problem, problem_headers(exc, request.app.state.retry_after_s))


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    problem = Problem(
        type="about:blank",
        title=_reason(exc.status_code),
        status=exc.status_code,
        detail=exc.detail,
        instance=request.url.path,
    )
    return problem_response(problem, exc.headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return problem_response(unexpected_problem(exc, request.method, request.url.path))


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


exception_handlers: dict[int | type[Exception], Any] = {
    FraudscoreError: _domain,
    HTTPException: _http,
    Exception: _unexpected,
}
"""Litestar exception handlers: domain errors, framework HTTP errors, anything else."""
