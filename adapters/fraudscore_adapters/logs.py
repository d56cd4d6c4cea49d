"""Request ids and the log format: one JSON object a line, or text (``FRAUDSCORE_LOG_FORMAT``).

A request id names one predict request in the logs and in its response (``X-Request-ID``).
The front door (:mod:`~fraudscore_adapters.http.frontdoor`) picks it, whichever way the request
is served: the caller's ``X-Request-ID`` when it is sane (:func:`accepted`: 1-128 characters of
``[A-Za-z0-9._:-]``, so it can neither split a header nor forge a log line), else a new one
(:func:`new_request_id`). It sets :data:`REQUEST_ID` for the request's task (every ASGI server
runs each request in a task of its own, so the value is the request's alone), and every log
record emitted there carries it: the 5xx warnings and the tracebacks of
:mod:`~fraudscore_adapters.http.problems`. A batch serves many requests, so the batcher's
tasks and threads see no request id: their records carry none.

A new id is a random per-process prefix and a counter, ``<16 hex>-<count>``, e.g.
``9f2c4e61d0a3b7c5-26``: ~0.2 µs against ~2 µs for a ``uuid4().hex``, and as unique in
practice (64 random bits per process, drawn again in a forked child, so workers and restarts
do not share a prefix). The counter says in which order a worker saw its requests; the ids are
not secrets and do not need to be unguessable.

:func:`configure` sets the root logger up once, from the composition root.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import string
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "LOG_FORMATS",
    "MAX_REQUEST_ID",
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "TextFormatter",
    "accepted",
    "configure",
    "formatter",
    "new_request_id",
]

LOG_FORMATS = ("text", "json")
REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID = 128
"""The longest caller's request id taken; a longer one is replaced."""
_SAFE = (string.ascii_letters + string.digits + "._:-").encode()

REQUEST_ID: ContextVar[str | None] = ContextVar("fraudscore_request_id", default=None)
"""The id of the request being handled in this task; None outside one (and in batches)."""

SERVER_LOGGERS = ("_granian", "granian.access", "uvicorn", "uvicorn.error", "uvicorn.access")
"""The servers' own loggers, which write through handlers of their own (text)."""


def accepted(value: bytes) -> str | None:
    """A caller's request id, if it is 1-128 characters of ``[A-Za-z0-9._:-]``; else None
    (the request gets a new id: a bad one is never echoed nor logged)."""
    if 0 < len(value) <= MAX_REQUEST_ID and not value.translate(None, _SAFE):
        return value.decode("ascii")
    return None


def _reseed() -> None:
    """A new random prefix and counter: at import, and in a forked child."""
    global _prefix, _next  # noqa: PLW0603  # rebound only at import and after a fork
    _prefix = secrets.token_hex(8) + "-"
    _next = itertools.count(1).__next__


_prefix = ""
_next = itertools.count(1).__next__
_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """A new request id, unique across processes in practice: ``<16 hex>-<counter>``."""
    return f"{_prefix}{_next()}"


def _request_id(record: logging.LogRecord) -> str | None:
    """The record's request id: one passed in ``extra``, else the emitting task's."""
    given = getattr(record, "request_id", None)
    return given if isinstance(given, str) else REQUEST_ID.get()


class TextFormatter(logging.Formatter):
    """``time level logger message``, then ``request_id=...`` when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = _request_id(record)
        if request_id is None:
            return text
        head, newline, rest = text.partition("\n")  # after the message, before a traceback
        return f"{head} request_id={request_id}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    ``request_id`` when known, ``exc_info`` and ``stack_info`` (text) when present. Nothing
    else of the record: ``extra`` fields are not dumped, so nothing reaches the log unasked."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id(record)
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exc_info"] = record.exc_text or self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` (one of :data:`LOG_FORMATS`)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Log to stderr in ``log_format``, at ``level`` (as ``logging.basicConfig``: once; a
    root logger that already has handlers is left alone).

    In ``json``, the servers' own loggers (granian's, uvicorn's: in this process, a worker)
    write through the same handler, so their lines are JSON too; the server's main process
    logs a few lines of its own (start, workers spawned, stop) in its own format.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    if root.handlers:
        return
    logging.basicConfig(level=level, handlers=[handler])
    if log_format == "json":
        for name in SERVER_LOGGERS:
            server = logging.getLogger(name)
            if server.handlers:
                server.handlers = [handler]
