"""Metrics of a fraud model at an operating point, and their plots (pure numpy / sklearn).

The decision rule is the core's: flag when ``score >= threshold``. The operating point is the
BAF paper's: the threshold whose false-positive rate on legitimate applications is at most 5%.
Rates are computed from the confusion matrix by hand, so an empty class gives 0 (or ``None``
for an undefined ratio) instead of a warning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve
from sklearn.metrics import roc_auc_score as _roc_auc_score

__all__ = [
    "Confusion",
    "Evaluation",
    "Fairness",
    "confusion",
    "evaluate",
    "fairness",
    "plot_confusion",
    "plot_importance",
    "plot_pr",
    "plot_roc",
    "threshold_at_fpr",
    "tpr_at_fpr",
]

Labels = npt.NDArray[Any]
"""0/1 labels (1 = fraud), any integer or boolean dtype."""
Scores = npt.NDArray[Any]
"""Scores of any float dtype; thresholds are exact values of that dtype."""
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Confusion:
    """Counts of a binary decision: true/false negatives and positives."""

    tn: int
    fp: int
    fn: int
    tp: int

    @property
    def fpr(self) -> float:
        """False-positive rate: flagged legitimate / all legitimate (0 when none)."""
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def tpr(self) -> float:
        """True-positive rate (recall): flagged fraud / all fraud (0 when none)."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def precision(self) -> float:
        """Flagged fraud / all flagged (0 when nothing is flagged)."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def accuracy(self) -> float:
        """Right decisions / all decisions."""
        return _ratio(self.tp + self.tn, self.tn + self.fp + self.fn + self.tp)

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0 when both are 0)."""
        p, r = self.precision, self.tpr
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def confusion(y_true: Labels, flagged: Mask) -> Confusion:
    """The confusion matrix of decisions ``flagged`` against labels ``y_true`` (1 = fraud)."""
    fraud = np.asarray(y_true).astype(bool)
    flagged = np.asarray(flagged, dtype=bool)
    return Confusion(
        tn=int(np.count_nonzero(~fraud & ~flagged)),
        fp=int(np.count_nonzero(~fraud & flagged)),
        fn=int(np.count_nonzero(fraud & ~flagged)),
        tp=int(np.count_nonzero(fraud & flagged)),
    )


def threshold_at_fpr(y_true: Labels, y_score: Scores, max_fpr: float = 0.05) -> float:
    """The smallest threshold, among the observed scores, whose FPR is at most ``max_fpr``.

    With ``k = floor(max_fpr * legit)`` false positives allowed, it is the lowest score ``t``
    with at most ``k`` legitimate scores ``>= t``. If even the top score breaks the budget,
    it is the next float (of the scores' dtype) above the top score (nothing flagged), capped
    at 1. The result is exactly representable in the scores' dtype, so comparing either way
    (float32 array or Python float) flags the same rows.
    """
    scores = np.asarray(y_score)
    legit = np.sort(scores[~np.asarray(y_true).astype(bool)])
    if legit.size == 0:
        return float(scores.min()) if scores.size else 0.0
    allowed = math.floor(max_fpr * legit.size + 1e-9)
    candidates = np.unique(scores)
    false_positives = legit.size - np.searchsorted(legit, candidates, side="left")
    within = np.flatnonzero(false_positives <= allowed)
    if within.size:
        return float(candidates[within[0]])
    return min(1.0, float(np.nextafter(candidates[-1], candidates.dtype.type(np.inf))))


def tpr_at_fpr(y_true: Labels, y_score: Scores, max_fpr: float = 0.05) -> float:
    """Recall at the threshold :func:`threshold_at_fpr` picks on the same rows."""
    threshold = threshold_at_fpr(y_true, y_score, max_fpr)
    return confusion(y_true, np.asarray(y_score) >= threshold).tpr


@dataclass(frozen=True, slots=True)
class Fairness:
    """Predictive equality across an age split: false-positive rates and their min/max ratio."""

    fpr_age_50_plus: float
    fpr_under_50: float
    fpr_ratio: float | None

    @property
    def summary(self) -> str:
        """One line: both rates and the ratio."""
        ratio = "n/a" if self.fpr_ratio is None else f"{self.fpr_ratio:.3f}"
        return (
            f"FPR age>=50 {self.fpr_age_50_plus:.4f} / age<50 {self.fpr_under_50:.4f}"
            f" (min/max {ratio})"
        )


