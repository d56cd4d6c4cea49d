"""The PostgreSQL adapters: the feature store and the prediction sink, blocking and async.

Blocking classes run on a :class:`psycopg_pool.ConnectionPool`, async ones on an
:class:`psycopg_pool.AsyncConnectionPool`; both share the SQL and the row mapping
(:mod:`~fraudscore_adapters.postgres.rows`) and the fault policy
(:mod:`~fraudscore_adapters.postgres.faults`), so only the I/O differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import psycopg
import psycopg_pool

from fraudscore import Application, FraudscoreError, Prediction
from fraudscore_adapters.postgres.faults import arun_once_more_if_broken, run_once_more_if_broken
from fraudscore_adapters.postgres.rows import (
    INSERT_PREDICTIONS_SQL,
    LATEST_MANY_SQL,
    applications,
    id_array,
    predictions_json,
)

__all__ = [
    "AsyncPostgresFeatureStore",
    "AsyncPostgresPredictionSink",
    "PostgresFeatureStore",
    "PostgresPredictionSink",
]

P = TypeVar("P")  # a connection pool, blocking or async


class _OnPool(Generic[P]):
    """An adapter on a connection pool, blocking or async."""

    def __init__(self, pool: P, *, prepare: bool = True) -> None:
        self._pool = pool
        self.prepare = prepare
        """Prepare statements on the server (off behind a transaction-mode pooler)."""


class PostgresFeatureStore(_OnPool[psycopg_pool.ConnectionPool[Any]]):
    """:class:`~fraudscore.FeatureRepository` on a blocking connection pool.

    A batch of users is one ``user_id = ANY(...)`` query (about a third of the CPU of one query
    per user, measured); the caller decides how many users a batch holds.
    """

    def latest_many(self, user_ids: Sequence[int]) -> list[Application | FraudscoreError]:
        """The newest stored application of each user (or its error), in order."""

        def read(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            ids = (id_array(user_ids),)
            return conn.execute(LATEST_MANY_SQL, ids, prepare=self.prepare).fetchall()

        return applications(user_ids, run_once_more_if_broken(self._pool, "reading features", read))


class PostgresPredictionSink(_OnPool[psycopg_pool.ConnectionPool[Any]]):
    """:class:`~fraudscore.PredictionSink` on a blocking connection pool (autocommit).

    A batch is one multi-row INSERT, one commit, one WAL flush; it returns once that commit is
    done. The insert skips ids already stored, so the retry after a dead connection cannot
    duplicate a row.
    """

    def record_many(self, predictions: Sequence[Prediction]) -> None:
        """Insert ``predictions``; returns once their rows are committed."""
        rows = (predictions_json(predictions),)

        def insert(conn: psycopg.Connection[Any]) -> None:
            conn.execute(INSERT_PREDICTIONS_SQL, rows, prepare=self.prepare)

        run_once_more_if_broken(self._pool, "recording predictions", insert)


class AsyncPostgresFeatureStore(_OnPool[psycopg_pool.AsyncConnectionPool[Any]]):
    """:class:`~fraudscore.AsyncFeatureRepository` on an async pool (same query per batch)."""

    async def latest_many(self, user_ids: Sequence[int]) -> list[Application | FraudscoreError]:
        """The newest stored application of each user (or its error), in order."""

        async def read(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            ids = (id_array(user_ids),)
            return await (await conn.execute(LATEST_MANY_SQL, ids, prepare=self.prepare)).fetchall()

        rows = await arun_once_more_if_broken(self._pool, "reading features", read)
        return applications(user_ids, rows)


class AsyncPostgresPredictionSink(_OnPool[psycopg_pool.AsyncConnectionPool[Any]]):
    """:class:`~fraudscore.AsyncPredictionSink` on an async pool (same INSERT per batch)."""

    async def record_many(self, predictions: Sequence[Prediction]) -> None:
        """Insert ``predictions``; returns once their rows are committed."""
        rows = (predictions_json(predictions),)

        async def insert(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(INSERT_PREDICTIONS_SQL, rows, prepare=self.prepare)

        await arun_once_more_if_broken(self._pool, "recording predictions", insert)
