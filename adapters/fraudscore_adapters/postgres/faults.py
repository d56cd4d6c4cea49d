"""The fault policy of the PostgreSQL adapters, in one place.

Every database call runs under a client-side deadline (:func:`run`, :func:`arun`): the
earlier of the ambient one (:mod:`fraudscore_adapters.deadlines`: the batch's, set by the
HTTP routes) and the store's own ``timeout_s``. Waiting for a pooled connection takes what is
left of it; a statement still unanswered at the deadline has its connection's socket shut
down, which wakes the waiting call at once (``statement_timeout`` cannot do this: a frozen or
unreachable server never applies it). The broken connection is dropped by the pool.

Every ``psycopg.Error`` becomes a domain error (:func:`store_errors`):

- ``StoreUnavailable`` (503 with ``Retry-After``) for what passes: no connection in time, the
  deadline, a server that is down, restarting, out of connections or resources, a statement
  cancelled by its timeout, a deadlock or serialization failure, a read-only (standby or
  ``default_transaction_read_only``) database;
- ``StoreError`` (a named 500) for what a retry will not fix: a missing table or column, a
  missing privilege, a row the database refuses, a driver misuse.

A dead connection (a restart, a database waking from scale to zero, a cut network) is found on
use: the pool's idle connections are dropped and replaced at once (:meth:`drain`, bounded,
unlike a check that would wait on each one), and the call runs once more on a fresh
connection. Only idempotent work goes through :func:`run`. Messages never carry a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from fraudscore import StoreError, StoreUnavailable
from fraudscore.schema import shown
from fraudscore_adapters import deadlines
from fraudscore_adapters.postgres.conninfo import is_conninfo_error, malformed, redact

__all__ = [
    "RECONNECT_MAX_DELAY_S",
    "UNREACHABLE_WAIT_S",
    "arun",
    "is_row_fault",
    "run",
    "store_errors",
]

T = TypeVar("T")
_AnyPool = psycopg_pool.ConnectionPool[Any] | psycopg_pool.AsyncConnectionPool[Any]

_TRANSIENT_STATES = frozenset({"25006"})  # read_only_sql_transaction: a standby, a failover
"""SQLSTATEs outside psycopg's OperationalError that still pass (worth a retry)."""
_ROW_CLASSES = frozenset({"22", "23", "P0"})  # data exception, integrity, raised by a trigger
"""SQLSTATE classes that may concern one row of a batch, not the statement itself."""
RECONNECT_MAX_DELAY_S = 0.5
"""The longest a pool waits between two attempts to replace a lost connection.

psycopg_pool doubles the wait after each failed attempt (1, 2, 4, 8, 16 s ...), so after a
40 s outage its next attempt could come 16-30 s after the database was back: measured, the
first 200 came 18.3 s after PostgreSQL accepted connections again. Capped (by the pools of
:mod:`.pools`), a pool reconnects within half a second of the server accepting; the cost is
at most two connection attempts a second per missing connection while the database is down."""
UNREACHABLE_WAIT_S = 0.2
"""How long a call waits for a connection while its pool cannot open one (the database is
down or refusing): long enough for a connection being returned, short enough that an outage
answers 503 at once instead of at the deadline."""
_DRAIN_EVERY_S = 1.0
"""Drop a pool's idle connections at most this often: the first dead one found after a
restart drops them all; the rest of a burst of failures must not drop the fresh ones."""


class _Expired(Exception):
    """The call's deadline passed before the database answered."""

    def __init__(self, budget_s: float) -> None:
        if budget_s < 0.05:
            super().__init__("no time left before the deadline")
        else:
            super().__init__(f"no answer within {budget_s:.1f} s")


class _Unreachable(Exception):
    """No connection to lend, and the pool's last attempt to open one failed."""

    def __init__(self) -> None:
        super().__init__(
            "the database is not accepting connections; the pool retries every"
            f" {RECONNECT_MAX_DELAY_S} s"
        )