def fairness(y_true: Labels, flagged: Mask, older: Mask) -> Fairness:
    """FPR of the ``older`` group vs the rest; ratio min/max (1 when both are 0).

    The ratio is ``None`` when a group has no legitimate rows (its FPR is undefined).
    """
    older = np.asarray(older, dtype=bool)
    y, f = np.asarray(y_true), np.asarray(flagged, dtype=bool)
    a, b = confusion(y[older], f[older]), confusion(y[~older], f[~older])
    if a.fp + a.tn == 0 or b.fp + b.tn == 0:
        return Fairness(a.fpr, b.fpr, None)
    high, low = max(a.fpr, b.fpr), min(a.fpr, b.fpr)
    return Fairness(a.fpr, b.fpr, 1.0 if high == 0 else low / high)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A model's metrics on one set of rows at one threshold."""

    rows: int
    positives: int
    threshold: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    fpr: float
    roc_auc: float | None
    pr_auc: float | None
    tpr_at_5pct_fpr: float
    confusion: Confusion
    fairness: Fairness

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict (nested dicts for the confusion matrix and fairness)."""
        return asdict(self)


def evaluate(
    y_true: Labels, y_score: Scores, threshold: float, older: Mask, max_fpr: float = 0.05
) -> Evaluation:
    """Every metric of ``y_score`` at ``threshold``; AUCs are ``None`` if a class is absent.

    ``tpr_at_5pct_fpr`` re-picks the threshold on these rows (the paper's headline metric);
    ``recall`` is the recall at the given threshold.
    """
    y = np.asarray(y_true).astype(np.int8)
    flagged = np.asarray(y_score) >= threshold
    counts = confusion(y, flagged)
    both = 0 < int(y.sum()) < y.size
    return Evaluation(
        rows=int(y.size),
        positives=int(y.sum()),
        threshold=float(threshold),
        accuracy=counts.accuracy,
        precision=counts.precision,
        recall=counts.tpr,
        f1=counts.f1,
        fpr=counts.fpr,
        roc_auc=float(_roc_auc_score(y, y_score)) if both else None,
        pr_auc=float(average_precision_score(y, y_score)) if both else None,
        tpr_at_5pct_fpr=tpr_at_fpr(y, y_score, max_fpr),
        confusion=counts,
        fairness=fairness(y, flagged, older),
    )


def plot_confusion(counts: Confusion, threshold: float, path: Path) -> None:
    """Save the confusion matrix as an annotated heat map."""
    fig = Figure(figsize=(4.8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    cells = np.array([[counts.tn, counts.fp], [counts.fn, counts.tp]])
    ax.imshow(cells, cmap="Blues")
    for (i, j), n in np.ndenumerate(cells):
        colour = "white" if n > cells.max() / 2 else "black"
        ax.text(j, i, f"{n:,}", ha="center", va="center", color=colour)
    ax.set_xticks([0, 1], ["legit", "fraud"])
    ax.set_yticks([0, 1], ["legit", "fraud"])
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    ax.set_title(f"Confusion matrix (test, threshold {threshold:.4f})")
    fig.savefig(path, dpi=100)


def plot_roc(y_true: Labels, y_score: Scores, threshold: float, path: Path) -> None:
    """Save the ROC curve, with the 5% FPR line and the chosen operating point."""
    fpr, tpr, _ = roc_curve(y_true, y_score)
    point = confusion(y_true, np.asarray(y_score) >= threshold)
    fig = Figure(figsize=(5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, label="model")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    ax.axvline(0.05, linestyle="--", color="red", label="5% FPR")
    ax.plot([point.fpr], [point.tpr], "o", color="black", label="chosen threshold")
    ax.set_xlabel("False-positive rate")
    ax.set_ylabel("True-positive rate (recall)")
    ax.set_title("ROC curve (test)")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=100)


def plot_pr(y_true: Labels, y_score: Scores, path: Path) -> None:
    """Save the precision-recall curve, with the prevalence as the chance line."""
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    fig = Figure(figsize=(5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(recall, precision, label="model")
    ax.axhline(float(np.mean(y_true)), linestyle=":", color="grey", label="prevalence")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title("Precision-recall curve (test)")
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=100)


def plot_importance(shares: Mapping[str, float], path: Path) -> None:
    """Save feature importances (share of total gain) as horizontal bars, largest on top."""
    ordered = sorted(shares.items(), key=lambda item: item[1])
    fig = Figure(figsize=(6.5, 7.5), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([name for name, _ in ordered], [share for _, share in ordered])
    ax.set_xlabel("Share of total gain")
    ax.set_ylabel("Feature")
    ax.set_title("Feature importance (total gain per feature)")
    ax.tick_params(axis="y", labelsize=7)
    fig.savefig(path, dpi=100)
