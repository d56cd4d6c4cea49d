"""PostgreSQL adapters (psycopg 3): the feature store and the prediction sink.

Blocking classes run on a :class:`psycopg_pool.ConnectionPool`, async ones on an
:class:`psycopg_pool.AsyncConnectionPool`; both share the SQL and the row mapping below, so
only the I/O differs. Pools are built and opened by the caller (the composition root), never at
import. Every statement takes parameters; no SQL is built from strings of data.

Faults become domain errors: a pool that cannot hand out a connection in time, a server that
is down, or a statement that runs past its timeout raise ``StoreUnavailable`` quickly; the pool
checks connections on checkout (all idle ones once one is found broken) and reconnects in the
background, so the adapter recovers by itself when the database comes back or wakes up.
Messages never carry the connection string.

Behind a transaction-mode pooler (PgBouncer; Neon's ``-pooler`` endpoints) consecutive
statements of one client may run in different server sessions, so server-side prepared
statements are off there (:func:`use_prepared_statements`), and startup options such as
``statement_timeout`` are not sent (the pooler refuses them; set it on the role instead).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import msgspec
import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import set_json_loads

from fraudscore import (
    FEATURE_NAMES,
    Application,
    FraudscoreError,
    InvalidFeatures,
    Prediction,
    StoreUnavailable,
    UnknownUser,
)
from fraudscore.schema import FieldProblem
from fraudscore_adapters.settings import PREPARED_STATEMENT_MODES

__all__ = [
    "AsyncPostgresFeatureStore",
    "AsyncPostgresPredictionSink",
    "PostgresFeatureStore",
    "PostgresPredictionSink",
    "connection_kwargs",
    "pooled_endpoint",
    "redact",
    "startup_statement_timeout_ms",
    "store_errors",
    "use_prepared_statements",
]

FEATURE_VERSION = "baf-v1"
"""The layout new rows are written in: a JSON array of the cleaned values, schema order."""
FEATURE_LAYOUTS: dict[str, tuple[str, ...]] = {FEATURE_VERSION: FEATURE_NAMES}
"""The feature names, in array order, of every ``feature_version`` the store may hold."""

# Parameters go as one text value each (a bigint[] literal, a JSON document) and the server
# parses them: psycopg's Python-side array dumping cost 4x more CPU per batch (measured: 64
# ids 694 -> 434 us; 64 predictions 1727 -> 379 us).
LATEST_MANY_SQL = """
    SELECT DISTINCT ON (user_id) user_id, features, feature_version FROM feature_store
    WHERE user_id = ANY(%s::bigint[])
    ORDER BY user_id, created_at DESC, id DESC
"""
INSERT_PREDICTIONS_SQL = """
    INSERT INTO predictions
        (id, user_id, probability, is_fraud, threshold, model_version, route, created_at)
    SELECT * FROM json_to_recordset(%s::json) AS r(
        prediction_id uuid, user_id bigint, probability float8, is_fraud boolean,
        threshold float8, model_version text, route text, created_at timestamptz
    )
    ON CONFLICT (id) DO NOTHING
