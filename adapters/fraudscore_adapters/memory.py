"""In-memory adapters: the embedded default store and the test fakes.

:class:`MemoryFeatureStore` keeps applications column-major in one float64 matrix per load
(NaN for a missing value, category codes for categoricals): the 1,000,000 applications of BAF
Base take 240 MB, where a dict of dicts takes several GB. Writes are append-only and the newest
version of a user wins, as in the Postgres store. Loads are immutable segments; small segments
are merged as they pile up (like a binary counter), so a lookup searches at most ~log2(n)
sorted id arrays. Readers never lock; writers swap the segment list under a lock.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import polars as pl

from fraudscore import (
    FEATURES,
    Application,
    FraudscoreError,
    Kind,
    Prediction,
    Reasons,
    UnknownUser,
    Value,
)
from fraudscore.ports import FeatureRepository, PredictionSink, Recorded

__all__ = [
    "AsyncMemoryFeatureStore",
    "AsyncMemoryPredictionSink",
    "MemoryFeatureStore",
    "MemoryPredictionSink",
]

Matrix = npt.NDArray[np.float64]
Ids = npt.NDArray[np.int64]


def _decoder(kind: Kind, categories: tuple[str, ...]) -> Callable[[float], Value]:
    if kind is Kind.CATEGORICAL:
        return lambda v: categories[int(v)]
    if kind is Kind.NUMERIC:
        return float
    return int


_DECODERS = tuple(_decoder(f.kind, f.categories) for f in FEATURES)
_CODES = tuple({c: float(i) for i, c in enumerate(f.categories)} for f in FEATURES)


def _decode(row: list[float]) -> Application:
    # v != v is the cheapest NaN test, and NaN is how the matrix marks a missing value.
    values = (None if v != v else dec(v) for dec, v in zip(_DECODERS, row, strict=True))  # noqa: PLR0124
    return Application(tuple(values))


def _encode(application: Application) -> list[float]:
    return [
        float("nan") if v is None else (codes[v] if isinstance(v, str) else float(v))
        for codes, v in zip(_CODES, application.values, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class _Segment:
    """One immutable load: sorted unique ids, and the matrix rows they point at."""

    ids: Ids
    rows: npt.NDArray[np.intp]
    matrix: Matrix

    @classmethod
    def build(cls, ids: Ids, matrix: Matrix) -> _Segment:
        """Index ``matrix`` by ``ids``; a user repeated in one load keeps its last row."""
        reversed_ids = ids[::-1]
        unique, first_in_reversed = np.unique(reversed_ids, return_index=True)
        rows = (len(ids) - 1 - first_in_reversed).astype(np.intp)
        return cls(unique, rows, matrix)

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, user_id: int) -> list[float] | None:
        """The encoded row of ``user_id``, or None when this segment lacks it."""
        i = int(np.searchsorted(self.ids, user_id))
        if i < len(self.ids) and self.ids[i] == user_id:
            row: list[float] = self.matrix[self.rows[i]].tolist()
            return row
        return None

    @staticmethod
    def merge(older: _Segment, newer: _Segment) -> _Segment:
        """One segment holding both; ``newer`` wins for users in both."""
        ids = np.concatenate([older.ids, newer.ids])
        matrix = np.concatenate([older.matrix[older.rows], newer.matrix[newer.rows]])
        return _Segment.build(ids, np.asfortranarray(matrix))


class MemoryFeatureStore:
    """A columnar, append-only, thread-safe in-memory :class:`~fraudscore.FeatureRepository`."""

    def __init__(self) -> None:
        self._segments: tuple[_Segment, ...] = ()
        self._write = threading.Lock()

    def __len__(self) -> int:
        """How many distinct users have features (computed; costs a pass over the ids)."""
        segments = self._segments
        if not segments:
            return 0
        return int(np.unique(np.concatenate([s.ids for s in segments])).size)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored arrays."""
        return sum(s.ids.nbytes + s.rows.nbytes + s.matrix.nbytes for s in self._segments)

    def latest(self, user_id: int) -> Application:
        """The newest application of ``user_id``; raise UnknownUser."""
        found = self._find(user_id, self._segments)
        if isinstance(found, UnknownUser):
            raise found
        return found

    def latest_many(self, user_ids: Sequence[int]) -> list[Application | UnknownUser]:
        """The newest application of each user, in order; UnknownUser for the ones it lacks."""
        segments = self._segments  # one consistent view for the whole batch
        return [self._find(uid, segments) for uid in user_ids]

    @staticmethod
    def _find(user_id: int, segments: tuple[_Segment, ...]) -> Application | UnknownUser:
        for segment in reversed(segments):
            row = segment.find(user_id)
            if row is not None:
                return _decode(row)
        return UnknownUser(user_id)

    def add(self, user_id: int, application: Application) -> None:
        """Store a new version of one user's application."""
        self.add_many([user_id], [application])

    def add_many(self, user_ids: Sequence[int], applications: Iterable[Application]) -> None:
        """Store a new version for each user (one load, appended atomically)."""
        matrix = np.array([_encode(a) for a in applications], dtype=np.float64, ndmin=2)
        self._append(np.asarray(user_ids, dtype=np.int64), np.asfortranarray(matrix))

    def load_frame(self, frame: pl.DataFrame, *, id_column: str = "user_id") -> int:
        """Append a cleaned frame (see ``baf.clean_frame``) keyed by ``id_column``; return rows.

        Categoricals must be polars Enums in schema order, as ``clean_frame`` makes them.
        """
        columns = [
            pl.col(f.name).to_physical() if f.kind is Kind.CATEGORICAL else pl.col(f.name)
            for f in FEATURES
        ]
        matrix = frame.select(c.cast(pl.Float64).fill_null(float("nan")) for c in columns).to_numpy(
            order="fortran"
        )
        ids = frame.get_column(id_column).cast(pl.Int64).to_numpy()
        self._append(ids, matrix)
        return frame.height

    def _append(self, ids: Ids, matrix: Matrix) -> None:
        if len(ids) != matrix.shape[0] or matrix.shape[1] != len(FEATURES):
            raise ValueError(f"{len(ids)} ids for a matrix of shape {matrix.shape}")
        if not len(ids):
            return
        segment = _Segment.build(ids, matrix)
        with self._write:
            segments = [*self._segments, segment]
            while len(segments) > 1 and len(segments[-1]) * 2 >= len(segments[-2]):
                newer = segments.pop()
                segments[-1] = _Segment.merge(segments[-1], newer)
            self._segments = tuple(segments)


