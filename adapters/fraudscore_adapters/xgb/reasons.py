"""Reason codes: why an application scored as it did, from XGBoost's own contributions.

XGBoost splits an application's margin (log-odds) into one contribution per model column plus
a bias (``pred_contribs``): the contributions and the bias add up to the margin exactly. The
model's columns come from the 30 BAF features (a scaled value, a missing-indicator, one-hot
columns), so each feature's contribution is the sum over its columns; the reasons are the
features with the largest positive contributions, with the application's value.

Two ways to split, chosen by ``FRAUDSCORE_REASONS_METHOD`` (figures from
``bench/reasons_cost.py`` on the default model, 348 trees of depth 6, one thread):

- ``approx`` (the default): Saabas, each split's change of the node's mean value credited to
  its feature along the application's path. Its top feature is exact TreeSHAP's in ~76% of
  flagged rows, and its top 4 share ~3 of exact's 4.
- ``exact``: TreeSHAP (Shapley values, what ``shap`` computes): ~2-3 ms per explained row,
  ~5 ms for one, so at ~6% flagged about half the service's throughput. For offline scoring
  (``score --explain``) or a service with the CPU to spare.

Written by hand, and why: XGBoost's own Saabas (``approx_contribs``) costs ~0.5 ms per call
however few rows it explains (a DMatrix, ~0.15 ms, and node statistics recomputed on every
call), and a batch of the service holds one to a few flagged rows: measured, that put ~20-40
µs on every request (~15-25% of the CPU a request costs). :class:`_Paths` walks the same paths
in numpy with the node statistics computed once, at load: ~70 µs for one row, ~140 µs for
four, the same numbers as XGBoost's to 1e-6 (the self-check at load compares the two and
refuses the model on any difference). From :data:`HAND_ROWS` rows up, and for ``exact``,
XGBoost computes.

Both add up to the margin; the self-check also refuses a model whose reasons do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import xgboost

from fraudscore import FEATURE_NAMES, Application, ModelUnavailable, Reason, Reasons
from fraudscore.schema import FEATURE_INDEX
from fraudscore_adapters.xgb.pipeline import source_features

__all__ = [
    "DEFAULT_REASONS",
    "MAX_REASONS",
    "REASON_METHODS",
    "REASON_POLICIES",
    "Explainer",
    "ReasonPolicy",
]

MAX_REASONS = 4
"""Reasons given per application, at most: an adverse-action notice names up to four principal
reasons (Regulation B, 12 CFR 1002.9), and further ones add little."""
REASON_METHODS = ("approx", "exact")
REASON_POLICIES = ("flagged", "requested")

Matrix = npt.NDArray[np.float64]
Index = npt.NDArray[np.intp]
HAND_ROWS = 64
"""Below this many rows a call's approximate contributions are walked by :class:`_Paths`;
from there XGBoost's own is about as fast (measured: 1.8 vs 2.2 ms at 64 rows), uses its
threads, and needs no (rows x trees) index arrays."""
AGREEMENT = 1e-5
"""How far (log-odds) the hand-walked contributions may sit from XGBoost's (measured: 1e-6)."""
SUM_TOLERANCE = 1e-3
"""How far (log-odds) contributions plus bias may sit from the margin: float32 sums of ~350
trees differ from the margin in the sixth digit."""


@dataclass(frozen=True, slots=True)
class ReasonPolicy:
    """When reasons are computed and how."""

    when: str = "flagged"
    """``flagged``: for every flagged application, and any whose caller asks; ``requested``:
    only when asked."""
    method: str = "approx"
    """``approx`` (Saabas) or ``exact`` (TreeSHAP); see the module's figures."""

    def __post_init__(self) -> None:
        if self.when not in REASON_POLICIES or self.method not in REASON_METHODS:
            raise ValueError(f"reasons {self.when!r}/{self.method!r}: not a known policy")


DEFAULT_REASONS = ReasonPolicy()