"""

_SECRET = re.compile(
    r"(://[^:/@\s]*:)[^@\s]*@|(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE
)
_CONNINFO_ERROR = re.compile(r"connection info string|URI|percent-encoded|connection option")
_QUOTED = re.compile(r'"[^"]*"')
_JSON = msgspec.json.Decoder()
_JSON_ENCODER = msgspec.json.Encoder()
T = TypeVar("T")
P = TypeVar("P")  # a connection pool, blocking or async

POOLER_HOST_MARK = "-pooler"
"""A host name containing this is a transaction-mode pooler (Neon's pooled endpoints)."""


def redact(text: str) -> str:
    """``text`` with any password in a connection string replaced by ``***``."""
    return _SECRET.sub(lambda m: f"{m.group(1)}***@" if m.group(1) else f"{m.group(2)}***", text)


def pooled_endpoint(conninfo: str) -> bool:
    """Whether ``conninfo`` (URL or ``key=value``) names a pooler host (one with ``-pooler``)."""
    with store_errors("reading the connection string"):
        host = conninfo_to_dict(conninfo).get("host") or ""
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
    """Connection settings that bound every wait: connecting and each statement.

    ``statement_timeout_ms=0`` sends no startup option (the server's or the role's setting
    applies); ``prepare=False`` turns server-side prepared statements off for the connection,
    explicit ``prepare=True`` included.
    """
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": connect_timeout_s}
    if statement_timeout_ms > 0:
        kwargs["options"] = f"-c statement_timeout={statement_timeout_ms}"
    if not prepare:
        kwargs["prepare_threshold"] = None
    return kwargs


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
    except psycopg.ProgrammingError as exc:
        if exc.sqlstate is not None or not _CONNINFO_ERROR.search(str(exc)):
            raise
        raise StoreUnavailable(f"{what}: {_conninfo_problem(exc)}") from None


def _conninfo_problem(exc: psycopg.ProgrammingError) -> str:
    """libpq's complaint about a malformed connection string, minus the quoted text (which
    may be part of the password)."""
    problem = _QUOTED.sub('"***"', str(exc).strip().splitlines()[0])
    return f"malformed connection string: {problem} (percent-encode reserved characters)"


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


def _application_or_error(
    user_id: int, row: tuple[Any, ...] | None
) -> Application | FraudscoreError:
    """The stored application of ``user_id``, or the error its caller gets instead."""
    if row is None:
        return UnknownUser(user_id)
    try:
        return Application.parse(_named(row[0], row[1]))
    except InvalidFeatures as exc:
        return exc.for_user(user_id)


def _applications(
    user_ids: Sequence[int], rows: Sequence[tuple[Any, ...]]
) -> list[Application | FraudscoreError]:
    """Each user's application (or its error) from ``(user_id, features, version)`` rows."""
    by_user = {row[0]: row[1:] for row in rows}
    return [_application_or_error(uid, by_user.get(uid)) for uid in user_ids]


def _id_array(user_ids: Sequence[int]) -> str:
    """A ``bigint[]`` literal of the ids (they are ints: nothing to quote)."""
    return "{" + ",".join(map(str, user_ids)) + "}"


def _predictions_json(predictions: Sequence[Prediction]) -> str:
    """The predictions as a JSON array of objects, for ``json_to_recordset``."""
    return _JSON_ENCODER.encode(predictions).decode()


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
            ids = (_id_array(user_ids),)
            return conn.execute(LATEST_MANY_SQL, ids, prepare=self.prepare).fetchall()

        return _applications(
            user_ids, run_once_more_if_broken(self._pool, "reading features", read)
        )


class PostgresPredictionSink(_OnPool[psycopg_pool.ConnectionPool[Any]]):
    """:class:`~fraudscore.PredictionSink` on a blocking connection pool (autocommit).

    A batch is one multi-row INSERT, one commit, one WAL flush; it returns once that commit is
    done. The insert skips ids already stored, so the retry after a dead connection cannot
    duplicate a row.
    """

    def record_many(self, predictions: Sequence[Prediction]) -> None:
        """Insert ``predictions``; returns once their rows are committed."""
        rows = (_predictions_json(predictions),)

        def insert(conn: psycopg.Connection[Any]) -> None:
            conn.execute(INSERT_PREDICTIONS_SQL, rows, prepare=self.prepare)

        run_once_more_if_broken(self._pool, "recording predictions", insert)


class AsyncPostgresFeatureStore(_OnPool[psycopg_pool.AsyncConnectionPool[Any]]):
    """:class:`~fraudscore.AsyncFeatureRepository` on an async pool (same query per batch)."""

    async def latest_many(self, user_ids: Sequence[int]) -> list[Application | FraudscoreError]:
        """The newest stored application of each user (or its error), in order."""

        async def read(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            ids = (_id_array(user_ids),)
            return await (await conn.execute(LATEST_MANY_SQL, ids, prepare=self.prepare)).fetchall()

        rows = await arun_once_more_if_broken(self._pool, "reading features", read)
        return _applications(user_ids, rows)


class AsyncPostgresPredictionSink(_OnPool[psycopg_pool.AsyncConnectionPool[Any]]):
    """:class:`~fraudscore.AsyncPredictionSink` on an async pool (same INSERT per batch)."""

    async def record_many(self, predictions: Sequence[Prediction]) -> None:
        """Insert ``predictions``; returns once their rows are committed."""
        rows = (_predictions_json(predictions),)

        async def insert(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(INSERT_PREDICTIONS_SQL, rows, prepare=self.prepare)

        await arun_once_more_if_broken(self._pool, "recording predictions", insert)


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


def open_pool(
    conninfo: str,
    *,
    min_size: int,
    max_size: int,
    timeout_s: float,
    statement_timeout_ms: int,
    connect_timeout_s: int | None = None,
    prepare: bool = True,
    max_idle_s: float = 600.0,
    name: str = "fraudscore",
) -> psycopg_pool.ConnectionPool[Any]:
    """A bounded blocking pool; raises StoreUnavailable if none can be opened.

    Connections are not checked on checkout (a round trip per use, ~12-24% of throughput
    measured): the stores run :func:`run_once_more_if_broken` instead.
    """
    with store_errors("opening the connection pool"):
        conninfo_to_dict(conninfo)  # a malformed string fails here, not in a logged retry loop
    pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
        conninfo,
        name=name,
        configure=configure_json,
        **_pool_options(
            min_size,
            max_size,
            timeout_s,
            statement_timeout_ms,
            connect_timeout_s=connect_timeout_s,
            prepare=prepare,
            max_idle_s=max_idle_s,
        ),
    )
    with store_errors("opening the connection pool"):
        pool.open(wait=True, timeout=_open_wait_s(timeout_s, connect_timeout_s))
    return pool


async def open_async_pool(
    conninfo: str,
    *,
    min_size: int,
    max_size: int,
    timeout_s: float,
    statement_timeout_ms: int,
    connect_timeout_s: int | None = None,
    prepare: bool = True,
    max_idle_s: float = 600.0,
    name: str = "fraudscore-async",
) -> psycopg_pool.AsyncConnectionPool[Any]:
    """The async twin of :func:`open_pool`."""
    with store_errors("opening the connection pool"):
        conninfo_to_dict(conninfo)
    pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
        conninfo,
        name=name,
        configure=_async_configure,
        **_pool_options(
            min_size,
            max_size,
            timeout_s,
            statement_timeout_ms,
            connect_timeout_s=connect_timeout_s,
            prepare=prepare,
            max_idle_s=max_idle_s,
        ),
    )
    with store_errors("opening the connection pool"):
        await pool.open(wait=True, timeout=_open_wait_s(timeout_s, connect_timeout_s))
    return pool


async def _async_configure(conn: psycopg.AsyncConnection[Any]) -> None:
    configure_json(conn)
