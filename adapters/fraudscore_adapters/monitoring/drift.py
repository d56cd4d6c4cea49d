"""Score drift: the population-stability index (PSI) of recent scores against validation.

At training, the validation scores are cut into bins at their deciles and the share of
validation rows in each bin is saved in the model's manifest (:data:`MANIFEST_KEY`, written by
:meth:`ScoreDistribution.as_dict`). While serving, each worker keeps the bins of its last N
scores in a ring buffer (:class:`DriftWindow`: one bisect and two counter updates per score)
and computes, once per batch, the PSI of those N scores against the saved shares::

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

with both shares floored at :data:`PSI_EPSILON` (an empty bin would make the log infinite).
Identical distributions give 0. Common reading: below 0.1 stable, 0.1 to 0.25 a moderate
shift, above 0.25 a significant one. Decile bins (equal mass on validation, not equal width)
suit fraud scores, most of which sit close to 0.

Pure Python: no numpy on the serving path, and the training side writes the same rule.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_BINS",
    "MANIFEST_KEY",
    "PSI_EPSILON",
    "DriftWindow",
    "ScoreDistribution",
    "psi",
]

MANIFEST_KEY = "validation_scores"
"""Where a manifest (and metrics.json) keeps the validation score distribution."""
DEFAULT_BINS = 10
"""Deciles."""
PSI_EPSILON = 1e-4
"""Shares are floored at this before the PSI is computed: a bin empty on one side then adds a
large but finite term (an expected 10% bin left empty adds 0.1 * ln(0.1 / 1e-4) = 0.69)."""
_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class ScoreDistribution:
    """A score distribution in bins: ``edges`` are the increasing interior cut points, bin
    ``i`` holds the scores with ``edges[i-1] < score <= edges[i]`` (the first bin everything up
    to ``edges[0]``, the last everything above ``edges[-1]``); ``shares`` is the fraction of
    ``rows`` scores in each bin."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]
    rows: int

    def __post_init__(self) -> None:
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges)} edges need {len(self.edges) + 1} shares")
        if not all(math.isfinite(e) for e in self.edges) or any(
            a >= b for a, b in zip(self.edges, self.edges[1:], strict=False)
        ):
            raise ValueError(f"edges must be finite and strictly increasing: {self.edges}")
        if any(not 0.0 <= s <= 1.0 for s in self.shares):
            raise ValueError(f"shares must lie in [0, 1]: {self.shares}")
        if abs(sum(self.shares) - 1.0) > _SUM_TOLERANCE:
            raise ValueError(f"shares must add up to 1, not {sum(self.shares)}")
        if self.rows < 1:
            raise ValueError("a distribution of no rows")

    def bin_of(self, score: float) -> int:
        """The bin ``score`` falls in."""
        return bisect_left(self.edges, score)

    @classmethod
    def of_scores(cls, scores: Iterable[float], bins: int = DEFAULT_BINS) -> ScoreDistribution:
        """The distribution of ``scores`` cut at their ``bins``-quantiles (the smallest score
        with at least that share of scores at or below it; ties merge bins)."""
        ordered = sorted(float(s) for s in scores)
        n = len(ordered)
        if n == 0:
            raise ValueError("no scores")
        cuts = (ordered[max(math.ceil(n * i / bins) - 1, 0)] for i in range(1, bins))
        edges = tuple(sorted(set(cuts)))
        at_or_below = [bisect_right(ordered, edge) for edge in edges]
        counts = [b - a for a, b in zip([0, *at_or_below], [*at_or_below, n], strict=True)]
        return cls(edges, tuple(c / n for c in counts), n)

    def as_dict(self) -> dict[str, object]:
        """The manifest's form (JSON floats round-trip exactly)."""
        return {"edges": list(self.edges), "shares": list(self.shares), "rows": self.rows}

    @classmethod
    def from_manifest(cls, fields: Mapping[str, object]) -> ScoreDistribution | None:
        """The validation distribution a manifest carries; None when it has none (a model
        trained before drift monitoring). Raise ValueError when it is malformed."""
        saved = fields.get(MANIFEST_KEY)
        if saved is None:
            return None
        if not isinstance(saved, Mapping):
            raise ValueError(f"{MANIFEST_KEY} is not an object")
        try:
            edges = tuple(float(e) for e in saved["edges"])
            shares = tuple(float(s) for s in saved["shares"])
            rows = int(saved["rows"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{MANIFEST_KEY} is malformed: {exc!r}") from exc
        return cls(edges, shares, rows)


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = PSI_EPSILON) -> float:
    """The population-stability index of ``actual`` shares against ``expected`` (same bins),
    each share floored at ``epsilon``."""
    if len(expected) != len(actual):
        raise ValueError(f"{len(expected)} expected shares, {len(actual)} actual")
    total = 0.0
    for share, seen in zip(expected, actual, strict=True):
        e, a = max(share, epsilon), max(seen, epsilon)
        total += (a - e) * math.log(a / e)
    return total


class DriftWindow:
    """The bins of the last ``size`` scores (a ring buffer with a count per bin, updated on
    insert and evict) and their PSI against ``reference``. Not thread-safe: one writer."""

    __slots__ = ("_counts", "_edges", "_expected", "_filled", "_next", "_ring", "size")

    def __init__(self, reference: ScoreDistribution, size: int) -> None:
        if size < 1:
            raise ValueError("a drift window holds at least one score")
        self.size = size
        self._edges = reference.edges
        self._expected = reference.shares
        self._counts = [0] * len(reference.shares)
        self._ring = [0] * size
        self._next = 0
        self._filled = 0

    def add(self, scores: Iterable[float]) -> None:
        """Take ``scores`` in, evicting the oldest once the window is full."""
        edges, counts, ring, size = self._edges, self._counts, self._ring, self.size
        for score in scores:
            where = bisect_left(edges, score)
            if self._filled == size:
                counts[ring[self._next]] -= 1
            else:
                self._filled += 1
            ring[self._next] = where
            counts[where] += 1
            self._next = (self._next + 1) % size

    @property
    def filled(self) -> int:
        """Scores in the window (``size`` once full)."""
        return self._filled

    def shares(self) -> list[float]:
        """The share of the window's scores in each bin."""
        held = self._filled or 1
        return [c / held for c in self._counts]

    def psi(self) -> float:
        """The PSI of the window against the reference; NaN until the window is full (a
        handful of scores says nothing: the PSI of n scores drawn from the reference itself
        averages about (bins - 1) / n)."""
        if self._filled < self.size:
            return math.nan
        return psi(self._expected, self.shares())
