"""The ports: what the core needs from the outside world, as ``typing.Protocol`` s.

Each port has a blocking face (run off the event loop, e.g. in a worker thread) and an async
face (run on the event loop, never blocking it). Adapters implement whichever faces they can.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fraudscore.domain import Application, Prediction, Scores

__all__ = [
    "AsyncFeatureRepository",
    "AsyncPredictionSink",
    "AsyncScorer",
    "FeatureRepository",
    "PredictionSink",
    "Scorer",
]


class FeatureRepository(Protocol):
    """Where validated applications are kept, newest version per user."""

    def latest(self, user_id: int) -> Application:
        """The newest application of ``user_id``; raise UnknownUser, InvalidFeatures or
        StoreUnavailable."""
        ...


class AsyncFeatureRepository(Protocol):
    """The async face of :class:`FeatureRepository`."""

    async def latest(self, user_id: int) -> Application:
        """The newest application of ``user_id``; raise UnknownUser, InvalidFeatures or
        StoreUnavailable."""
        ...


class PredictionSink(Protocol):
    """Where answered predictions are recorded, durably, before the answer leaves."""

    def record(self, prediction: Prediction) -> None:
        """Persist ``prediction``; return only once it is stored, or raise StoreUnavailable."""
        ...


class AsyncPredictionSink(Protocol):
    """The async face of :class:`PredictionSink`."""

    async def record(self, prediction: Prediction) -> None:
        """Persist ``prediction``; return only once it is stored, or raise StoreUnavailable."""
        ...


class Scorer(Protocol):
    """A fraud model. Batch-first: scoring one application is a batch of one."""

    def score(self, applications: Sequence[Application]) -> Scores:
        """One fraud probability per application, in order; raise ModelUnavailable."""
        ...


class AsyncScorer(Protocol):
    """The async face of :class:`Scorer` (e.g. a micro-batcher in front of one)."""

    async def score(self, applications: Sequence[Application]) -> Scores:
        """One fraud probability per application, in order; raise ModelUnavailable."""
        ...