_Record = tuple[int, int, float, bool, float, str, str, datetime, str | None, Reasons | None]
"""A kept prediction as plain values (the id as its 128-bit int)."""


class MemoryPredictionSink:
    """A thread-safe in-memory :class:`~fraudscore.PredictionSink`.

    Keeps every record, or with ``capacity`` the newest ``capacity`` ones (a server without a
    database must not grow without bound); ``total`` counts every record ever made. Records
    are kept as tuples of plain values, which the garbage collector stops tracking: 100,000
    kept ``Prediction`` objects (each with its UUID object) made every full collection walk
    them, and the served p99 at 64 connections went from ~12 ms to 76-105 ms (measured).
    """

    def __init__(self, capacity: int | None = None) -> None:
        self._records: deque[_Record] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.total = 0

    def record_many(self, predictions: Sequence[Prediction]) -> None:
        """Keep ``predictions``."""
        rows = [
            (p.prediction_id.int, p.user_id, p.probability, p.is_fraud, p.threshold,
             p.model_version, p.route, p.created_at, p.caller, p.reasons)
            for p in predictions
        ]  # fmt: skip
        with self._lock:
            self._records.extend(rows)
            self.total += len(rows)

    @property
    def records(self) -> tuple[Prediction, ...]:
        """The predictions kept, oldest first."""
        with self._lock:
            rows = tuple(self._records)
        return tuple(Prediction(uuid.UUID(int=r[0]), *r[1:]) for r in rows)


class AsyncMemoryFeatureStore:
    """The async face of a feature repository that never blocks (a :class:`MemoryFeatureStore`,
    or a test's fake): its calls run on the loop."""

    def __init__(self, store: FeatureRepository) -> None:
        self._store = store

    async def latest_many(self, user_ids: Sequence[int]) -> Sequence[Application | FraudscoreError]:
        """The newest application of each user, in order; UnknownUser for the ones it lacks."""
        return self._store.latest_many(user_ids)


class AsyncMemoryPredictionSink:
    """The async face of a prediction sink that never blocks (a :class:`MemoryPredictionSink`,
    or a test's fake)."""

    def __init__(self, sink: PredictionSink) -> None:
        self._sink = sink

    async def record_many(self, predictions: Sequence[Prediction]) -> Recorded:
        """Keep ``predictions``."""
        return self._sink.record_many(predictions)