class Explainer:
    """Per-feature contributions of a booster's margin, and the reasons they give."""

    __slots__ = ("_approx", "_booster", "_groups", "_paths", "_rounds")

    def __init__(
        self, booster: xgboost.Booster, rounds: tuple[int, int], preprocessor: Any, method: str
    ) -> None:
        self._booster = booster
        self._rounds = rounds
        self._approx = method == "approx"
        group_of = np.array([FEATURE_INDEX[f] for f in source_features(preprocessor)])
        groups = np.zeros((len(group_of), len(FEATURE_NAMES)), dtype=np.float64)
        groups[np.arange(len(group_of)), group_of] = 1.0
        self._groups = groups
        self._paths = _Paths.of(booster, rounds, group_of) if self._approx else None

    def contributions(self, matrix: Matrix) -> tuple[Matrix, npt.NDArray[np.float64]]:
        """Each row's contribution per feature (``FEATURE_NAMES`` order) and its bias, in
        log-odds: a row's contributions plus its bias are its margin."""
        if self._paths is not None and len(matrix) < HAND_ROWS and not np.isnan(matrix).any():
            return self._paths.contributions(matrix), np.full(len(matrix), self._paths.bias)
        return self._by_xgboost(matrix)

    def _by_xgboost(self, matrix: Matrix) -> tuple[Matrix, npt.NDArray[np.float64]]:
        raw = self._booster.predict(
            xgboost.DMatrix(matrix, missing=np.nan),
            pred_contribs=True,
            approx_contribs=self._approx,
            iteration_range=self._rounds,
            validate_features=False,
        ).astype(np.float64)
        return raw[:, :-1] @ self._groups, raw[:, -1]

    def reasons(self, applications: Sequence[Application], matrix: Matrix) -> list[Reasons]:
        """The reasons of each application (``matrix`` holds their model-input rows)."""
        by_feature, _ = self.contributions(matrix)
        return [
            _top(application, row)
            for application, row in zip(applications, by_feature, strict=True)
        ]

    def check(self, matrix: Matrix, margins: npt.NDArray[np.float32]) -> None:
        """Refuse the model unless contributions plus bias give the margin on ``matrix``, and
        the hand-walked contributions are XGBoost's."""
        by_feature, bias = self.contributions(matrix)
        gap = float(np.max(np.abs(by_feature.sum(axis=1) + bias - margins)))
        if not gap <= SUM_TOLERANCE:
            raise ModelUnavailable(f"reasons do not add up to the margin (off by {gap:.2g})")
        if self._paths is not None:
            theirs, their_bias = self._by_xgboost(matrix)
            ours = self._paths.contributions(matrix)
            gap = max(
                float(np.max(np.abs(ours - theirs))),
                float(np.max(np.abs(self._paths.bias - their_bias))),
            )
            if not gap <= AGREEMENT:
                raise ModelUnavailable(
                    f"hand-walked reasons differ from XGBoost's by {gap:.2g} (at most"
                    f" {AGREEMENT:g}): this model's trees are not read right"
                )