def _describe(exc: psycopg.Error) -> str:
    """The first line of the driver's message, password-free and bounded, with its SQLSTATE."""
    text = redact(str(exc)).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    first = first if len(first) <= 200 else shown(first)
    return f"{first} ({exc.sqlstate})" if exc.sqlstate else first


def _transient(exc: psycopg.Error) -> bool:
    return isinstance(exc, psycopg.OperationalError) or exc.sqlstate in _TRANSIENT_STATES


def is_row_fault(exc: StoreError) -> bool:
    """Whether ``exc`` (from a batch INSERT) may be about one row: worth trying row by row."""
    cause = exc.__cause__
    state = cause.sqlstate if isinstance(cause, psycopg.Error) else None
    return state is not None and state[:2] in _ROW_CLASSES


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Turn every driver and pool fault into ``StoreUnavailable`` or ``StoreError``."""
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        raise StoreUnavailable(f"{what}: no database connection available in time") from exc
    except (_Expired, _Unreachable) as exc:
        raise StoreUnavailable(f"{what}: {exc}") from None
    except psycopg.ProgrammingError as exc:
        if is_conninfo_error(exc):
            raise StoreUnavailable(f"{what}: {malformed(exc)}") from None
        raise StoreError(f"{what}: {_describe(exc)}") from exc
    except psycopg.Error as exc:
        error = StoreUnavailable if _transient(exc) else StoreError
        raise error(f"{what}: {_describe(exc)}") from exc


def _broken(exc: psycopg.OperationalError) -> bool:
    """A dead connection (server restarted, woke from scale-to-zero, network cut): retry-worthy.

    Not a statement timeout, nor a pool with no connection to lend: retrying those only
    doubles the wait.
    """
    return not isinstance(exc, psycopg.errors.QueryCanceled | psycopg_pool.PoolTimeout)


def _shut(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Shut the connection's socket down: a call waiting on it wakes with an error at once.

    ``shutdown`` (not ``close``) wakes a thread blocked in poll on the socket, and leaves the
    descriptor to its owner, so it cannot be reused under the driver's feet.
    """
    try:
        fd = os.dup(conn.pgconn.socket)
    except (OSError, psycopg.OperationalError):
        return  # already closed
    with socket.socket(fileno=fd) as sock, contextlib.suppress(OSError):  # not connected
        sock.shutdown(socket.SHUT_RDWR)


WATCHDOG_TICK_S = 0.05
"""The watchdog wakes at most this often: a blocking call is cut up to 50 ms after its
deadline, and the thread costs ~20 wake-ups a second however many calls run."""


class _Watchdog:
    """One daemon thread that shuts down the connections of blocking calls past deadline.

    A call costs a heap push and a flag under a lock (no thread, no timer object per call);
    a finished call's entry is left in the heap and skipped when its time comes.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, list[Any]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(
        self, conn: psycopg.Connection[Any], deadline: float, budget_s: float
    ) -> Iterator[None]:
        """Run the body with ``conn`` shut down at ``deadline``; _Expired for the error that
        causes. A body that answered before its socket was shut keeps its answer."""
        entry: list[Any] = [conn, False]  # the connection (None once done), fired
        with self._lock:
            heapq.heappush(self._heap, (deadline, next(self._order), entry))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="db-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is entry and len(self._heap) == 1:
                self._lock.notify()  # it was idle; otherwise it wakes within a tick
        try:
            yield
        except psycopg.OperationalError:
            if entry[1]:  # the error is the shut socket's
                raise _Expired(budget_s) from None
            raise
        finally:
            with self._lock:
                entry[0] = None

    def _loop(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, entry = heapq.heappop(self._heap)
                    if entry[0] is not None:
                        entry[1] = True
                        _shut(entry[0])
                if not self._heap:
                    self._lock.wait()
                else:  # at most one wake-up per tick, not one per finished call
                    self._lock.wait(max(self._heap[0][0] - now, WATCHDOG_TICK_S))


_WATCHDOG = _Watchdog()


class _Fuse:
    """An event-loop timer's callback: shut an async connection down at its deadline."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        _shut(self.conn)


