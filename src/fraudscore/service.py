"""The scoring use case: fetch the newest features, score them, record the prediction.

Batch-first: :meth:`ScoringService.predict_many` serves many users with one store read, one
model call and one write, and gives each user its own prediction or its own error; ``predict``
is a batch of one. The steps and every rule between them live in :class:`_Batch`; the two
faces below only differ in how they wait for I/O (blocking calls, or ``await`` on the loop).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Generic, TypeVar

from fraudscore.domain import Application, Prediction, Scores, is_fraud, parse_user_id
from fraudscore.errors import FraudscoreError, ModelUnavailable, StoreUnavailable
from fraudscore.ports import (
    AsyncFeatureRepository,
    AsyncPredictionSink,
    AsyncScorer,
    FeatureRepository,
    PredictionSink,
    Recorded,
    Scorer,
)

__all__ = ["AsyncScoringService", "Clock", "IdFactory", "Outcome", "ScoringService", "utc_now"]

F = TypeVar("F")  # a feature repository, blocking or async
S = TypeVar("S")  # a prediction sink
M = TypeVar("M")  # a scorer (the model)
Clock = Callable[[], datetime]
IdFactory = Callable[[], uuid.UUID]
Outcome = Prediction | FraudscoreError
"""What one user of a batch gets: the recorded prediction, or the error that stopped it."""


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class _Batch:
    """One batch on its way through the steps, each user's outcome kept by position.

    A fault of one user (bad id, unknown user, invalid features, a score that is not a
    probability, a row the sink refuses) settles that user only; a fault of a whole step
    (store down, model broken) settles every user still in flight. A prediction becomes an
    outcome only once recorded.
    """

    __slots__ = (
        "_callers",
        "_clock",
        "_explain",
        "_flight",
        "_ids",
        "_new_id",
        "_outcomes",
        "_predictions",
        "_route",
    )

    def __init__(
        self,
        user_ids: Sequence[int | str],
        route: str,
        clock: Clock,
        new_id: IdFactory,
        *,
        callers: Sequence[str | None] | None,
        explain: Sequence[bool] | None,
    ) -> None:
        if callers is not None and len(callers) != len(user_ids):
            raise ValueError(f"{len(callers)} callers for {len(user_ids)} user ids")
        if explain is not None and len(explain) != len(user_ids):
            raise ValueError(f"{len(explain)} explain flags for {len(user_ids)} user ids")
        self._route = route
        self._callers = callers
        self._explain = explain if explain is not None and any(explain) else None
        self._clock = clock
        self._new_id = new_id
        self._outcomes: list[Outcome | None] = [None] * len(user_ids)
        self._ids: list[int] = [0] * len(user_ids)
        self._flight: list[int] = []
        self._predictions: list[Prediction] = []
        for i, raw in enumerate(user_ids):
            try:
                self._ids[i] = parse_user_id(raw)
            except FraudscoreError as exc:
                self._outcomes[i] = exc
            else:
                self._flight.append(i)

    def ids(self) -> list[int]:
        """The ids to look up, in flight order."""
        return [self._ids[i] for i in self._flight]

    def found(self, results: Sequence[Application | FraudscoreError]) -> list[Application]:
        """Take the store's answer (one per id, in order); the applications to score."""
        _check_count(len(results), len(self._flight), "feature store", StoreUnavailable)
        applications, flight = [], []
        for i, result in zip(self._flight, results, strict=True):
            if isinstance(result, Application):
                applications.append(result)
                flight.append(i)
            else:
                self._outcomes[i] = result
        self._flight = flight
        return applications

    def explaining(self) -> dict[str, list[bool]]:
        """The scorer's keyword arguments for the applications in flight: their explain flags
        when any of them asked for reasons, else none (a scorer that cannot explain still
        serves every batch in which nobody asks)."""
        if self._explain is None:
            return {}
        return {"explain": [self._explain[i] for i in self._flight]}

    def scored(self, scores: Scores) -> list[Prediction]:
        """Take the model's answer (one per application, in order); the predictions to record."""
        _check_count(len(scores.probabilities), len(self._flight), "scorer", ModelUnavailable)
        if scores.reasons is not None:
            _check_count(len(scores.reasons), len(self._flight), "scorer", ModelUnavailable)
        now = self._clock()
        flight = []
        for index, i in enumerate(self._flight):
            try:
                probability = scores.probability(index)
            except ModelUnavailable as exc:
                self._outcomes[i] = exc
                continue
            flight.append(i)
            self._predictions.append(
                Prediction(
                    prediction_id=self._new_id(),
                    user_id=self._ids[i],
                    probability=probability,
                    is_fraud=is_fraud(probability, scores.threshold),
                    threshold=scores.threshold,
                    model_version=scores.model_version,
                    route=self._route,
                    created_at=now,
                    caller=None if self._callers is None else self._callers[i],
                    reasons=scores.reasons_of(index),
                )
            )
        self._flight = flight
        return self._predictions

    def recorded(self, result: Recorded) -> None:
        """Take the sink's answer: a prediction it could not store settles its user with the
        error instead (the others stay recorded)."""
        if result is None:
            return
        _check_count(len(result), len(self._flight), "prediction sink", StoreUnavailable)
        flight, predictions = [], []
        for i, prediction, error in zip(self._flight, self._predictions, result, strict=True):
            if error is None:
                flight.append(i)
                predictions.append(prediction)
            else:
                self._outcomes[i] = error
        self._flight, self._predictions = flight, predictions

    def fail(self, exc: FraudscoreError) -> None:
        """``exc`` settles every user still in flight."""
        for i in self._flight:
            self._outcomes[i] = exc
        self._flight, self._predictions = [], []

    def outcomes(self) -> list[Outcome]:
        """Every user's outcome, the predictions still in flight being recorded now."""
        for i, prediction in zip(self._flight, self._predictions, strict=True):
            self._outcomes[i] = prediction
        self._flight = []
        return self._outcomes  # type: ignore[return-value]  # every position is settled


