"""Faults on a real PostgreSQL: bad rows, refused rows, errors, deadlines, outages.

The tests that freeze, stop or restart a server do it to a throwaway cluster of their own
(:mod:`tests.pgcluster`), never to the shared one; the others run on the suite's database.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from fraudscore import (
    FEATURE_NAMES,
    Application,
    InvalidFeatures,
    Prediction,
    StoreError,
    StoreUnavailable,
)
from fraudscore_adapters import deadlines, postgres
from fraudscore_adapters.migrate import apply_migrations
from tests.conftest import MIGRATIONS, fresh_database
from tests.pgcluster import ThrowawayCluster, postgres_bin
from tests.support import application

pytestmark = pytest.mark.integration

Pool = Any


def pool_on(url: str, *, size: int = 2, timeout_s: float = 2.0, statement_ms: int = 0) -> Pool:
    return postgres.open_pool(
        url, min_size=size, max_size=size, timeout_s=timeout_s, statement_timeout_ms=statement_ms
    )


async def apool_on(url: str, *, size: int = 2, timeout_s: float = 2.0) -> Pool:
    return await postgres.open_async_pool(
        url, min_size=size, max_size=size, timeout_s=timeout_s, statement_timeout_ms=0
    )


def store_rows(url: str, rows: list[tuple[int, str, str]]) -> None:
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            "INSERT INTO feature_store (user_id, features, feature_version)"
            " VALUES (%s, %s::jsonb, %s)",
            rows,
        )


def document(field: str, literal: str) -> str:
    values = [json.dumps(v) for v in application().values]
    values[FEATURE_NAMES.index(field)] = literal
    return "[" + ",".join(values) + "]"


POISON = {
    11: ("income", "1e400"),
    12: ("income", "[" * 3_000 + "]" * 3_000),
    13: ("device_os", json.dumps("x" * 100_000)),
    14: ("source", '{"nested": {"object": [1, 2]}}'),
    15: ("customer_age", '"forty"'),
    16: ("income", "1" + "0" * 400),
}


def test_poison_rows_fail_only_their_own_users_in_one_batch(db: str) -> None:
    valid = json.dumps(list(application().values))
    store_rows(db, [(u, valid, "baf-v1") for u in (1, 2, 3)])
    store_rows(db, [(u, document(f, lit), "baf-v1") for u, (f, lit) in POISON.items()])
    ids = [1, *POISON, 2, 3]
    with pool_on(db) as pool:
        found = postgres.PostgresFeatureStore(pool).latest_many(ids)
    by_user = dict(zip(ids, found, strict=True))
    assert [by_user[u] for u in (1, 2, 3)] == [application()] * 3
    for user, (field, _) in POISON.items():
        error = by_user[user]
        assert isinstance(error, InvalidFeatures), (user, error)
        assert error.user_id == user
        assert [p.field for p in error.problems] == [field]
        assert len(str(error)) < 400


def test_a_call_past_its_deadline_is_cut_by_the_client(db: str) -> None:
    """statement_timeout is off (as on a frozen server, which never applies it): the client's
    own deadline shuts the connection down, and the pool carries on."""

    def sleep(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT pg_sleep(5)")

    with pool_on(db, size=1) as pool:
        began = time.perf_counter()
        with pytest.raises(StoreUnavailable, match=r"sleeping: no answer within 0\.3 s"):
            postgres.run(pool, "sleeping", sleep, timeout_s=0.3)
        assert time.perf_counter() - began < 0.8
        with (  # an ambient deadline wins when it is earlier
            deadlines.until(time.monotonic() + 0.2),
            pytest.raises(StoreUnavailable, match=r"no answer within 0\.2 s"),
        ):
            postgres.run(pool, "sleeping", sleep, timeout_s=5)
        with pool.connection() as conn:  # the broken connection was replaced
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_an_async_call_past_its_deadline_is_cut_too(db: str) -> None:
    async def main() -> float:
        apool = await apool_on(db, size=1)
        try:

            async def sleep(conn: psycopg.AsyncConnection[Any]) -> None:
                await conn.execute("SELECT pg_sleep(5)")

            began = time.perf_counter()
            with pytest.raises(StoreUnavailable, match="no answer within"):
                await postgres.arun(apool, "sleeping", sleep, timeout_s=0.3)
            took = time.perf_counter() - began
            async with apool.connection() as conn:
                assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
            return took
        finally:
            await apool.close()

    assert asyncio.run(main()) < 0.8


def prediction(user_id: int) -> Prediction:
    return Prediction(uuid.uuid4(), user_id, 0.2, False, 0.5, "t", "sync", datetime.now(UTC))


@pytest.fixture
def refusing(db: str) -> Iterator[str]:
    """The run's database, with a trigger refusing the predictions of user 13."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            """
            CREATE FUNCTION refuse_13() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.user_id = 13 THEN RAISE EXCEPTION 'user 13 is blocked'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_13 BEFORE INSERT ON predictions
                FOR EACH ROW EXECUTE FUNCTION refuse_13();
            """
        )
    try:
        yield db
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("DROP TRIGGER refuse_13 ON predictions; DROP FUNCTION refuse_13()")


def stored_ids(url: str) -> set[int]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT user_id FROM predictions").fetchall()}


def test_a_row_the_database_refuses_costs_only_its_own_answer(refusing: str) -> None:
    batch = [prediction(u) for u in (12, 13, 14)]
    with pool_on(refusing) as pool:
        results = postgres.PostgresPredictionSink(pool).record_many(batch)
        assert results is not None
        fine, refused, also_fine = results
        assert (fine, also_fine) == (None, None)
        assert isinstance(refused, StoreError)
        assert "user 13 is blocked" in str(refused)
        assert postgres.PostgresPredictionSink(pool).record_many([prediction(15)]) is None
    assert stored_ids(refusing) == {12, 14, 15}


def test_the_async_sink_records_row_by_row_the_same_way(refusing: str) -> None:
    async def main() -> object:
        apool = await apool_on(refusing)
        try:
            sink = postgres.AsyncPostgresPredictionSink(apool)
            return await sink.record_many([prediction(u) for u in (13, 21)])
        finally:
            await apool.close()

    results = asyncio.run(main())
    assert isinstance(results, list)
    assert isinstance(results[0], StoreError)
    assert results[1] is None
    assert stored_ids(refusing) == {21}


@pytest.fixture
def scratch(server_url: str) -> Iterator[str]:
    """A migrated database of this test's own, to break as it likes."""
    with fresh_database(server_url) as url:
        apply_migrations(url, MIGRATIONS)
        yield url


