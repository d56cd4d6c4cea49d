"""The fault policy of the PostgreSQL adapters, in one place.

Driver and pool faults become domain errors: a pool that cannot hand out a connection in time,
a server that is down, or a statement that runs past its timeout raise ``StoreUnavailable``
quickly; a dead connection (a restart, a database waking from scale to zero) is found on use,
the pool is checked and idempotent work runs once more. Messages never carry the password.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from fraudscore import StoreUnavailable
from fraudscore_adapters.postgres.conninfo import is_conninfo_error, malformed, redact

__all__ = ["arun_once_more_if_broken", "run_once_more_if_broken", "store_errors"]

T = TypeVar("T")


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Turn driver and pool faults into ``StoreUnavailable`` saying what failed."""
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        raise StoreUnavailable(f"{what}: no database connection available in time") from exc
    except (psycopg.OperationalError, psycopg.errors.QueryCanceled) as exc:
        first_line = redact(str(exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreUnavailable(f"{what}: {first_line}") from exc
    except psycopg.ProgrammingError as exc:
        if not is_conninfo_error(exc):
            raise
        raise StoreUnavailable(f"{what}: {malformed(exc)}") from None


def _broken(exc: psycopg.OperationalError) -> bool:
    """A dead connection (server restarted, woke from scale-to-zero, network cut): retry-worthy.

    Not a statement timeout, nor a pool with no connection to lend: retrying those only
    doubles the wait.
    """
    return not isinstance(exc, psycopg.errors.QueryCanceled | psycopg_pool.PoolTimeout)


def run_once_more_if_broken(
    pool: psycopg_pool.ConnectionPool[Any], what: str, work: Callable[[psycopg.Connection[Any]], T]
) -> T:
    """``work`` on a pooled connection; if the connection was dead, check the pool and retry once.

    A database that restarted or woke up (Neon) has killed every pooled connection: the first
    use fails, :meth:`~psycopg_pool.ConnectionPool.check` drops all dead idle connections and
    starts replacements, and the retry runs on a fresh one. Only idempotent work goes here.
    """
    with store_errors(what):
        try:
            with pool.connection() as conn:
                return work(conn)
        except psycopg.OperationalError as exc:
            if not _broken(exc):
                raise
            pool.check()
        with pool.connection() as conn:
            return work(conn)


async def arun_once_more_if_broken(
    pool: psycopg_pool.AsyncConnectionPool[Any],
    what: str,
    work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
) -> T:
    """The async twin of :func:`run_once_more_if_broken`."""
    with store_errors(what):
        try:
            async with pool.connection() as conn:
                return await work(conn)
        except psycopg.OperationalError as exc:
            if not _broken(exc):
                raise
            await pool.check()
        async with pool.connection() as conn:
            return await work(conn)
