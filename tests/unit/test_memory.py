"""The in-memory adapters: newest version wins, columnar bulk loads, threads, async faces."""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fraudscore import (
    FEATURES,
    Application,
    FraudscoreError,
    Kind,
    Prediction,
    ScoringService,
    UnknownUser,
)
from fraudscore_adapters.baf import load_features
from fraudscore_adapters.memory import (
    AsyncMemoryFeatureStore,
    AsyncMemoryPredictionSink,
    MemoryFeatureStore,
    MemoryPredictionSink,
)
from tests.support import RAW_APPLICATION, RuleScorer, application, raw

pytestmark = pytest.mark.unit


def random_raw_frame(n: int, seed: int = 0) -> pl.DataFrame:
    """A raw BAF-layout frame with valid random values, sentinels included."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for f in FEATURES:
        if f.kind is Kind.CATEGORICAL:
            columns[f.name] = rng.choice(list(f.categories), n)
        elif f.kind is Kind.NUMERIC:
            assert f.low is not None
            assert f.high is not None
            columns[f.name] = rng.uniform(f.low, f.high, n)
        else:
            assert f.low is not None
            assert f.high is not None
            columns[f.name] = rng.integers(int(f.low), int(f.high) + 1, n)
        if f.nullable:
            values = np.asarray(columns[f.name], dtype=np.float64)
            columns[f.name] = np.where(rng.random(n) < 0.3, -1, values)
    return pl.DataFrame(columns)


def test_latest_returns_what_was_added() -> None:
    store = MemoryFeatureStore()
    app = application()
    store.add(7, app)
    assert store.latest(7) == app
    assert len(store) == 1


def test_unknown_user_raises() -> None:
    store = MemoryFeatureStore()
    with pytest.raises(UnknownUser):
        store.latest(0)
    store.add(5, application())
    with pytest.raises(UnknownUser, match="user 6"):
        store.latest(6)


def test_newest_version_wins_and_history_is_kept() -> None:
    store = MemoryFeatureStore()
    store.add(1, application(customer_age=20))
    store.add(1, application(customer_age=30))
    assert store.latest(1)["customer_age"] == 30
    store.add_many([1, 1], [application(customer_age=40), application(customer_age=60)])
    assert store.latest(1)["customer_age"] == 60
    assert len(store) == 1


def test_missing_values_and_every_category_roundtrip() -> None:
    store = MemoryFeatureStore()
    apps: list[Application] = []
    for f in FEATURES:
        apps.extend(application(**{f.name: category}) for category in f.categories)
    nulls = {f.name: None for f in FEATURES if f.nullable}
    apps.append(Application.parse(raw(**nulls)))
    store.add_many(range(len(apps)), apps)
    assert [store.latest(i) for i in range(len(apps))] == apps


def test_many_single_writes_stay_correct_and_segments_stay_few() -> None:
    store = MemoryFeatureStore()
    for uid in range(300):
        store.add(uid % 100, application(customer_age=10 + 10 * (uid // 100)))
    assert {store.latest(u)["customer_age"] for u in range(100)} == {30}
    assert len(store._segments) <= 9  # log2(300) + 1


def test_bulk_load_from_a_parquet_file(tmp_path: Path) -> None:
    frame = random_raw_frame(5_000, seed=1)
    path = tmp_path / "apps.parquet"
    frame.write_parquet(path)
    cleaned, report = load_features(path)
    assert report.rows_out == 5_000
    store = MemoryFeatureStore()
    assert store.load_frame(cleaned) == 5_000
    for uid in (0, 1234, 4999):
        expected = Application.parse(frame.row(uid, named=True))
        assert store.latest(uid) == expected
    with pytest.raises(UnknownUser):
        store.latest(5_000)


def test_a_reload_appends_a_version_that_readers_see(tmp_path: Path) -> None:
    store = MemoryFeatureStore()
    first = random_raw_frame(1_000, seed=2)
    second = random_raw_frame(1_000, seed=3)
    for i, frame in enumerate((first, second)):
        frame.write_parquet(tmp_path / f"{i}.parquet")
        store.load_frame(load_features(tmp_path / f"{i}.parquet")[0])
    assert store.latest(10) == Application.parse(second.row(10, named=True))
    assert len(store) == 1_000


def test_a_million_applications_fit_in_well_under_a_gigabyte() -> None:
    n = 1_000_000
    constant = [
        pl.lit(f.categories[0]).cast(pl.Enum(list(f.categories)))
        if f.kind is Kind.CATEGORICAL
        else pl.lit(1.0)
        for f in FEATURES
    ]
    frame = pl.DataFrame({"user_id": np.arange(n, dtype=np.int64)}).with_columns(
        c.alias(f.name) for c, f in zip(constant, FEATURES, strict=True)
    )
    store = MemoryFeatureStore()
    store.load_frame(frame)
    assert store.nbytes < 300 * 2**20
    assert store.latest(n - 1)["housing_status"] == "BA"
    assert store.latest(0)["credit_risk_score"] == 1


def test_concurrent_readers_and_writers_see_whole_versions() -> None:
    def version(age: int) -> Application:
        return application(customer_age=age, date_of_birth_distinct_emails_4w=age // 10)

    store = MemoryFeatureStore()
    store.add_many(range(50), [version(10)] * 50)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                for uid in range(50):
                    app = store.latest(uid)
                    age, emails = app["customer_age"], app["date_of_birth_distinct_emails_4w"]
                    assert isinstance(emails, int)
                    assert age == 10 * emails
        except BaseException as exc:
            errors.append(exc)

    def write(age: int) -> None:
        for uid in range(50):
            store.add(uid, version(age))

    readers = [threading.Thread(target=read) for _ in range(3)]
    writers = [threading.Thread(target=write, args=(age,)) for age in (20, 30, 40, 50)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert len(store) == 50


def test_prediction_sink_keeps_every_record_across_threads() -> None:
    store = MemoryFeatureStore()
    store.add(1, application())
    sink = MemoryPredictionSink()
    svc = ScoringService(features=store, sink=sink, scorer=RuleScorer())

    def predict_200() -> None:
        for _ in range(200):
            svc.predict(1)

    threads = [threading.Thread(target=predict_200) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sink.records) == 800
    assert len({p.prediction_id for p in sink.records}) == 800


def test_async_faces_share_the_same_data() -> None:
    store, sink = MemoryFeatureStore(), MemoryPredictionSink()
    store.add(3, Application.parse(RAW_APPLICATION))
    prediction = ScoringService(features=store, sink=sink, scorer=RuleScorer()).predict(3)

    async def main() -> Application | FraudscoreError:
        await AsyncMemoryPredictionSink(sink).record_many([prediction])
        (found,) = await AsyncMemoryFeatureStore(store).latest_many([3])
        return found

    assert asyncio.run(main()) == store.latest(3)
    assert sink.records == (prediction, prediction)


def test_kept_predictions_are_invisible_to_the_garbage_collector() -> None:
    sink = MemoryPredictionSink(capacity=3)
    stamp = datetime(2026, 11, 27, tzinfo=UTC)
    made = [Prediction(uuid.uuid4(), u, 0.25, False, 0.5, "v", "sync", stamp) for u in range(5)]
    sink.record_many(made)
    gc.collect()
    assert not any(gc.is_tracked(record) for record in sink._records)
    assert sink.records == tuple(made[2:])  # the newest three, equal to what was recorded
    assert sink.total == 5
