"""Timing decorators of the ports: each call's duration to an ``observe`` function.

The composition root wraps the stores and the model the services run on, so the store and
model time per batch is measured outside the core (which stays standard-library only and
knows no metrics). Each call is timed whether it returns or raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from time import perf_counter

from fraudscore import Application, FraudscoreError, Prediction, Scores
from fraudscore.ports import (
    AsyncFeatureRepository,
    AsyncPredictionSink,
    AsyncScorer,
    FeatureRepository,
    PredictionSink,
    Recorded,
    Scorer,
)

__all__ = [
    "TimedAsyncFeatures",
    "TimedAsyncScorer",
    "TimedAsyncSink",
    "TimedFeatures",
    "TimedScorer",
    "TimedSink",
]

Observe = Callable[[float], None]


class TimedFeatures:
    """A :class:`~fraudscore.ports.FeatureRepository`, each read timed."""

    __slots__ = ("_inner", "_observe")

    def __init__(self, inner: FeatureRepository, observe: Observe) -> None:
        self._inner, self._observe = inner, observe

    def latest_many(self, user_ids: Sequence[int]) -> Sequence[Application | FraudscoreError]:
        """The inner store's answer."""
        started = perf_counter()
        try:
            return self._inner.latest_many(user_ids)
        finally:
            self._observe(perf_counter() - started)


class TimedAsyncFeatures:
    """An :class:`~fraudscore.ports.AsyncFeatureRepository`, each read timed."""

    __slots__ = ("_inner", "_observe")

    def __init__(self, inner: AsyncFeatureRepository, observe: Observe) -> None:
        self._inner, self._observe = inner, observe

    async def latest_many(self, user_ids: Sequence[int]) -> Sequence[Application | FraudscoreError]:
        """The inner store's answer."""
        started = perf_counter()
        try:
            return await self._inner.latest_many(user_ids)
        finally:
            self._observe(perf_counter() - started)


class TimedSink:
    """A :class:`~fraudscore.ports.PredictionSink`, each write timed."""

    __slots__ = ("_inner", "_observe")

    def __init__(self, inner: PredictionSink, observe: Observe) -> None:
        self._inner, self._observe = inner, observe

    def record_many(self, predictions: Sequence[Prediction]) -> Recorded:
        """The inner sink's answer."""
        started = perf_counter()
        try:
            return self._inner.record_many(predictions)
        finally:
            self._observe(perf_counter() - started)


class TimedAsyncSink:
    """An :class:`~fraudscore.ports.AsyncPredictionSink`, each write timed."""

    __slots__ = ("_inner", "_observe")

    def __init__(self, inner: AsyncPredictionSink, observe: Observe) -> None:
        self._inner, self._observe = inner, observe

    async def record_many(self, predictions: Sequence[Prediction]) -> Recorded:
        """The inner sink's answer."""
        started = perf_counter()
        try:
            return await self._inner.record_many(predictions)
        finally:
            self._observe(perf_counter() - started)


class TimedScorer:
    """A :class:`~fraudscore.ports.Scorer`, each call timed."""

    __slots__ = ("_inner", "_observe")

    def __init__(self, inner: Scorer, observe: Observe) -> None:
        self._inner, self._observe = inner, observe

    def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        """The inner model's scores (and reasons); ``explain`` passed on only when given."""
        started = perf_counter()
        try:
            if explain is None:
                return self._inner.score(applications)
            return self._inner.score(applications, explain=explain)
        finally:
            self._observe(perf_counter() - started)


class TimedAsyncScorer:
    """An :class:`~fraudscore.ports.AsyncScorer`, each call timed."""

    __slots__ = ("_inner", "_observe")

    def __init__(self, inner: AsyncScorer, observe: Observe) -> None:
        self._inner, self._observe = inner, observe

    async def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        """The inner model's scores (and reasons); ``explain`` passed on only when given."""
        started = perf_counter()
        try:
            if explain is None:
                return await self._inner.score(applications)
            return await self._inner.score(applications, explain=explain)
        finally:
            self._observe(perf_counter() - started)
