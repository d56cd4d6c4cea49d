"""The scoring use case, end to end on in-memory adapters and fake scorers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from fraudscore import (
    MAX_USER_ID,
    Application,
    AsyncScoringService,
    FraudscoreError,
    InvalidUserId,
    ModelUnavailable,
    Prediction,
    Scores,
    ScoringService,
    StoreError,
    StoreUnavailable,
    UnknownUser,
    parse_user_id,
)
from fraudscore.ports import FeatureRepository, PredictionSink, Scorer
from fraudscore_adapters.memory import (
    AsyncMemoryFeatureStore,
    AsyncMemoryPredictionSink,
    MemoryFeatureStore,
    MemoryPredictionSink,
)
from tests.support import AsyncRuleScorer, BrokenScorer, DownSink, RuleScorer, application

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


@pytest.fixture
def store() -> MemoryFeatureStore:
    store = MemoryFeatureStore()
    store.add(1, application(housing_status="BA"))
    store.add(2, application(housing_status="BC"))
    return store


def service(store: FeatureRepository, sink: PredictionSink, scorer: Scorer) -> ScoringService:
    return ScoringService(
        features=store,
        sink=sink,
        scorer=scorer,
        clock=lambda: NOW,
        new_id=lambda: ID,
    )


def test_predict_scores_records_and_returns_the_prediction(store: MemoryFeatureStore) -> None:
    sink, scorer = MemoryPredictionSink(), RuleScorer()
    prediction = service(store, sink, scorer).predict(1, route="sync")
    assert prediction.user_id == 1
    assert prediction.probability == pytest.approx(0.9)
    assert prediction.is_fraud is True
    assert prediction.threshold == 0.5
    assert prediction.model_version == "rule-1"
    assert prediction.route == "sync"
    assert prediction.created_at == NOW
    assert prediction.prediction_id == ID
    assert sink.records == (prediction,)
    assert scorer.batches == [1]


def test_below_threshold_is_not_fraud(store: MemoryFeatureStore) -> None:
    prediction = service(store, MemoryPredictionSink(), RuleScorer()).predict(2)
    assert prediction.is_fraud is False
    assert prediction.route == "library"


def test_probability_equal_to_threshold_is_flagged(store: MemoryFeatureStore) -> None:
    scorer = BrokenScorer(Scores([0.5], 0.5, "edge"))
    assert service(store, MemoryPredictionSink(), scorer).predict(1).is_fraud is True


def test_the_newest_features_are_scored(store: MemoryFeatureStore) -> None:
    store.add(2, application(housing_status="BA"))
    assert service(store, MemoryPredictionSink(), RuleScorer()).predict(2).is_fraud is True


def test_user_ids_may_come_as_digit_strings(store: MemoryFeatureStore) -> None:
    assert service(store, MemoryPredictionSink(), RuleScorer()).predict("2").user_id == 2


def test_unknown_user_records_nothing(store: MemoryFeatureStore) -> None:
    sink, scorer = MemoryPredictionSink(), RuleScorer()
    with pytest.raises(UnknownUser, match="no features stored for user 99"):
        service(store, sink, scorer).predict(99)
    assert sink.records == ()
    assert scorer.batches == []


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        (-1, "between 0 and"),
        (MAX_USER_ID + 1, "between 0 and"),
        ("", "decimal digits"),
        ("12a", "decimal digits"),
        ("-3", "decimal digits"),
        ("1" * 20, "decimal digits"),
        ("١٢", "decimal digits"),
        (1.5, "whole number"),
        (True, "whole number"),
    ],
)
def test_malformed_user_ids_name_the_rule(raw: object, rule: str) -> None:
    with pytest.raises(InvalidUserId, match=rule):
        parse_user_id(raw)


def test_largest_user_id_is_accepted() -> None:
    assert parse_user_id(str(MAX_USER_ID)) == MAX_USER_ID


def test_model_failure_records_nothing(store: MemoryFeatureStore) -> None:
    sink = MemoryPredictionSink()
    with pytest.raises(ModelUnavailable, match="model file is gone"):
        service(store, sink, BrokenScorer()).predict(1)
    assert sink.records == ()


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (Scores([0.1, 0.2], 0.5, "v"), "scorer returned 2 results for 1"),
        (Scores([], 0.5, "v"), "scorer returned 0 results"),
        (Scores([1.5], 0.5, "v"), "not a probability"),
        (Scores([float("nan")], 0.5, "v"), "not a probability"),
    ],
)
def test_a_misbehaving_scorer_is_a_model_fault(
    store: MemoryFeatureStore, scores: Scores, message: str
) -> None:
    sink = MemoryPredictionSink()
    with pytest.raises(ModelUnavailable, match=message):
        service(store, sink, BrokenScorer(scores)).predict(1)
    assert sink.records == ()


def test_a_threshold_outside_0_1_is_refused() -> None:
    with pytest.raises(ModelUnavailable, match=r"threshold 1\.2"):
        Scores([0.3], 1.2, "v")


def test_a_sink_that_is_down_fails_the_request(store: MemoryFeatureStore) -> None:
    sink = DownSink()
    with pytest.raises(StoreUnavailable, match="connection refused"):
        service(store, sink, RuleScorer()).predict(1)
    assert sink.calls == 1


def async_service(store: MemoryFeatureStore, sink: MemoryPredictionSink) -> AsyncScoringService:
    return AsyncScoringService(
        features=AsyncMemoryFeatureStore(store),
        sink=AsyncMemoryPredictionSink(sink),
        scorer=AsyncRuleScorer(RuleScorer()),
        clock=lambda: NOW,
        new_id=lambda: ID,
    )


def test_async_face_gives_the_same_prediction(store: MemoryFeatureStore) -> None:
    sync_sink, async_sink = MemoryPredictionSink(), MemoryPredictionSink()
    expected = service(store, sync_sink, RuleScorer()).predict(1, route="api")
    got = asyncio.run(async_service(store, async_sink).predict(1, route="api"))
    assert got == expected
    assert async_sink.records == (got,)


def test_async_face_raises_the_same_errors(store: MemoryFeatureStore) -> None:
    sink = MemoryPredictionSink()
    with pytest.raises(UnknownUser):
        asyncio.run(async_service(store, sink).predict(42))
    with pytest.raises(InvalidUserId):
        asyncio.run(async_service(store, sink).predict("x"))
    assert sink.records == ()


def test_default_ids_and_clock_are_unique_and_utc(store: MemoryFeatureStore) -> None:
    svc = ScoringService(features=store, sink=MemoryPredictionSink(), scorer=RuleScorer())
    first, second = svc.predict(1), svc.predict(1)
    assert first.prediction_id != second.prediction_id
    assert first.created_at.tzinfo is UTC
    assert first.created_at <= second.created_at


class CountingStore:
    """A feature store that counts its reads, or answers with too few results."""

    def __init__(self, store: MemoryFeatureStore, *, short: bool = False) -> None:
        self.store = store
        self.short = short
        self.reads: list[list[int]] = []

    def latest_many(self, user_ids: Sequence[int]) -> Sequence[Application | FraudscoreError]:
        self.reads.append(list(user_ids))
        found = self.store.latest_many(user_ids)
        return found[:-1] if self.short else found


def test_a_batch_reads_scores_and_records_once_and_answers_each_user(
    store: MemoryFeatureStore,
) -> None:
    reads, sink, scorer = CountingStore(store), MemoryPredictionSink(), RuleScorer()
    outcomes = service(reads, sink, scorer).predict_many(["2", 42, "x", 1, 2], route="r")
    assert isinstance(outcomes[2], InvalidUserId)
    assert isinstance(outcomes[1], UnknownUser)
    assert outcomes[1].user_id == 42
    answered = [outcomes[0], outcomes[3], outcomes[4]]
    assert all(isinstance(p, Prediction) for p in answered)
    assert [(p.user_id, p.probability) for p in answered if isinstance(p, Prediction)] == [
        (2, 0.1),
        (1, 0.9),
        (2, 0.1),
    ]
    assert reads.reads == [[2, 42, 1, 2]]  # the bad id never reaches the store
    assert scorer.batches == [3]  # the unknown user never reaches the model
    assert sink.records == tuple(answered)  # one write, in order, only what was answered


def test_a_batch_of_bad_ids_touches_no_port(store: MemoryFeatureStore) -> None:
    reads, sink, scorer = CountingStore(store), MemoryPredictionSink(), RuleScorer()
    outcomes = service(reads, sink, scorer).predict_many(["", "-1", str(MAX_USER_ID + 1)])
    assert all(isinstance(o, InvalidUserId) for o in outcomes)
    assert (reads.reads, scorer.batches, sink.records) == ([], [], ())
    assert service(reads, sink, scorer).predict_many([]) == []


def test_a_score_that_is_not_a_probability_fails_only_its_user(store: MemoryFeatureStore) -> None:
    sink = MemoryPredictionSink()
    scorer = BrokenScorer(Scores([float("nan"), 0.7], 0.5, "v"))
    bad, good = service(store, sink, scorer).predict_many([1, 2])
    assert isinstance(bad, ModelUnavailable)
    assert isinstance(good, Prediction)
    assert good.user_id == 2
    assert good.is_fraud is True
    assert sink.records == (good,)


def test_a_fault_of_a_step_reaches_every_user_still_in_the_batch(
    store: MemoryFeatureStore,
) -> None:
    unknown, *rest = service(store, DownSink(), RuleScorer()).predict_many([42, 1, 2])
    assert isinstance(unknown, UnknownUser)  # settled before the write failed
    assert all(isinstance(o, StoreUnavailable) for o in rest)
    outcomes = service(store, MemoryPredictionSink(), BrokenScorer()).predict_many([1, 2])
    assert all(isinstance(o, ModelUnavailable) for o in outcomes)
    short = CountingStore(store, short=True)
    outcomes = service(short, MemoryPredictionSink(), RuleScorer()).predict_many([1, 2])
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    assert "feature store returned 1 results for 2" in str(outcomes[0])


def test_the_async_face_batches_the_same_way(store: MemoryFeatureStore) -> None:
    ids: list[int | str] = [1, "y", 42, 2]
    sync_sink, async_sink = MemoryPredictionSink(), MemoryPredictionSink()
    expected = service(store, sync_sink, RuleScorer()).predict_many(ids)
    got = asyncio.run(async_service(store, async_sink).predict_many(ids))
    assert [type(o) for o in got] == [type(o) for o in expected]
    assert [got[0], got[3]] == [expected[0], expected[3]]
    assert async_sink.records == sync_sink.records


class PickySink:
    """A sink that refuses the predictions of some users (a constraint on their rows)."""

    def __init__(self, refuse: set[int], answer_short: bool = False) -> None:
        self.refuse, self.answer_short = refuse, answer_short
        self.kept = MemoryPredictionSink()

    def record_many(self, predictions: Sequence[Prediction]) -> list[FraudscoreError | None]:
        results: list[FraudscoreError | None] = []
        for p in predictions:
            if p.user_id in self.refuse:
                results.append(StoreError(f"row of user {p.user_id} refused"))
            else:
                self.kept.record_many([p])
                results.append(None)
        return results[:-1] if self.answer_short else results

    async def arecord(self, predictions: Sequence[Prediction]) -> list[FraudscoreError | None]:
        return self.record_many(predictions)


def test_a_row_the_sink_refuses_fails_only_its_user(store: MemoryFeatureStore) -> None:
    store.add(3, application(housing_status="BB"))
    sink = PickySink(refuse={2})
    first, refused, third = service(store, sink, RuleScorer()).predict_many([1, 2, 3])
    assert isinstance(refused, StoreError)
    assert "row of user 2 refused" in str(refused)
    assert isinstance(first, Prediction)
    assert isinstance(third, Prediction)
    assert sink.kept.records == (first, third)  # every answered prediction was stored


def test_a_sink_answer_of_the_wrong_length_fails_the_batch(store: MemoryFeatureStore) -> None:
    sink = PickySink(refuse=set(), answer_short=True)
    outcomes = service(store, sink, RuleScorer()).predict_many([1, 2])
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    assert "prediction sink returned 1 results for 2" in str(outcomes[0])


def test_the_async_face_takes_per_row_refusals_too(store: MemoryFeatureStore) -> None:
    sink = PickySink(refuse={1})

    class Faces:
        async def latest_many(self, ids: Sequence[int]) -> Sequence[Application | FraudscoreError]:
            return store.latest_many(ids)

        record_many = staticmethod(sink.arecord)

    faces = Faces()
    got = asyncio.run(
        AsyncScoringService(
            features=faces, sink=faces, scorer=AsyncRuleScorer(RuleScorer())
        ).predict_many([1, 2])
    )
    assert isinstance(got[0], StoreError)
    assert isinstance(got[1], Prediction)
    assert sink.kept.records == (got[1],)


def test_each_prediction_records_who_asked(store: MemoryFeatureStore) -> None:
    sink = MemoryPredictionSink()
    service = ScoringService(features=store, sink=sink, scorer=RuleScorer())
    outcomes = service.predict_many([1, 2, 9], route="sync", callers=["k1", None, "k3"])
    assert [getattr(o, "caller", o.__class__.__name__) for o in outcomes] == [
        "k1",
        None,
        "UnknownUser",
    ]
    assert [p.caller for p in sink.records] == ["k1", None]
    assert service.predict(1, caller="lib").caller == "lib"
    assert service.predict(1).caller is None


def test_callers_must_match_the_user_ids(store: MemoryFeatureStore) -> None:
    service = ScoringService(features=store, sink=MemoryPredictionSink(), scorer=RuleScorer())
    with pytest.raises(ValueError, match="2 callers for 1 user ids"):
        service.predict_many([1], callers=["a", "b"])


def test_reasons_are_asked_for_the_users_who_asked_and_kept_with_their_predictions(
    store: MemoryFeatureStore,
) -> None:
    """The scorer hears the explain flags of the users it scores (not of those settled before
    it: a bad id, an unknown user), and only when someone asked; each prediction keeps the
    reasons the scorer gave for it, and is recorded with them."""
    scorer, sink = RuleScorer(), MemoryPredictionSink()
    svc = service(store, sink, scorer)
    outcomes = svc.predict_many(
        ["x", 9, 2, 1, 2], callers=None, explain=[True, True, True, False, False]
    )
    assert scorer.explained == [[True, False, False]]  # users 2, 1, 2 reached the model
    assert isinstance(outcomes[0], InvalidUserId)
    assert isinstance(outcomes[1], UnknownUser)
    asked, flagged, plain = outcomes[2:]
    assert isinstance(asked, Prediction)
    assert asked.reasons is not None
    assert asked.reasons[0].value == "BC"
    assert isinstance(flagged, Prediction)
    assert flagged.reasons is not None
    assert isinstance(plain, Prediction)
    assert plain.reasons is None
    assert [p.reasons for p in sink.records] == [asked.reasons, flagged.reasons, None]
    svc.predict_many([1, 2], explain=[False, False])
    svc.predict_many([1, 2])
    assert scorer.explained[1:] == [None, None]  # nobody asked: no flags passed


def test_explain_flags_must_match_the_user_ids(store: MemoryFeatureStore) -> None:
    svc = service(store, MemoryPredictionSink(), RuleScorer())
    with pytest.raises(ValueError, match="2 explain flags for 1 user ids"):
        svc.predict_many([1], explain=[True, False])


def test_a_scorer_giving_reasons_for_the_wrong_count_fails_the_batch(
    store: MemoryFeatureStore,
) -> None:
    wrong = BrokenScorer(Scores([0.9, 0.1], 0.5, "v", reasons=[None]))
    outcomes = service(store, MemoryPredictionSink(), wrong).predict_many([1, 2])
    assert all(isinstance(o, ModelUnavailable) for o in outcomes)
    assert "scorer returned 1 results for 2" in str(outcomes[0])


def test_the_async_face_passes_the_explain_flags_too(store: MemoryFeatureStore) -> None:
    scorer, sink = RuleScorer(), MemoryPredictionSink()
    svc = AsyncScoringService(
        features=AsyncMemoryFeatureStore(store),
        sink=AsyncMemoryPredictionSink(sink),
        scorer=AsyncRuleScorer(scorer),
    )
    prediction = asyncio.run(svc.predict(2, explain=True))
    assert scorer.explained == [[True]]
    assert prediction.reasons is not None
    assert sink.records[0].reasons == prediction.reasons