class _Paths:
    """Saabas contributions walked in numpy, all rows and trees at once, one level per step.

    Each node holds, computed once: its split feature's column, threshold, children, the
    change of the mean value to each child (what Saabas credits the split's feature with),
    and the BAF feature its column comes from. A leaf is its own child with no change, so
    every walk takes ``depth`` steps. Comparisons are in float32, as XGBoost makes them; the
    matrix must hold no NaN (the compiled transform imputes every missing value), since
    NaN's default directions are not walked here.
    """

    __slots__ = (
        "_column",
        "_depth",
        "_down_left",
        "_down_right",
        "_feature",
        "_left",
        "_right",
        "_roots",
        "_threshold",
        "bias",
    )

    def __init__(self, nodes: dict[str, Any], roots: Index, depth: int, bias: float) -> None:
        self._column: Index = nodes["column"]
        self._threshold: npt.NDArray[np.float32] = nodes["threshold"]
        self._left: Index = nodes["left"]
        self._right: Index = nodes["right"]
        self._down_left: Matrix = nodes["down_left"]
        self._down_right: Matrix = nodes["down_right"]
        self._feature: Index = nodes["feature"]
        self._roots = roots
        self._depth = depth
        self.bias = bias
        """The bias of every row: the trees' root means and the base margin."""

    @classmethod
    def of(cls, booster: xgboost.Booster, rounds: tuple[int, int], group_of: Index) -> _Paths:
        """The node tables of ``booster``'s trees in ``rounds`` (a binary model, one tree per
        round); raise ModelUnavailable for a model of another shape."""
        try:
            learner = msgspec.json.decode(booster.save_raw("json"))["learner"]  # 4x json's speed
            trees = learner["gradient_booster"]["model"]["trees"]
            stop = rounds[1] or len(trees)
            if len(trees) != booster.num_boosted_rounds() or any(
                t.get("categories") for t in trees[:stop]
            ):
                raise ValueError("not one numeric tree per round")
            parts = [_tree(tree) for tree in trees[:stop]]
        except (KeyError, TypeError, ValueError, msgspec.DecodeError) as exc:
            raise ModelUnavailable(f"cannot read the model's trees: {exc!r}") from exc
        offsets = np.cumsum([0] + [len(p["left"]) for p in parts[:-1]])
        nodes = {
            name: np.concatenate(
                [
                    p[name] + (o if name in ("left", "right") else 0)
                    for p, o in zip(parts, offsets, strict=True)
                ]
            )
            for name in ("column", "threshold", "left", "right", "down_left", "down_right")
        }
        nodes["feature"] = group_of[nodes["column"]]
        paths = cls(nodes, offsets.astype(np.intp), max(p["depth"] for p in parts), 0.0)
        # the bias, whatever the objective's base margin: a row's margin less its contributions
        zero = np.zeros((1, booster.num_features()), dtype=np.float64)
        margin = booster.inplace_predict(zero, iteration_range=rounds, predict_type="margin")
        paths.bias = float(margin[0]) - float(paths.contributions(zero).sum())
        return paths

    def contributions(self, matrix: Matrix) -> Matrix:
        """Each row's contribution per BAF feature (``FEATURE_NAMES`` order)."""
        rows, width = matrix.shape
        trees = len(self._roots)
        values = matrix.astype(np.float32).ravel()
        at = np.tile(self._roots, rows)
        row_start = np.repeat(np.arange(rows) * width, trees)
        out_start = np.repeat(np.arange(rows) * len(FEATURE_NAMES), trees)
        slots, changes = [], []
        for _ in range(self._depth):
            left = values.take(row_start + self._column.take(at)) < self._threshold.take(at)
            slots.append(out_start + self._feature.take(at))
            changes.append(np.where(left, self._down_left.take(at), self._down_right.take(at)))
            at = np.where(left, self._left.take(at), self._right.take(at))
        summed = np.bincount(
            np.concatenate(slots),
            weights=np.concatenate(changes),
            minlength=rows * len(FEATURE_NAMES),
        )
        return np.asarray(summed, dtype=np.float64).reshape(rows, len(FEATURE_NAMES))


def _tree(tree: dict[str, Any]) -> dict[str, Any]:
    """One tree's node table, node ids local; leaves point to themselves with no change."""
    left = np.asarray(tree["left_children"], dtype=np.intp)
    right = np.asarray(tree["right_children"], dtype=np.intp)
    condition = np.asarray(tree["split_conditions"], dtype=np.float32)
    cover = np.asarray(tree["sum_hessian"], dtype=np.float64)
    leaf = left == -1
    order, depth = [0], np.zeros(len(left), dtype=np.intp)  # parents before children
    for node in order:
        if not leaf[node]:
            depth[left[node]] = depth[right[node]] = depth[node] + 1
            order += [int(left[node]), int(right[node])]
    mean = np.where(leaf, condition, 0.0).astype(np.float64)  # a leaf's value is its condition
    for node in reversed(order):
        if not leaf[node]:
            lo, hi = left[node], right[node]
            mean[node] = (mean[lo] * cover[lo] + mean[hi] * cover[hi]) / cover[node]
    ids = np.arange(len(left))
    left, right = np.where(leaf, ids, left), np.where(leaf, ids, right)
    return {
        "column": np.where(leaf, 0, np.asarray(tree["split_indices"], dtype=np.intp)),
        "threshold": np.where(leaf, np.float32(0), condition),
        "left": left,
        "right": right,
        "down_left": mean[left] - mean,
        "down_right": mean[right] - mean,
        "depth": int(depth.max()),
    }


def _top(application: Application, contributions: npt.NDArray[np.float64]) -> Reasons:
    order = np.argsort(-contributions, kind="stable")[:MAX_REASONS]
    return tuple(
        Reason(FEATURE_NAMES[i], application.values[i], float(contributions[i]))
        for i in order.tolist()
        if contributions[i] > 0.0
    )