def as_admin(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement.encode())


def test_a_read_only_database_is_unavailable_and_not_ready(scratch: str) -> None:
    name = scratch.rsplit("/", 1)[-1]
    as_admin(scratch, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    with pool_on(scratch) as pool:
        with pytest.raises(StoreUnavailable, match="read-only transaction"):
            postgres.PostgresPredictionSink(pool).record_many([prediction(1)])
        assert "read-only" in postgres.probe(pool, 2.0)
        assert postgres.PostgresFeatureStore(pool).latest_many([1]) != []  # reads still work


def test_missing_tables_and_privileges_are_named_store_errors(scratch: str) -> None:
    role = f"reader_{uuid.uuid4().hex[:8]}"
    as_admin(scratch, f"CREATE ROLE {role} LOGIN; GRANT SELECT ON feature_store TO {role}")
    try:
        reader = scratch.replace("postgres@", f"{role}@", 1)
        with pool_on(reader) as pool:
            assert postgres.probe(pool, 2.0) == (
                "store error: the role may not read feature_store or insert into predictions"
            )
            with pytest.raises(StoreError, match=r"permission denied .*\(42501\)"):
                postgres.PostgresPredictionSink(pool).record_many([prediction(1)])
    finally:
        as_admin(scratch, f"DROP OWNED BY {role}; DROP ROLE {role}")
    as_admin(scratch, "DROP TABLE predictions")
    with pool_on(scratch) as pool:
        with pytest.raises(StoreError, match=r"relation \"predictions\" does not exist \(42P01\)"):
            postgres.PostgresPredictionSink(pool).record_many([prediction(1)])
        assert postgres.probe(pool, 2.0).startswith("store error: readiness probe:")


needs_cluster = pytest.mark.skipif(postgres_bin() is None, reason="no initdb on this machine")


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    """A throwaway cluster with the schema and user 1 stored; resumed and removed after."""
    with ThrowawayCluster() as throwaway:
        as_admin(throwaway.url(), "CREATE DATABASE app")
        apply_migrations(throwaway.url("app"), MIGRATIONS)
        store_rows(throwaway.url("app"), [(1, json.dumps(list(application().values)), "baf-v1")])
        yield throwaway


def read_one(store: postgres.PostgresFeatureStore) -> Application | Exception:
    try:
        (found,) = store.latest_many([1])
    except StoreUnavailable as exc:
        return exc
    assert isinstance(found, Application)
    return found


@needs_cluster
def test_a_frozen_server_gives_503s_within_the_deadline_and_recovers(
    cluster: ThrowawayCluster,
) -> None:
    with pool_on(cluster.url("app"), timeout_s=3.0) as pool:
        store = postgres.PostgresFeatureStore(pool, timeout_s=1.0)
        assert read_one(store) == application()
        cluster.freeze()
        began = time.perf_counter()
        answers = [read_one(store) for _ in range(3)]
        took = time.perf_counter() - began
        probe_began = time.perf_counter()
        probe = postgres.probe(pool, 0.5)
        probe_took = time.perf_counter() - probe_began
        cluster.thaw()
        thawed = time.perf_counter()
        while not isinstance(read_one(store), Application):
            assert time.perf_counter() - thawed < 3
        recovered = time.perf_counter() - thawed
    assert all(isinstance(a, StoreUnavailable) for a in answers), answers
    assert took < 3 * 1.0 + 0.5  # each answered within its 1 s deadline
    assert probe != "ok"
    assert probe_took < 1.0
    assert recovered < 1.5


@needs_cluster
def test_an_async_pool_on_a_frozen_server_answers_in_time_too(cluster: ThrowawayCluster) -> None:
    async def main() -> tuple[list[Any], float, str]:
        apool = await apool_on(cluster.url("app"), timeout_s=3.0)
        try:
            store = postgres.AsyncPostgresFeatureStore(apool, timeout_s=1.0)
            assert await store.latest_many([1]) == [application()]
            cluster.freeze()
            began = time.perf_counter()
            answers = await asyncio.gather(
                *(store.latest_many([1]) for _ in range(4)), return_exceptions=True
            )
            took = time.perf_counter() - began
            probe = await postgres.aprobe(apool, 0.5)
            return answers, took, probe
        finally:
            cluster.thaw()
            await apool.close()

    answers, took, probe = asyncio.run(main())
    assert all(isinstance(a, StoreUnavailable) for a in answers), answers
    assert took < 1.5
    assert probe != "ok"


Asked = list[tuple[float, bool, float]]
"""(when, answered, how long it took) of each read."""


def keep_asking(ask: Callable[[], object], stop: threading.Event, log: Asked) -> None:
    """Ask every 0.1 s, as live traffic would, noting each answer until stopped."""
    while not stop.is_set():
        began = time.monotonic()
        answered = isinstance(ask(), Application)
        log.append((began, answered, time.monotonic() - began))
        time.sleep(0.1)


def check_outage(log: Asked, stopped: float, back: float) -> None:
    """Down while stopped, each failure answered at once once the pool knows (not at the
    deadline), and answering again within 1.2 s of the server accepting."""
    during = [(ok, took) for at, ok, took in log if stopped + 1.5 < at < back - 1]
    assert during
    assert not any(ok for ok, _ in during)
    assert max(took for _, took in during) < 0.5  # fail fast, not at the 1 s deadline
    first = next(at + took for at, ok, took in log if ok and at > back)
    assert first - back < 1.2


@needs_cluster
def test_after_a_long_outage_the_pool_reconnects_within_a_second(
    cluster: ThrowawayCluster,
) -> None:
    """psycopg_pool doubles its wait between reconnection attempts (1, 2, 4, 8 s ...): after
    an 8 s outage its next attempt came ~7 s after the server was back. Capped at 0.5 s."""
    with pool_on(cluster.url("app"), timeout_s=1.0) as pool:
        store = postgres.PostgresFeatureStore(pool, timeout_s=1.0)
        assert read_one(store) == application()
        stop, log = threading.Event(), Asked()
        asker = threading.Thread(target=keep_asking, args=(lambda: read_one(store), stop, log))
        asker.start()
        try:
            cluster.stop()
            stopped = time.monotonic()
            time.sleep(8)
            cluster.start()
            back = time.monotonic()
            time.sleep(2.5)
        finally:
            stop.set()
            asker.join(5)
    check_outage(log, stopped, back)


@needs_cluster
def test_an_async_pool_reconnects_within_a_second_after_an_outage_too(
    cluster: ThrowawayCluster,
) -> None:
    async def main() -> tuple[Asked, float, float]:
        apool = await apool_on(cluster.url("app"), timeout_s=1.0)
        store = postgres.AsyncPostgresFeatureStore(apool, timeout_s=1.0)
        log = Asked()

        async def ask_until(end: float) -> None:
            while time.monotonic() < end:
                began = time.monotonic()
                try:
                    answered = await store.latest_many([1]) == [application()]
                except StoreUnavailable:
                    answered = False
                log.append((began, answered, time.monotonic() - began))
                await asyncio.sleep(0.1)

        try:
            await asyncio.to_thread(cluster.stop)
            stopped = time.monotonic()
            await ask_until(stopped + 8)
            await asyncio.to_thread(cluster.start)
            back = time.monotonic()
            await ask_until(back + 2.5)
            return log, stopped, back
        finally:
            await apool.close()

    check_outage(*asyncio.run(main()))
