"""The scoring use case: fetch the newest features, score them, record the prediction.

The steps and every rule between them live in :class:`_Steps`; the two faces below only
differ in how they wait for I/O (blocking calls, or ``await`` on the event loop).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from fraudscore.domain import Prediction, Scores, is_fraud, parse_user_id
from fraudscore.errors import ModelUnavailable
from fraudscore.ports import (
    AsyncFeatureRepository,
    AsyncPredictionSink,
    AsyncScorer,
    FeatureRepository,
    PredictionSink,
    Scorer,
)

__all__ = ["AsyncScoringService", "Clock", "IdFactory", "ScoringService", "utc_now"]

Clock = Callable[[], datetime]
IdFactory = Callable[[], uuid.UUID]


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class _Steps:
    """The pure parts of the use case, shared by both faces."""

    __slots__ = ("_clock", "_new_id")

    def __init__(self, clock: Clock, new_id: IdFactory) -> None:
        self._clock = clock
        self._new_id = new_id

    def prediction(self, user_id: int, scores: Scores, route: str) -> Prediction:
        """Turn the scores of a batch of one into the prediction to record and return."""
        if len(scores.probabilities) != 1:
            got = len(scores.probabilities)
            raise ModelUnavailable(f"scorer returned {got} scores for 1 application")
        probability = scores.probability(0)
        return Prediction(
            prediction_id=self._new_id(),
            user_id=user_id,
            probability=probability,
            is_fraud=is_fraud(probability, scores.threshold),
            threshold=scores.threshold,
            model_version=scores.model_version,
            route=route,
            created_at=self._clock(),
        )


class ScoringService:
    """The use case with blocking ports (library callers, the sync route's worker threads)."""

    def __init__(
        self,
        *,
        features: FeatureRepository,
        sink: PredictionSink,
        scorer: Scorer,
        clock: Clock = utc_now,
        new_id: IdFactory = uuid.uuid4,
    ) -> None:
        self._features = features
        self._sink = sink
        self._scorer = scorer
        self._steps = _Steps(clock, new_id)

    def predict(self, user_id: int | str, *, route: str = "library") -> Prediction:
        """Score the newest application of ``user_id``, record the prediction, return it.

        Raises InvalidUserId, UnknownUser, InvalidFeatures, StoreUnavailable, ModelUnavailable.
        Nothing is recorded unless scoring succeeded; nothing is returned unless it was recorded.
        """
        uid = parse_user_id(user_id)
        application = self._features.latest(uid)
        prediction = self._steps.prediction(uid, self._scorer.score((application,)), route)
        self._sink.record(prediction)
        return prediction


class AsyncScoringService:
    """The use case with async ports, for callers on an event loop."""

    def __init__(
        self,
        *,
        features: AsyncFeatureRepository,
        sink: AsyncPredictionSink,
        scorer: AsyncScorer,
        clock: Clock = utc_now,
        new_id: IdFactory = uuid.uuid4,
    ) -> None:
        self._features = features
        self._sink = sink
        self._scorer = scorer
        self._steps = _Steps(clock, new_id)

    async def predict(self, user_id: int | str, *, route: str = "library") -> Prediction:
        """Async face of :meth:`ScoringService.predict`, with the same contract."""
        uid = parse_user_id(user_id)
        application = await self._features.latest(uid)
        scores = await self._scorer.score((application,))
        prediction = self._steps.prediction(uid, scores, route)
        await self._sink.record(prediction)
        return prediction
