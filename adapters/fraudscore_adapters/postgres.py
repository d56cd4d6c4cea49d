"""PostgreSQL adapters (psycopg 3): the feature store and the prediction sink.

Blocking classes run on a :class:`psycopg_pool.ConnectionPool`, async ones on an
:class:`psycopg_pool.AsyncConnectionPool`; both share the SQL and the row mapping below, so
only the I/O differs. Pools are built and opened by the caller (the composition root), never at
import. Every statement takes parameters; no SQL is built from strings of data.

Faults become domain errors: a pool that cannot hand out a connection in time, a server that
is down, or a statement that runs past its timeout raise ``StoreUnavailable`` quickly; the pool
checks connections on checkout and reconnects in the background, so the adapter recovers by
itself when the database comes back. Messages never carry the connection string.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
import psycopg
import psycopg_pool
from psycopg.types.json import set_json_loads

from fraudscore import (
    FEATURE_NAMES,
    Application,
    InvalidFeatures,
    Prediction,
    StoreUnavailable,
    UnknownUser,
)
from fraudscore.schema import FieldProblem
from fraudscore_adapters.batching import MicroBatcher

__all__ = [
    "AsyncPostgresFeatureStore",
    "AsyncPostgresPredictionSink",
    "PostgresFeatureStore",
    "PostgresPredictionSink",
    "connection_kwargs",
    "redact",
    "store_errors",
]

FEATURE_VERSION = "baf-v1"
"""The layout new rows are written in: a JSON array of the cleaned values, schema order."""
FEATURE_LAYOUTS: dict[str, tuple[str, ...]] = {FEATURE_VERSION: FEATURE_NAMES}
"""The feature names, in array order, of every ``feature_version`` the store may hold."""

LATEST_SQL = """
    SELECT features, feature_version FROM feature_store
    WHERE user_id = %s
    ORDER BY created_at DESC, id DESC
    LIMIT 1
"""
LATEST_MANY_SQL = """
    SELECT DISTINCT ON (user_id) user_id, features, feature_version FROM feature_store
    WHERE user_id = ANY(%s)
    ORDER BY user_id, created_at DESC, id DESC
"""
INSERT_PREDICTIONS_SQL = """
    INSERT INTO predictions
        (id, user_id, probability, is_fraud, threshold, model_version, route, created_at)
    SELECT * FROM unnest(
        %s::uuid[], %s::bigint[], %s::float8[], %s::boolean[], %s::float8[], %s::text[],
        %s::text[], %s::timestamptz[]
    )
"""
INSERT_PREDICTION_SQL = """
    INSERT INTO predictions
        (id, user_id, probability, is_fraud, threshold, model_version, route, created_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
"""

_SECRET = re.compile(r"(://[^:/@\s]*:)[^@\s]*@|(password\s*=\s*)\S+", re.IGNORECASE)
_JSON = msgspec.json.Decoder()


def redact(text: str) -> str:
    """``text`` with any password in a connection string replaced by ``***``."""
    return _SECRET.sub(lambda m: f"{m.group(1)}***@" if m.group(1) else f"{m.group(2)}***", text)


def connection_kwargs(*, statement_timeout_ms: int, connect_timeout_s: int) -> dict[str, Any]:
    """Connection settings that bound every wait: connecting and each statement."""
    return {
        "autocommit": True,
        "connect_timeout": connect_timeout_s,
        "options": f"-c statement_timeout={statement_timeout_ms}",
    }


def configure_json(context: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Decode jsonb with msgspec (several times faster than the json module)."""
    set_json_loads(_JSON.decode, context)


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


def _named(features: object, version: str) -> dict[str, object]:
    """A stored ``features`` value (array in the version's layout, or object) by name."""
    if isinstance(features, dict):
        return features
    layout = FEATURE_LAYOUTS.get(version)
    if layout is None:
        raise InvalidFeatures([FieldProblem("feature_version", f"unknown layout {version!r}")])
    if not isinstance(features, list) or len(features) != len(layout):
        size = len(features) if isinstance(features, list) else type(features).__name__
        problem = f"stored value ({size}) does not fit layout {version} ({len(layout)} values)"
        raise InvalidFeatures([FieldProblem("features", problem)])
    return dict(zip(layout, features, strict=True))


def _application_or_error(user_id: int, row: tuple[Any, ...] | None) -> Application | BaseException:
    try:
        return _application(user_id, row)
    except (UnknownUser, InvalidFeatures) as exc:
        return exc


def _application(user_id: int, row: tuple[Any, ...] | None) -> Application:
    if row is None:
        raise UnknownUser(user_id)
    try:
        return Application.parse(_named(row[0], row[1]))
    except InvalidFeatures as exc:
        raise exc.for_user(user_id) from None


def _prediction_row(p: Prediction) -> tuple[Any, ...]:
    return (
        p.prediction_id,
        p.user_id,
        p.probability,
        p.is_fraud,
        p.threshold,
        p.model_version,
        p.route,
        p.created_at,
    )


class PostgresFeatureStore:
    """:class:`~fraudscore.FeatureRepository` on a blocking connection pool."""

    def __init__(self, pool: psycopg_pool.ConnectionPool[Any]) -> None:
        self._pool = pool

    def latest(self, user_id: int) -> Application:
        """The newest stored application of ``user_id``."""
        with store_errors("reading features"), self._pool.connection() as conn:
            row = conn.execute(LATEST_SQL, (user_id,), prepare=True).fetchone()
        return _application(user_id, row)


class PostgresPredictionSink:
    """:class:`~fraudscore.PredictionSink` on a blocking connection pool (autocommit)."""

    def __init__(self, pool: psycopg_pool.ConnectionPool[Any]) -> None:
        self._pool = pool

    def record(self, prediction: Prediction) -> None:
        """Insert ``prediction``; returns once the row is committed."""
        with store_errors("recording the prediction"), self._pool.connection() as conn:
            conn.execute(INSERT_PREDICTION_SQL, _prediction_row(prediction), prepare=True)


class AsyncPostgresFeatureStore:
    """:class:`~fraudscore.AsyncFeatureRepository` on an async pool.

    Concurrent lookups are micro-batched into one ``user_id = ANY(...)`` query per batch
    (about a third of the CPU of one query per user), at most ``concurrency`` queries at once.
    """

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool[Any],
        *,
        max_batch: int = 128,
        concurrency: int = 2,
    ) -> None:
        self._pool = pool
        self._batcher: MicroBatcher[int, Application] = MicroBatcher(
            self._latest_many, max_batch=max_batch, concurrency=concurrency
        )

    async def latest(self, user_id: int) -> Application:
        """The newest stored application of ``user_id``."""
        return await self._batcher.submit(user_id)

    async def _latest_many(self, user_ids: Sequence[int]) -> list[Application | BaseException]:
        with store_errors("reading features"):
            async with self._pool.connection() as conn:
                cursor = await conn.execute(LATEST_MANY_SQL, (list(user_ids),), prepare=True)
                rows = {row[0]: row[1:] for row in await cursor.fetchall()}
        return [_application_or_error(uid, rows.get(uid)) for uid in user_ids]


