"""The ports: what the core needs from the outside world, as ``typing.Protocol`` s.

Each port has a blocking face (run off the event loop, e.g. in a worker thread) and an async
face (run on the event loop, never blocking it). Adapters implement whichever faces they can.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fraudscore.domain import Application, Prediction, Scores
from fraudscore.errors import FraudscoreError

__all__ = [
    "AsyncFeatureRepository",
    "AsyncPredictionSink",
    "AsyncScorer",
    "FeatureRepository",
    "PredictionSink",
    "Recorded",
    "Scorer",
]

Recorded = Sequence[FraudscoreError | None] | None
"""What a sink says of a batch: None when every prediction is stored; else one entry per
prediction, in order: None where it is stored, the error that kept it out where it is not."""


class FeatureRepository(Protocol):
    """Where validated applications are kept, newest version per user. Batch-first."""

    def latest_many(self, user_ids: Sequence[int]) -> Sequence[Application | FraudscoreError]:
        """The newest application of each user, in order; UnknownUser or InvalidFeatures in
        place of the users it cannot give. Raise StoreUnavailable if it cannot answer."""
        ...


class AsyncFeatureRepository(Protocol):
    """The async face of :class:`FeatureRepository`."""

    async def latest_many(self, user_ids: Sequence[int]) -> Sequence[Application | FraudscoreError]:
        """The newest application of each user, in order; UnknownUser or InvalidFeatures in
        place of the users it cannot give. Raise StoreUnavailable if it cannot answer."""
        ...


class PredictionSink(Protocol):
    """Where answered predictions are recorded, durably, before the answer leaves."""

    def record_many(self, predictions: Sequence[Prediction]) -> Recorded:
        """Persist ``predictions``; return only once they are stored: None when all are, else
        one entry per prediction, None where stored and the error where not. Raise
        StoreUnavailable (or StoreError) when none can be."""
        ...


class AsyncPredictionSink(Protocol):
    """The async face of :class:`PredictionSink`."""

    async def record_many(self, predictions: Sequence[Prediction]) -> Recorded:
        """Persist ``predictions``; return only once they are stored: None when all are, else
        one entry per prediction, None where stored and the error where not. Raise
        StoreUnavailable (or StoreError) when none can be."""
        ...


class Scorer(Protocol):
    """A fraud model. Batch-first: scoring one application is a batch of one.

    A scorer that can explain its scores gives reasons (``Scores.reasons``) for the
    applications its own policy names (e.g. the flagged ones) and for each application whose
    ``explain`` entry is true. ``explain`` is passed only when some entry is true, so a scorer
    that cannot explain still serves every request that does not ask.
    """

    def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        """One fraud probability per application, in order; raise ModelUnavailable."""
        ...


class AsyncScorer(Protocol):
    """The async face of :class:`Scorer` (e.g. a micro-batcher in front of one)."""

    async def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        """One fraud probability per application, in order; raise ModelUnavailable."""
        ...
