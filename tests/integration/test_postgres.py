"""PostgreSQL specifics: migrations, bulk loads, bad rows, and a server that goes away."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

from fraudscore import (
    Application,
    InvalidFeatures,
    Prediction,
    StoreError,
    StoreUnavailable,
    UnknownUser,
)
from fraudscore_adapters import postgres
from fraudscore_adapters.baf import clean_frame
from fraudscore_adapters.bulkload import copy_features, insert_features_executemany
from fraudscore_adapters.migrate import (
    apply_migrations,
    pending_migrations,
    rollback_migrations,
    yoyo_url,
)
from tests.conftest import MIGRATIONS
from tests.support import RAW_APPLICATION, alatest, application, latest, raw

pytestmark = pytest.mark.integration


def open_pool(url: str, timeout_s: float = 2.0, statement_timeout_ms: int = 2_000) -> Any:
    return postgres.open_pool(
        url,
        min_size=1,
        max_size=1,
        timeout_s=timeout_s,
        statement_timeout_ms=statement_timeout_ms,
    )


ALL_MIGRATIONS = [
    "0001.feature-store",
    "0002.predictions",
    "0003.api-keys",
    "0004.app-role",
    "0005.prediction-reasons",
]


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename NOT LIKE '\\_yoyo%%' AND tablename NOT LIKE 'yoyo%%'"
        ).fetchall()
    return {r[0] for r in rows}


def test_migrations_apply_roll_back_and_reapply(empty_database_url: str) -> None:
    url = empty_database_url
    assert pending_migrations(url, MIGRATIONS) == ALL_MIGRATIONS
    assert apply_migrations(url, MIGRATIONS) == ALL_MIGRATIONS
    assert tables(url) == {"feature_store", "predictions", "api_keys"}
    assert apply_migrations(url, MIGRATIONS) == []
    assert rollback_migrations(url, MIGRATIONS, count=3) == [
        "0005.prediction-reasons",
        "0004.app-role",
        "0003.api-keys",
    ]
    assert tables(url) == {"feature_store", "predictions"}
    assert rollback_migrations(url, MIGRATIONS, count=1) == ["0002.predictions"]
    assert tables(url) == {"feature_store"}
    assert rollback_migrations(url, MIGRATIONS) == ["0001.feature-store"]
    assert tables(url) == set()
    assert apply_migrations(url, MIGRATIONS) == ALL_MIGRATIONS
    assert pending_migrations(url, MIGRATIONS) == []


def test_concurrent_migration_runs_apply_each_migration_once(empty_database_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(apply_migrations(empty_database_url, MIGRATIONS))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results, key=len) == [[], [], [], ALL_MIGRATIONS]


def test_yoyo_url_takes_the_psycopg3_scheme_and_hides_secrets() -> None:
    assert yoyo_url("postgresql://u:p@h:5432/d?sslmode=require") == (
        "postgresql+psycopg://u:p@h:5432/d?sslmode=require"
    )
    with pytest.raises(ValueError, match=r"mysql://u:\*\*\*@h/d") as caught:
        yoyo_url("mysql://u:secret@h/d")
    assert "secret" not in str(caught.value)


def insert_raw_json(url: str, user_id: int, features: Any) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO feature_store (user_id, features, feature_version) VALUES (%s, %s, 'x')",
            (user_id, json.dumps(features)),
        )


def test_a_stored_row_that_fails_validation_names_user_and_field(db: str) -> None:
    insert_raw_json(db, 8, raw(customer_age=300, housing_status="QQ"))
    with open_pool(db) as pool, pytest.raises(InvalidFeatures) as caught:
        latest(postgres.PostgresFeatureStore(pool), 8)
    assert caught.value.user_id == 8
    assert {p.field for p in caught.value.problems} == {"customer_age", "housing_status"}
    assert "of user 8" in str(caught.value)


def test_a_stored_row_missing_a_field_is_invalid(db: str) -> None:
    broken = dict(RAW_APPLICATION)
    del broken["device_os"]
    insert_raw_json(db, 9, broken)
    with open_pool(db) as pool, pytest.raises(InvalidFeatures, match="device_os"):
        latest(postgres.PostgresFeatureStore(pool), 9)


def test_an_unreachable_server_fails_fast_without_leaking_the_password() -> None:
    url = "postgresql://fraud:hunter2@127.0.0.1:1/nowhere"
    started = time.perf_counter()
    with pytest.raises(StoreUnavailable) as caught:
        postgres.open_pool(url, min_size=1, max_size=1, timeout_s=1.0, statement_timeout_ms=500)
    assert time.perf_counter() - started < 5
    assert "hunter2" not in str(caught.value)


def test_the_store_recovers_after_its_connections_are_killed(db: str) -> None:
    store_pool = open_pool(db)
    store = postgres.PostgresFeatureStore(store_pool)
    copy_features_of(db, [1], [application()])
    try:
        assert latest(store, 1) == application()
        kill_connections(db)
        assert latest(store, 1) == application()  # checked on checkout, reconnected
    finally:
        store_pool.close()


def test_a_pool_that_cannot_get_a_connection_in_time_is_store_unavailable(db: str) -> None:
    with open_pool(db, timeout_s=0.5) as pool, pool.connection():
        started = time.perf_counter()
        with pytest.raises(StoreUnavailable, match="no database connection available"):
            latest(postgres.PostgresFeatureStore(pool), 1)
        assert time.perf_counter() - started < 3


def test_a_statement_past_its_timeout_is_store_unavailable(db: str) -> None:
    with (
        open_pool(db, statement_timeout_ms=200) as pool,
        pytest.raises(StoreUnavailable, match="statement timeout"),
        postgres.store_errors("sleeping"),
        pool.connection() as conn,
    ):
        conn.execute("SELECT pg_sleep(2)")


def kill_connections(url: str) -> None:
    dbname = url.rsplit("/", 1)[-1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )


def copy_features_of(url: str, user_ids: list[int], apps: list[Application]) -> None:
    rows = [{"user_id": u, **a.to_baf()} for u, a in zip(user_ids, apps, strict=True)]
    frame, _ = clean_frame(pl.DataFrame(rows), keep=["user_id"])
    with psycopg.connect(url) as conn:
        copy_features(conn, frame)


def test_bulk_load_reports_progress_and_a_reload_appends_a_version(db: str) -> None:
    n = 2_500
    rows = [{"user_id": i, **raw(customer_age=10 + 10 * (i % 9))} for i in range(n)]
    frame, _ = clean_frame(pl.DataFrame(rows), keep=["user_id"])
    seen: list[int] = []
    with psycopg.connect(db) as conn:
        assert (
            copy_features(conn, frame, batch_rows=1_000, progress=lambda d, t, s: seen.append(d))
            == n
        )
        newer = frame.with_columns(pl.lit(90).cast(pl.Int32).alias("customer_age"))
        insert_features_executemany(conn, newer.head(10))
        total = conn.execute(
            "SELECT count(*), count(DISTINCT user_id) FROM feature_store"
        ).fetchone()
    assert seen == [1_000, 2_000, 2_500]
    assert total == (n + 10, n)
    with open_pool(db) as pool:
        store = postgres.PostgresFeatureStore(pool)
        assert latest(store, 3)["customer_age"] == 90
        assert latest(store, 11)["customer_age"] == 30
        with pytest.raises(UnknownUser):
            latest(store, n)


def test_a_failed_load_leaves_the_previous_version_visible(db: str) -> None:
    copy_features_of(db, [1], [application(customer_age=20)])
    bad = pl.DataFrame({"user_id": [1, -5]}).with_columns(
        clean_frame(pl.DataFrame([raw(customer_age=80)] * 2))[0]
    )
    with psycopg.connect(db) as conn, pytest.raises(StoreError, match="check constraint") as caught:
        copy_features(conn, bad)
    assert isinstance(caught.value.__cause__, psycopg.errors.CheckViolation)
    with open_pool(db) as pool:
        assert latest(postgres.PostgresFeatureStore(pool), 1)["customer_age"] == 20


def test_async_store_errors_are_domain_errors() -> None:
    async def main() -> None:
        await postgres.open_async_pool(
            "postgresql://u:pw@127.0.0.1:1/x",
            min_size=1,
            max_size=1,
            timeout_s=1.0,
            statement_timeout_ms=500,
        )

    with pytest.raises(StoreUnavailable):
        asyncio.run(main())


def test_migrations_folder_has_a_rollback_for_every_migration() -> None:
    forward = {
        p.name.removesuffix(".sql") for p in MIGRATIONS.glob("*.sql") if ".rollback." not in p.name
    }
    rollback = {p.name.removesuffix(".rollback.sql") for p in MIGRATIONS.glob("*.rollback.sql")}
    assert forward == rollback == set(ALL_MIGRATIONS)
    assert Path(MIGRATIONS).is_dir()


def insert_row(url: str, user_id: int, features: Any, version: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO feature_store (user_id, features, feature_version) VALUES (%s, %s, %s)",
            (user_id, json.dumps(features), version),
        )


def test_rows_in_object_form_and_array_form_read_the_same(db: str) -> None:
    app = application(housing_status="BA")
    insert_row(db, 1, app.to_baf(), "hand-written")
    insert_row(db, 2, list(app.values), "baf-v1")
    with open_pool(db) as pool:
        store = postgres.PostgresFeatureStore(pool)
        assert latest(store, 1) == latest(store, 2) == app


@pytest.mark.parametrize(
    ("features", "version", "message"),
    [
        ([1, 2, 3], "baf-v1", "does not fit layout baf-v1"),
        (list(application().values), "baf-v9", "unknown layout 'baf-v9'"),
    ],
)
def test_arrays_that_do_not_fit_their_layout_are_invalid(
    db: str, features: Any, version: str, message: str
) -> None:
    insert_row(db, 4, features, version)
    with open_pool(db) as pool, pytest.raises(InvalidFeatures, match=message) as caught:
        latest(postgres.PostgresFeatureStore(pool), 4)
    assert caught.value.user_id == 4


def prepared_statements(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pg_prepared_statements", prepare=False).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(("prepare", "expected"), [(True, 2), (False, 0)])
def test_prepare_off_leaves_no_statement_on_the_server(
    db: str, prepare: bool, expected: int
) -> None:
    """What a transaction-mode pooler needs: no server-side prepared statement, ever."""
    copy_features_of(db, [1], [application()])
    with postgres.open_pool(
        db, min_size=1, max_size=1, timeout_s=2.0, statement_timeout_ms=2_000, prepare=prepare
    ) as pool:
        store = postgres.PostgresFeatureStore(pool, prepare=prepare)
        sink = postgres.PostgresPredictionSink(pool, prepare=prepare)
        for _ in range(8):  # past psycopg's automatic threshold (5) too
            sink.record_many([prediction_of(latest(store, 1))])
        with pool.connection() as conn:
            assert prepared_statements(conn) == expected


def test_async_stores_with_prepare_off_work_and_prepare_nothing(db: str) -> None:
    copy_features_of(db, [1, 2], [application(), application(customer_age=70)])

    async def main() -> tuple[list[object], int]:
        apool = await postgres.open_async_pool(
            db, min_size=1, max_size=1, timeout_s=2.0, statement_timeout_ms=0, prepare=False
        )
        try:
            store = postgres.AsyncPostgresFeatureStore(apool, prepare=False)
            sink = postgres.AsyncPostgresPredictionSink(apool, prepare=False)
            ages: list[object] = []
            for _ in range(6):
                apps = await asyncio.gather(alatest(store, 1), alatest(store, 2))
                await asyncio.gather(*(sink.record_many([prediction_of(a)]) for a in apps))
                ages = [a["customer_age"] for a in apps]
            async with apool.connection() as conn:
                cursor = await conn.execute("SELECT count(*) FROM pg_prepared_statements")
                row = await cursor.fetchone()
            assert row is not None
            return ages, int(row[0])
        finally:
            await apool.close()

    ages, prepared = asyncio.run(main())
    assert ages == [application()["customer_age"], 70]
    assert prepared == 0
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM predictions").fetchone() == (12,)


def test_without_a_startup_timeout_the_server_setting_applies(db: str) -> None:
    """statement_timeout_ms=0 sends no startup option: what a pooler (which refuses it) needs."""
    with (
        postgres.open_pool(
            db, min_size=1, max_size=1, timeout_s=2.0, statement_timeout_ms=0, connect_timeout_s=10
        ) as pool,
        pool.connection() as conn,
    ):
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert conn.info.get_parameters().get("connect_timeout") == "10"
    with open_pool(db, statement_timeout_ms=1_500) as pool, pool.connection() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("1500ms",)


def prediction_of(app: Application) -> Prediction:
    probability = 0.9 if app["customer_age"] == 70 else 0.1
    stamp = datetime.now(UTC)
    return Prediction(uuid.uuid4(), 1, probability, probability > 0.5, 0.5, "t", "sync", stamp)


def test_a_grown_pool_whose_connections_all_died_serves_the_next_request_at_once(db: str) -> None:
    """A database that restarted or woke from scale-to-zero (Neon) killed every connection:
    the first request after it must neither fail nor sleep through psycopg_pool's backoff."""
    copy_features_of(db, [1], [application()])
    with postgres.open_pool(
        db, min_size=2, max_size=6, timeout_s=3.0, statement_timeout_ms=2_000
    ) as pool:
        held = [pool.getconn() for _ in range(6)]  # grow the pool to 6 connections
        for conn in held:
            pool.putconn(conn)
        kill_connections(db)
        started = time.perf_counter()
        assert latest(postgres.PostgresFeatureStore(pool), 1) == application()
        assert time.perf_counter() - started < 0.8


def test_an_async_pool_recovers_at_once_too(db: str) -> None:
    copy_features_of(db, [1], [application()])

    async def main() -> float:
        apool = await postgres.open_async_pool(
            db, min_size=2, max_size=6, timeout_s=3.0, statement_timeout_ms=2_000
        )
        try:
            held = [await apool.getconn() for _ in range(6)]
            for conn in held:
                await apool.putconn(conn)
            await asyncio.to_thread(kill_connections, db)
            started = time.perf_counter()
            app = await alatest(postgres.AsyncPostgresFeatureStore(apool), 1)
            assert app == application()
            return time.perf_counter() - started
        finally:
            await apool.close()

    assert asyncio.run(main()) < 0.8