async def _fused(
    conn: psycopg.AsyncConnection[Any],
    work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
    deadline: float,
    budget_s: float,
) -> T:
    """``work`` on ``conn``, whose socket is shut down at ``deadline`` (then: _Expired)."""
    fuse = _Fuse(conn)
    timer = asyncio.get_running_loop().call_later(deadline - time.monotonic(), fuse)
    try:
        return await work(conn)
    except psycopg.OperationalError:
        if fuse.fired:  # the error is the shut socket's
            raise _Expired(budget_s) from None
        raise
    finally:
        timer.cancel()


class _Drains:
    """When each pool last dropped its idle connections (at most every ``_DRAIN_EVERY_S``)."""

    def __init__(self) -> None:
        self._at: dict[int, float] = {}

    def due(self, pool: object) -> bool:
        now = time.monotonic()
        if now - self._at.get(id(pool), -_DRAIN_EVERY_S) < _DRAIN_EVERY_S:
            return False
        self._at[id(pool)] = now
        return True


_DRAINS = _Drains()


def _deadline(timeout_s: float) -> tuple[float, float]:
    """(the call's deadline, its budget in seconds): the ambient deadline or ``timeout_s``."""
    now = time.monotonic()
    deadline = min(now + timeout_s, deadlines.current() or float("inf"))
    return deadline, max(deadline - now, 0.0)


def _connection_wait(pool: _AnyPool, deadline: float, budget_s: float) -> float:
    """How long a call may wait for a pooled connection: what is left of its deadline, at most
    the pool's timeout, and at most ``UNREACHABLE_WAIT_S`` while the pool cannot connect
    (the database refuses or drops connections: a longer wait only delays the 503)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Expired(budget_s)
    wait = min(left, pool.timeout)
    return min(wait, UNREACHABLE_WAIT_S) if getattr(pool, "unreachable", False) else wait


@contextmanager
def _unreachable_if_so(pool: _AnyPool) -> Iterator[None]:
    """A connection wait that ran out while the pool cannot connect says so."""
    try:
        yield
    except psycopg_pool.PoolTimeout:
        if not getattr(pool, "unreachable", False):
            raise
        raise _Unreachable from None


def run(
    pool: psycopg_pool.ConnectionPool[Any],
    what: str,
    work: Callable[[psycopg.Connection[Any]], T],
    *,
    timeout_s: float,
) -> T:
    """``work`` on a pooled connection within the deadline; once more if the connection was
    dead (after dropping the pool's idle connections). Only idempotent work goes here."""
    deadline, budget = _deadline(timeout_s)
    with store_errors(what):
        for attempt in (1, 2):
            try:
                with (
                    _unreachable_if_so(pool),
                    pool.connection(timeout=_connection_wait(pool, deadline, budget)) as conn,
                    _WATCHDOG.guard(conn, deadline, budget),
                ):
                    return work(conn)
            except psycopg.OperationalError as exc:
                if attempt == 2 or not _broken(exc):
                    raise
                if _DRAINS.due(pool):
                    pool.drain()
    raise AssertionError("unreachable")  # pragma: no cover


async def arun(
    pool: psycopg_pool.AsyncConnectionPool[Any],
    what: str,
    work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
    *,
    timeout_s: float,
) -> T:
    """The async twin of :func:`run`: the deadline is a timer on the event loop."""
    deadline, budget = _deadline(timeout_s)
    with store_errors(what):
        for attempt in (1, 2):
            try:
                wait = _connection_wait(pool, deadline, budget)
                with _unreachable_if_so(pool):
                    async with pool.connection(timeout=wait) as conn:
                        return await _fused(conn, work, deadline, budget)
            except psycopg.OperationalError as exc:
                if attempt == 2 or not _broken(exc):
                    raise
                if _DRAINS.due(pool):
                    await pool.drain()
    raise AssertionError("unreachable")  # pragma: no cover
