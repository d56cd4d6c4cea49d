"""Connection strings: parsing, redaction, pooler detection, and the per-connection settings.

Nothing here opens a connection. A malformed string becomes ``StoreUnavailable`` with libpq's
complaint minus any quoted text (which may be part of the password), and a URL libpq would
misread (a raw ``@`` or ``/`` in its password: the tail becomes the host or database name,
which psycopg and its pool print) is refused before libpq sees it
(:func:`~fraudscore_adapters.dburl.url_problem`); no function here lets a password reach a
message.

Behind a transaction-mode pooler (PgBouncer; Neon's ``-pooler`` endpoints) consecutive
statements of one client may run in different server sessions, so server-side prepared
statements are off there (:func:`use_prepared_statements`), and startup options such as
``statement_timeout`` are not sent (the pooler refuses them; set it on the role instead).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from fraudscore import StoreUnavailable
from fraudscore_adapters.dburl import URL_PREFIXES, url_problem
from fraudscore_adapters.settings import PREPARED_STATEMENT_MODES

__all__ = [
    "POOLER_HOST_MARK",
    "TCP_KEEPALIVE",
    "connection_kwargs",
    "is_conninfo_error",
    "malformed",
    "parse_conninfo",
    "pooled_endpoint",
    "redact",
    "startup_statement_timeout_ms",
    "use_prepared_statements",
]

POOLER_HOST_MARK = "-pooler"
"""A host name containing this is a transaction-mode pooler (Neon's pooled endpoints)."""

TCP_KEEPALIVE: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
"""libpq's TCP settings on every connection: an idle connection whose peer vanished (a NAT or
load balancer that dropped it, a host that died) is found dead within ~19 s (10 s idle, then 3
probes 3 s apart), and data left unacknowledged for 10 s breaks the connection instead of
waiting for the kernel's ~15 minutes of retransmissions. A request never waits on either: its
own deadline (:mod:`.faults`) comes first. Ignored on Unix-domain sockets."""

_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)
_RESERVED = re.compile(r"[/?#@]")
_CONNINFO_ERROR = re.compile(r"connection info string|URI|percent-encoded|connection option")
_QUOTED = re.compile(r'"[^"]*"')


def redact(text: str) -> str:
    """``text`` with any password in a connection string replaced by ``***``."""
    lines = text.splitlines(keepends=True)
    return _KEYWORD_PASSWORD.sub(r"\1***", "".join(map(_redact_user_info, lines)))


def _redact_user_info(line: str) -> str:
    """``line`` with the user-info of its URL, from the first ``://`` to the last ``@``, as
    ``user:***`` when the user name is plain, else as ``***`` (a raw ``/ ? # @`` leaves no
    telling where the user name ends). Taken to the last ``@``, a raw ``@`` or space in the
    password cannot end it early; hiding text up to an unrelated ``@`` is the safe side.
    Linear in the line's length, however many ``://`` it holds."""
    start, end = line.find("://") + 3, line.rfind("@")
    if start < 3 or end < start:
        return line
    info = line[start:end]
    user, colon, _ = info.partition(":")
    if _RESERVED.search(user) or (not colon and _RESERVED.search(info)):
        info = "***"
    elif colon:
        info = f"{user}:***"
    return f"{line[:start]}{info}{line[end:]}"


def is_conninfo_error(exc: psycopg.ProgrammingError) -> bool:
    """Whether ``exc`` is libpq refusing a malformed connection string (not a server error)."""
    return exc.sqlstate is None and bool(_CONNINFO_ERROR.search(str(exc)))


def malformed(exc: psycopg.ProgrammingError) -> str:
    """libpq's complaint about a malformed connection string, minus the quoted text (which
    may be part of the password)."""
    problem = _QUOTED.sub('"***"', str(exc).strip().splitlines()[0])
    return f"malformed connection string: {problem} (percent-encode reserved characters)"


def parse_conninfo(conninfo: str, what: str) -> dict[str, Any]:
    """``conninfo`` (URL or ``key=value``) as a dict; StoreUnavailable if it is malformed,
    a URL libpq would misread included (the settings refuse those already: this guards the
    callers that build a pool from a string of their own)."""
    if conninfo.startswith(URL_PREFIXES) and (problem := url_problem(conninfo)):
        raise StoreUnavailable(f"{what}: malformed connection string: the URL {problem}")
    try:
        return conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        if not is_conninfo_error(exc):
            raise
        raise StoreUnavailable(f"{what}: {malformed(exc)}") from None


def pooled_endpoint(conninfo: str) -> bool:
    """Whether ``conninfo`` (URL or ``key=value``) names a pooler host (one with ``-pooler``)."""
    host = parse_conninfo(conninfo, "reading the connection string").get("host") or ""
    return POOLER_HOST_MARK in str(host)


def use_prepared_statements(mode: str, conninfo: str) -> bool:
    """Whether to prepare statements on the server: ``on``, ``off``, or ``auto``.

    ``auto`` means on, except at a pooler host (:func:`pooled_endpoint`): a transaction-mode
    pooler may run the next statement in a server session where the statement is not prepared.
    """
    if mode not in PREPARED_STATEMENT_MODES:
        raise ValueError(f"prepared statements {mode!r}: use one of {PREPARED_STATEMENT_MODES}")
    if mode == "auto":
        return not pooled_endpoint(conninfo)
    return mode == "on"


def startup_statement_timeout_ms(statement_timeout_ms: int, conninfo: str) -> int:
    """The ``statement_timeout`` to send at connection start: none (0) at a pooler host."""
    return 0 if pooled_endpoint(conninfo) else statement_timeout_ms


def connection_kwargs(
    *, statement_timeout_ms: int, connect_timeout_s: int, prepare: bool = True
) -> dict[str, Any]:
    """Connection settings that bound every wait: connecting, each statement, a dead peer.

    ``statement_timeout_ms=0`` sends no startup option (the server's or the role's setting
    applies); ``prepare=False`` turns server-side prepared statements off for the connection,
    explicit ``prepare=True`` included.
    """
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": connect_timeout_s,
        **TCP_KEEPALIVE,
    }
    if statement_timeout_ms > 0:
        kwargs["options"] = f"-c statement_timeout={statement_timeout_ms}"
    if not prepare:
        kwargs["prepare_threshold"] = None
    return kwargs
