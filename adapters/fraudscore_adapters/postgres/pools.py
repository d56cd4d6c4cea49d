"""Connection pools: bounded sizes and waits, built and opened by the caller.

Blocking stores run on a :class:`psycopg_pool.ConnectionPool`, async ones on an
:class:`psycopg_pool.AsyncConnectionPool`. Pools are built and opened by the caller (the
composition root), never at import.
"""

from __future__ import annotations

from typing import Any, Required, TypedDict, TypeVar, Unpack

import psycopg
import psycopg_pool
import psycopg_pool.pool
import psycopg_pool.pool_async

from fraudscore_adapters.postgres.conninfo import connection_kwargs, parse_conninfo
from fraudscore_adapters.postgres.faults import RECONNECT_MAX_DELAY_S, store_errors
from fraudscore_adapters.postgres.rows import configure_json

__all__ = ["PoolSettings", "open_async_pool", "open_pool"]


class _CappedBackoff(psycopg_pool.ConnectionPool[Any]):
    """A blocking pool whose reconnection attempts are at most ``RECONNECT_MAX_DELAY_S``
    apart, and which knows when its last attempt to connect failed (``unreachable``)."""

    unreachable = False
    """The last attempt to open a connection failed, and none has succeeded since: requests
    should not wait long for a connection (:func:`~.faults.run` answers them at once)."""

    def __init__(self, conninfo: str, **options: Any) -> None:
        super().__init__(conninfo, configure=self.connected, **options)

    def schedule_task(self, task: psycopg_pool.pool.MaintenanceTask, delay: float) -> None:
        if isinstance(task, psycopg_pool.pool.AddConnection):  # an attempt failed: retry
            self.unreachable = True
            delay = min(delay, RECONNECT_MAX_DELAY_S)
        super().schedule_task(task, delay)

    def connected(self, conn: psycopg.Connection[Any]) -> None:
        """Configure a new connection (the pool's ``configure``): the database is back."""
        configure_json(conn)
        self.unreachable = False


class _AsyncCappedBackoff(psycopg_pool.AsyncConnectionPool[Any]):
    """The async twin of :class:`_CappedBackoff`."""

    unreachable = False

    def __init__(self, conninfo: str, **options: Any) -> None:
        super().__init__(conninfo, configure=self.connected, **options)

    async def schedule_task(
        self, task: psycopg_pool.pool_async.MaintenanceTask, delay: float
    ) -> None:
        if isinstance(task, psycopg_pool.pool_async.AddConnection):
            self.unreachable = True
            delay = min(delay, RECONNECT_MAX_DELAY_S)
        await super().schedule_task(task, delay)

    async def connected(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Configure a new connection: the database is back."""
        configure_json(conn)
        self.unreachable = False


def _pool_options(
    min_size: int,
    max_size: int,
    timeout_s: float,
    statement_timeout_ms: int,
    *,
    connect_timeout_s: int | None = None,
    prepare: bool = True,
    max_idle_s: float = 600.0,
) -> dict[str, Any]:
    """What both pools share: bounded sizes and waits, opened explicitly by the caller.

    ``connect_timeout_s`` bounds opening one connection (default: ``timeout_s``, at least 1 s);
    a request waits at most ``timeout_s`` for a connection either way.
    """
    if connect_timeout_s is None:
        connect_timeout_s = max(1, int(timeout_s))
    return {
        "min_size": min_size,
        "max_size": max_size,
        "timeout": timeout_s,
        "max_idle": max_idle_s,
        "open": False,
        "kwargs": connection_kwargs(
            statement_timeout_ms=statement_timeout_ms,
            connect_timeout_s=connect_timeout_s,
            prepare=prepare,
        ),
    }


def _open_wait_s(timeout_s: float, connect_timeout_s: int | None) -> float:
    """How long opening a pool may wait for its first connections (a cold start included)."""
    return max(timeout_s, connect_timeout_s or 0)


class PoolSettings(TypedDict, total=False):
    """What opening a pool takes besides the connection string (see :func:`_pool_options`)."""

    min_size: Required[int]
    max_size: Required[int]
    timeout_s: Required[float]
    statement_timeout_ms: Required[int]
    connect_timeout_s: int | None
    prepare: bool
    max_idle_s: float
    name: str


Pool = TypeVar("Pool", _CappedBackoff, _AsyncCappedBackoff)


def _build(cls: type[Pool], conninfo: str, settings: PoolSettings, name: str) -> Pool:
    """A pool of ``cls``, not open yet; a malformed string fails here, not in a logged retry
    loop."""
    parse_conninfo(conninfo, "opening the connection pool")
    options = _pool_options(
        settings["min_size"],
        settings["max_size"],
        settings["timeout_s"],
        settings["statement_timeout_ms"],
        connect_timeout_s=settings.get("connect_timeout_s"),
        prepare=settings.get("prepare", True),
        max_idle_s=settings.get("max_idle_s", 600.0),
    )
    return cls(conninfo, name=settings.get("name", name), **options)


def _first_wait_s(settings: PoolSettings) -> float:
    return _open_wait_s(settings["timeout_s"], settings.get("connect_timeout_s"))


def open_pool(conninfo: str, **settings: Unpack[PoolSettings]) -> psycopg_pool.ConnectionPool[Any]:
    """A bounded blocking pool; raises StoreUnavailable if none can be opened.

    Connections are not checked on checkout (a round trip per use, ~12-24% of throughput
    measured): the stores run their calls through :func:`~.faults.run`, which replaces dead
    connections when it finds one. Lost connections are replaced at most
    ``RECONNECT_MAX_DELAY_S`` apart, however long the database was away.
    """
    pool = _build(_CappedBackoff, conninfo, settings, "fraudscore")
    with store_errors("opening the connection pool"):
        pool.open(wait=True, timeout=_first_wait_s(settings))
    return pool


async def open_async_pool(
    conninfo: str, **settings: Unpack[PoolSettings]
) -> psycopg_pool.AsyncConnectionPool[Any]:
    """The async twin of :func:`open_pool`."""
    pool = _build(_AsyncCappedBackoff, conninfo, settings, "fraudscore-async")
    with store_errors("opening the connection pool"):
        await pool.open(wait=True, timeout=_first_wait_s(settings))
    return pool
