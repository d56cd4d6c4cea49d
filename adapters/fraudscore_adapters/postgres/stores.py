"""The PostgreSQL adapters: the feature store and the prediction sink, blocking and async.

Blocking classes run on a :class:`psycopg_pool.ConnectionPool`, async ones on an
:class:`psycopg_pool.AsyncConnectionPool`; both share the SQL and the row mapping
(:mod:`~fraudscore_adapters.postgres.rows`) and the fault policy
(:mod:`~fraudscore_adapters.postgres.faults`), so only the I/O differs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import psycopg
import psycopg_pool

from fraudscore import Application, FraudscoreError, Prediction, StoreError, StoreUnavailable
from fraudscore.ports import Recorded
from fraudscore_adapters.postgres.faults import arun, is_row_fault, run
from fraudscore_adapters.postgres.rows import (
    INSERT_PREDICTIONS_SQL,
    LATEST_MANY_SQL,
    READY_SQL,
    applications,
    id_array,
    predictions_json,
    readiness,
)

__all__ = [
    "AsyncPostgresFeatureStore",
    "AsyncPostgresPredictionSink",
    "PostgresFeatureStore",
    "PostgresPredictionSink",
    "aprobe",
    "probe",
]

log = logging.getLogger("fraudscore.postgres")
P = TypeVar("P")  # a connection pool, blocking or async


DEFAULT_TIMEOUT_S = 3.0
"""A call's deadline when no ambient one is in force (a library caller, a CLI)."""


class _OnPool(Generic[P]):
    """An adapter on a connection pool, blocking or async."""

    def __init__(
        self, pool: P, *, prepare: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self._pool = pool
        self.prepare = prepare
        """Prepare statements on the server (off behind a transaction-mode pooler)."""
        self.timeout_s = timeout_s
        """Each call's deadline, unless an earlier one is in force (:mod:`..deadlines`)."""


class PostgresFeatureStore(_OnPool[psycopg_pool.ConnectionPool[Any]]):
    """:class:`~fraudscore.FeatureRepository` on a blocking connection pool.

    A batch of users is one ``user_id = ANY(...)`` query (about a third of the CPU of one query
    per user, measured); the caller decides how many users a batch holds. Each row is decoded
    and validated on its own: a malformed one settles its own user only.
    """

    def latest_many(self, user_ids: Sequence[int]) -> list[Application | FraudscoreError]:
        """The newest stored application of each user (or its error), in order."""

        def read(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            ids = (id_array(user_ids),)
            return conn.execute(LATEST_MANY_SQL, ids, prepare=self.prepare).fetchall()

        rows = run(self._pool, "reading features", read, timeout_s=self.timeout_s)
        return applications(user_ids, rows)


class PostgresPredictionSink(_OnPool[psycopg_pool.ConnectionPool[Any]]):
    """:class:`~fraudscore.PredictionSink` on a blocking connection pool (autocommit).

    A batch is one multi-row INSERT, one commit, one WAL flush; it returns once that commit is
    done. The insert skips ids already stored, so the retry after a dead connection cannot
    duplicate a row. If the database refuses the batch for one of its rows (a constraint, a
    trigger, a value), each row is inserted on its own: the rows it takes are committed and
    answered, the others get their own error.
    """

    def record_many(self, predictions: Sequence[Prediction]) -> Recorded:
        """Insert ``predictions``; return once their rows are committed (see the class)."""
        try:
            self._insert(predictions)
        except StoreError as exc:
            if len(predictions) == 1 or not is_row_fault(exc):
                raise
            log.warning("%s; recording its %d rows one by one", exc, len(predictions))
            return self._row_by_row(predictions)
        return None

    def _insert(self, predictions: Sequence[Prediction]) -> None:
        rows = (predictions_json(predictions),)

        def insert(conn: psycopg.Connection[Any]) -> None:
            conn.execute(INSERT_PREDICTIONS_SQL, rows, prepare=self.prepare)

        run(self._pool, "recording predictions", insert, timeout_s=self.timeout_s)

    def _row_by_row(self, predictions: Sequence[Prediction]) -> list[FraudscoreError | None]:
        results = _RowByRow(len(predictions))
        for prediction in predictions:
            try:
                self._insert([prediction])
            except (StoreUnavailable, StoreError) as exc:
                if results.failed(exc):
                    break
            else:
                results.append(None)
        return results


class AsyncPostgresFeatureStore(_OnPool[psycopg_pool.AsyncConnectionPool[Any]]):
    """:class:`~fraudscore.AsyncFeatureRepository` on an async pool (same query per batch)."""

    async def latest_many(self, user_ids: Sequence[int]) -> list[Application | FraudscoreError]:
        """The newest stored application of each user (or its error), in order."""

        async def read(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            ids = (id_array(user_ids),)
            return await (await conn.execute(LATEST_MANY_SQL, ids, prepare=self.prepare)).fetchall()

        rows = await arun(self._pool, "reading features", read, timeout_s=self.timeout_s)
        return applications(user_ids, rows)


class AsyncPostgresPredictionSink(_OnPool[psycopg_pool.AsyncConnectionPool[Any]]):
    """:class:`~fraudscore.AsyncPredictionSink` on an async pool (same INSERT per batch, and
    the same row-by-row answer when the database refuses one of its rows)."""

    async def record_many(self, predictions: Sequence[Prediction]) -> Recorded:
        """Insert ``predictions``; return once their rows are committed."""
        try:
            await self._insert(predictions)
        except StoreError as exc:
            if len(predictions) == 1 or not is_row_fault(exc):
                raise
            log.warning("%s; recording its %d rows one by one", exc, len(predictions))
            return await self._row_by_row(predictions)
        return None

    async def _insert(self, predictions: Sequence[Prediction]) -> None:
        rows = (predictions_json(predictions),)

        async def insert(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(INSERT_PREDICTIONS_SQL, rows, prepare=self.prepare)

        await arun(self._pool, "recording predictions", insert, timeout_s=self.timeout_s)

    async def _row_by_row(self, predictions: Sequence[Prediction]) -> list[FraudscoreError | None]:
        results = _RowByRow(len(predictions))
        for prediction in predictions:
            try:
                await self._insert([prediction])
            except (StoreUnavailable, StoreError) as exc:
                if results.failed(exc):
                    break
            else:
                results.append(None)
        return results


class _RowByRow(list[FraudscoreError | None]):
    """Each row's outcome of a batch inserted row by row, and the rule for a failed row: the
    database refusing that row settles it alone; the store going away settles it and every
    row not tried yet (the caller stops)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def failed(self, exc: StoreUnavailable | StoreError) -> bool:
        """Take a row's error; True when the rest of the batch must not be tried."""
        if isinstance(exc, StoreUnavailable):
            self.extend([exc] * (self.size - len(self)))
            return True
        self.append(exc)
        return False


def probe(pool: psycopg_pool.ConnectionPool[Any], timeout_s: float) -> str:
    """Readiness of a blocking pool: ``ok``, or why requests on it would fail."""

    def check(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
        return conn.execute(READY_SQL, prepare=False).fetchone()

    try:
        return readiness(run(pool, "readiness probe", check, timeout_s=timeout_s))
    except FraudscoreError as exc:
        return str(exc)


async def aprobe(pool: psycopg_pool.AsyncConnectionPool[Any], timeout_s: float) -> str:
    """Readiness of an async pool: ``ok``, or why requests on it would fail."""

    async def check(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
        return await (await conn.execute(READY_SQL, prepare=False)).fetchone()

    try:
        return readiness(await arun(pool, "readiness probe", check, timeout_s=timeout_s))
    except FraudscoreError as exc:
        return str(exc)