class AsyncPostgresPredictionSink:
    """:class:`~fraudscore.AsyncPredictionSink` on an async pool.

    Concurrent records are micro-batched into one multi-row INSERT (one commit, one WAL flush
    per batch); every caller returns only once the statement holding its row has committed.
    """

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool[Any],
        *,
        max_batch: int = 256,
        concurrency: int = 2,
    ) -> None:
        self._pool = pool
        self._batcher: MicroBatcher[Prediction, None] = MicroBatcher(
            self._record_many, max_batch=max_batch, concurrency=concurrency
        )

    async def record(self, prediction: Prediction) -> None:
        """Insert ``prediction``; returns once the row is committed."""
        await self._batcher.submit(prediction)

    async def _record_many(self, predictions: Sequence[Prediction]) -> list[None]:
        columns = [list(c) for c in zip(*map(_prediction_row, predictions), strict=True)]
        with store_errors("recording the prediction"):
            async with self._pool.connection() as conn:
                await conn.execute(INSERT_PREDICTIONS_SQL, columns, prepare=True)
        return [None] * len(predictions)


def _pool_options(
    min_size: int, max_size: int, timeout_s: float, statement_timeout_ms: int
) -> dict[str, Any]:
    """What both pools share: bounded sizes and waits, opened explicitly by the caller."""
    connect_timeout_s = max(1, int(timeout_s))
    return {
        "min_size": min_size,
        "max_size": max_size,
        "timeout": timeout_s,
        "open": False,
        "kwargs": connection_kwargs(
            statement_timeout_ms=statement_timeout_ms, connect_timeout_s=connect_timeout_s
        ),
    }


def open_pool(
    conninfo: str,
    *,
    min_size: int,
    max_size: int,
    timeout_s: float,
    statement_timeout_ms: int,
    name: str = "fraudscore",
) -> psycopg_pool.ConnectionPool[Any]:
    """A checked, bounded blocking pool; raises StoreUnavailable if none can be opened."""
    pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
        conninfo,
        name=name,
        check=psycopg_pool.ConnectionPool.check_connection,
        configure=configure_json,
        **_pool_options(min_size, max_size, timeout_s, statement_timeout_ms),
    )
    with store_errors("opening the connection pool"):
        pool.open(wait=True, timeout=timeout_s)
    return pool


async def open_async_pool(
    conninfo: str,
    *,
    min_size: int,
    max_size: int,
    timeout_s: float,
    statement_timeout_ms: int,
    name: str = "fraudscore-async",
) -> psycopg_pool.AsyncConnectionPool[Any]:
    """The async twin of :func:`open_pool`."""
    pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
        conninfo,
        name=name,
        check=psycopg_pool.AsyncConnectionPool.check_connection,
        configure=_async_configure,
        **_pool_options(min_size, max_size, timeout_s, statement_timeout_ms),
    )
    with store_errors("opening the connection pool"):
        await pool.open(wait=True, timeout=timeout_s)
    return pool


async def _async_configure(conn: psycopg.AsyncConnection[Any]) -> None:
    configure_json(conn)
