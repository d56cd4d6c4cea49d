"""One contract, two adapters: the in-memory fake and PostgreSQL must behave the same.

Every test here runs against both stores, so the fake cannot drift from the real thing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import polars as pl
import psycopg
import pytest

from fraudscore import (
    Application,
    AsyncScoringService,
    Prediction,
    Reason,
    Reasons,
    ScoringService,
    UnknownUser,
)
from fraudscore.ports import FeatureRepository, PredictionSink
from fraudscore_adapters import memory, postgres
from fraudscore_adapters.baf import clean_frame
from fraudscore_adapters.bulkload import copy_features
from tests.support import AsyncRuleScorer, RuleScorer, alatest, application, latest

POOL: dict[str, Any] = {
    "min_size": 1,
    "max_size": 4,
    "timeout_s": 5.0,
    "statement_timeout_ms": 5_000,
}


@dataclass
class Stores:
    """The adapters under test, and a way to add features and read predictions back."""

    features: FeatureRepository
    sink: PredictionSink
    add: Any
    predictions: Any
    run_async: Any


def _memory() -> Iterator[Stores]:
    store, sink = memory.MemoryFeatureStore(), memory.MemoryPredictionSink()

    def run_async(fn: Any) -> Any:
        async def go() -> Any:
            return await fn(
                memory.AsyncMemoryFeatureStore(store), memory.AsyncMemoryPredictionSink(sink)
            )

        return asyncio.run(go())

    yield Stores(store, sink, store.add_many, lambda: list(sink.records), run_async)


def stored_reasons(document: list[dict[str, Any]] | None) -> Reasons | None:
    """The reasons of a ``predictions.reasons`` document."""
    return None if document is None else tuple(Reason(**r) for r in document)


def _postgres(url: str) -> Iterator[Stores]:
    pool = postgres.open_pool(url, **POOL)

    def add(user_ids: list[int], applications: list[Any]) -> None:
        rows = [{"user_id": u, **a.to_baf()} for u, a in zip(user_ids, applications, strict=True)]
        frame, _ = clean_frame(pl.DataFrame(rows), keep=["user_id"])
        with psycopg.connect(url) as conn:
            copy_features(conn, frame)

    def predictions() -> list[Prediction]:
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT id, user_id, probability, is_fraud, threshold, model_version, route,"
                " created_at, caller, reasons FROM predictions ORDER BY created_at, id"
            ).fetchall()
        return [replace(Prediction(*row[:-1]), reasons=stored_reasons(row[-1])) for row in rows]

    def run_async(fn: Any) -> Any:
        async def go() -> Any:
            apool = await postgres.open_async_pool(url, **POOL)
            try:
                return await fn(
                    postgres.AsyncPostgresFeatureStore(apool),
                    postgres.AsyncPostgresPredictionSink(apool),
                )
            finally:
                await apool.close()

        return asyncio.run(go())

    try:
        yield Stores(
            postgres.PostgresFeatureStore(pool),
            postgres.PostgresPredictionSink(pool),
            add,
            predictions,
            run_async,
        )
    finally:
        pool.close()


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("postgres", marks=pytest.mark.integration),
    ]
)
def stores(request: pytest.FixtureRequest) -> Iterator[Stores]:
    if request.param == "memory":
        yield from _memory()
    else:
        yield from _postgres(request.getfixturevalue("db"))


def test_latest_returns_the_stored_application(stores: Stores) -> None:
    app = application(bank_months_count=-1, housing_status="BA")
    stores.add([5], [app])
    assert latest(stores.features, 5) == app
    assert latest(stores.features, 5)["bank_months_count"] is None


def test_unknown_user(stores: Stores) -> None:
    stores.add([1], [application()])
    with pytest.raises(UnknownUser, match="user 2"):
        latest(stores.features, 2)


def test_a_batch_lookup_answers_every_id_in_order(stores: Stores) -> None:
    stores.add([1, 2, 3], [application(customer_age=a) for a in (20, 30, 40)])
    stores.add([2], [application(customer_age=50)])
    ids = [3, 99, 2, 2, 1]

    def ages(found: Sequence[object]) -> list[object]:
        return [f["customer_age"] if isinstance(f, Application) else f for f in found]

    found = list(stores.features.latest_many(ids))
    assert isinstance(found[1], UnknownUser)
    assert found[1].user_id == 99
    assert ages(found[:1] + found[2:]) == [40, 50, 50, 20]
    async_found = list(stores.run_async(lambda f, s: f.latest_many(ids)))
    assert async_found[:1] + async_found[2:] == found[:1] + found[2:]
    assert stores.features.latest_many([]) == []


def test_a_batch_of_predictions_is_recorded_whole(stores: Stores) -> None:
    stamp = datetime(2026, 11, 27, tzinfo=UTC)
    batch = [
        Prediction(uuid.UUID(int=u + 1), u, u / 200, u >= 100, 0.5, "v", "sync", stamp)
        for u in range(200)
    ]
    stores.sink.record_many(batch)
    assert sorted(stores.predictions(), key=lambda p: p.user_id) == batch


def test_newest_version_wins(stores: Stores) -> None:
    stores.add([1, 2], [application(customer_age=20), application(customer_age=30)])
    stores.add([1], [application(customer_age=40)])
    assert latest(stores.features, 1)["customer_age"] == 40
    assert latest(stores.features, 2)["customer_age"] == 30


def test_a_repeated_user_in_one_load_keeps_its_last_row(stores: Stores) -> None:
    stores.add([9, 9], [application(customer_age=20), application(customer_age=70)])
    assert latest(stores.features, 9)["customer_age"] == 70


def test_every_value_roundtrips_exactly(stores: Stores) -> None:
    apps = [
        application(income=0.30000000000000004, velocity_6h=-0.1234567890123, device_os=os)
        for os in ("linux", "macintosh", "other", "windows", "x11")
    ]
    stores.add(list(range(5)), apps)
    assert [latest(stores.features, i) for i in range(5)] == apps


def test_the_use_case_records_what_it_returns(stores: Stores) -> None:
    stores.add([1, 2], [application(housing_status="BA"), application(housing_status="BB")])
    svc = ScoringService(features=stores.features, sink=stores.sink, scorer=RuleScorer())
    flagged = svc.predict(1, route="sync", caller="0123456789ab")
    explained = svc.predict(2, route="async", explain=True)
    plain = svc.predict(2, route="async")
    assert flagged.is_fraud
    assert flagged.reasons == (Reason("housing_status", "BA", 2.0),)
    assert explained.reasons == (Reason("housing_status", "BB", 0.5),)
    assert plain.reasons is None
    assert stores.predictions() == [flagged, explained, plain]


def test_the_async_faces_agree_with_the_blocking_ones(stores: Stores) -> None:
    stores.add([1, 2], [application(housing_status="BA"), application(housing_status="BB")])
    fixed = datetime(2026, 11, 27, tzinfo=UTC)
    ids = iter(uuid.UUID(int=i) for i in range(1, 10))

    async def both(features: Any, sink: Any) -> list[Prediction]:
        svc = AsyncScoringService(
            features=features,
            sink=sink,
            scorer=AsyncRuleScorer(RuleScorer()),
            clock=lambda: fixed,
            new_id=lambda: next(ids),
        )
        return [await svc.predict(1, route="async"), await svc.predict(2, route="async")]

    got = stores.run_async(both)
    assert [p.is_fraud for p in got] == [True, False]
    assert stores.predictions() == got
    with pytest.raises(UnknownUser):
        stores.run_async(lambda f, s: alatest(f, 77))


def test_concurrent_async_calls_each_get_their_own_answer(stores: Stores) -> None:
    users = list(range(60))
    stores.add(users, [application(customer_age=10 + 10 * (u % 9)) for u in users])
    stamp = datetime(2026, 11, 27, tzinfo=UTC)

    async def many(features: Any, sink: Any) -> tuple[list[Any], list[Any]]:
        found = await asyncio.gather(
            *(alatest(features, u) for u in [*users, 999, 5]), return_exceptions=True
        )
        predictions = [
            Prediction(uuid.UUID(int=u + 1), u, 0.25, False, 0.5, "v", "async", stamp)
            for u in users
        ]
        await asyncio.gather(*(sink.record_many([p]) for p in predictions))
        return found, predictions

    found, predictions = stores.run_async(many)
    assert [a["customer_age"] for a in found[:60]] == [10 + 10 * (u % 9) for u in users]
    assert isinstance(found[60], UnknownUser)
    assert found[61] == found[5]
    assert sorted(stores.predictions(), key=lambda p: p.user_id) == predictions