def _check_count(
    got: int, want: int, part: str, error: type[StoreUnavailable | ModelUnavailable]
) -> None:
    if got != want:
        raise error(f"{part} returned {got} results for {want}")


class _Wired(Generic[F, S, M]):
    """The ports, clock and id factory a face of the use case runs on."""

    def __init__(
        self,
        *,
        features: F,
        sink: S,
        scorer: M,
        clock: Clock = utc_now,
        new_id: IdFactory = uuid.uuid4,
    ) -> None:
        self._features: F = features
        self._sink: S = sink
        self._scorer: M = scorer
        self._clock = clock
        self._new_id = new_id


class ScoringService(_Wired[FeatureRepository, PredictionSink, Scorer]):
    """The use case with blocking ports (library callers, the sync route's worker threads)."""

    def predict(
        self,
        user_id: int | str,
        *,
        route: str = "library",
        caller: str | None = None,
        explain: bool = False,
    ) -> Prediction:
        """Score the newest application of ``user_id``, record the prediction, return it.

        ``explain`` asks for the prediction's reasons even when it is not flagged (the scorer
        explains flagged ones by its own policy). Raises InvalidUserId, UnknownUser,
        InvalidFeatures, StoreUnavailable, ModelUnavailable. Nothing is recorded unless
        scoring succeeded; nothing is returned unless it was recorded.
        """
        return _one(
            self.predict_many((user_id,), route=route, callers=(caller,), explain=(explain,))
        )

    def predict_many(
        self,
        user_ids: Sequence[int | str],
        *,
        route: str = "library",
        callers: Sequence[str | None] | None = None,
        explain: Sequence[bool] | None = None,
    ) -> list[Outcome]:
        """:meth:`predict` for many users at once: one read, one model call, one write.

        One outcome per user, in order: the recorded prediction, or the error that stopped it.
        ``callers``, one per user, says who asked for each (recorded with its prediction);
        ``explain``, one per user, who asked for reasons.
        """
        batch = _Batch(user_ids, route, self._clock, self._new_id, callers=callers, explain=explain)
        try:
            ids = batch.ids()
            if ids and (applications := batch.found(self._features.latest_many(ids))):
                predictions = batch.scored(self._scorer.score(applications, **batch.explaining()))
                if predictions:
                    batch.recorded(self._sink.record_many(predictions))
        except FraudscoreError as exc:
            batch.fail(exc)
        return batch.outcomes()


class AsyncScoringService(_Wired[AsyncFeatureRepository, AsyncPredictionSink, AsyncScorer]):
    """The use case with async ports, for callers on an event loop."""

    async def predict(
        self,
        user_id: int | str,
        *,
        route: str = "library",
        caller: str | None = None,
        explain: bool = False,
    ) -> Prediction:
        """Async face of :meth:`ScoringService.predict`, with the same contract."""
        return _one(
            await self.predict_many((user_id,), route=route, callers=(caller,), explain=(explain,))
        )

    async def predict_many(
        self,
        user_ids: Sequence[int | str],
        *,
        route: str = "library",
        callers: Sequence[str | None] | None = None,
        explain: Sequence[bool] | None = None,
    ) -> list[Outcome]:
        """Async face of :meth:`ScoringService.predict_many`, with the same contract."""
        batch = _Batch(user_ids, route, self._clock, self._new_id, callers=callers, explain=explain)
        try:
            ids = batch.ids()
            if ids and (applications := batch.found(await self._features.latest_many(ids))):
                predictions = batch.scored(
                    await self._scorer.score(applications, **batch.explaining())
                )
                if predictions:
                    batch.recorded(await self._sink.record_many(predictions))
        except FraudscoreError as exc:
            batch.fail(exc)
        return batch.outcomes()


def _one(outcomes: list[Outcome]) -> Prediction:
    (outcome,) = outcomes
    if isinstance(outcome, FraudscoreError):
        raise outcome
    return outcome
