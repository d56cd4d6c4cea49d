"""The XGBoost :class:`~fraudscore.Scorer`: verified artifacts, a fast exact scoring path.

``load`` checks the artifact directory (the pin when given, manifest, library versions, every
SHA-256) before it unpickles anything. ``score`` skips scikit-learn: the fitted pipeline is
compiled into a :class:`~fraudscore_adapters.xgb.pipeline.CompiledTransform` that builds the
same float64 matrix, and the booster predicts in place on it, with the trees early stopping
kept, exactly as ``model.predict_proba`` does. A self-check at load time compares both paths on
probe applications (every category, every missing value) and refuses the model on any
difference, or when its reasons (:mod:`~fraudscore_adapters.xgb.reasons`) do not add up to
its margins.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
import polars as pl
import xgboost

from fraudscore import (
    FEATURE_NAMES,
    FEATURES,
    Application,
    Feature,
    Kind,
    ModelUnavailable,
    Reasons,
    Scores,
    Value,
)
from fraudscore_adapters.xgb.artifacts import MODEL_FILE, PREPROCESSOR_FILE, read_verified
from fraudscore_adapters.xgb.pipeline import CompiledTransform, compile_transform, features_frame
from fraudscore_adapters.xgb.reasons import DEFAULT_REASONS, Explainer, ReasonPolicy
from fraudscore_adapters.xgb.versions import locate

__all__ = ["XGBScorer", "probe_applications"]

Probabilities = npt.NDArray[np.float32]


class XGBScorer:
    """Scores applications with a trained XGBoost model; thread-safe (in-place prediction)."""

    __slots__ = (
        "_booster",
        "_explainer",
        "_model",
        "_preprocessor",
        "_rounds",
        "_transform",
        "manifest",
        "reasons",
    )

    def __init__(
        self,
        preprocessor: Any,
        model: Any,
        manifest: dict[str, Any],
        *,
        threads: int = 1,
        reasons: ReasonPolicy = DEFAULT_REASONS,
    ) -> None:
        """Wrap a fitted pipeline and XGBClassifier (prefer :meth:`load`, which verifies).

        ``reasons`` says which applications get reasons (always those whose caller asks) and
        how they are computed."""
        self._preprocessor = preprocessor
        self._model = model
        self._transform: CompiledTransform = compile_transform(preprocessor)
        self._booster: xgboost.Booster = model.get_booster()
        self._booster.set_param({"nthread": threads})
        best = getattr(model, "best_iteration", None)
        self._rounds = (0, 0 if best is None else int(best) + 1)
        self._explainer = Explainer(self._booster, self._rounds, preprocessor, reasons.method)
        self.reasons = reasons
        self.manifest = manifest

    @classmethod
    def load(
        cls,
        artifact_dir: Path,
        *,
        threads: int = 1,
        pin: str | Collection[str] | None = None,
        reasons: ReasonPolicy = DEFAULT_REASONS,
    ) -> XGBScorer:
        """Verify and load ``artifact_dir``; raise ModelUnavailable saying what is wrong.

        ``threads`` is the booster's thread count; 1 is fastest for the small batches a
        service scores (measured: threads cost more than they save below a few thousand rows).
        ``pin`` is the expected SHA-256 of ``manifest.json`` (``FRAUDSCORE_MODEL_SHA256``; or
        several, any of which may match): the folder's own manifest only proves it agrees with
        itself, the pin that it is the model meant to run; a mismatch is refused before any
        pickle is read. ``artifact_dir`` is a model's folder (a version's, or a flat one) or an
        artifact root, whose ``current`` pointer is then resolved once
        (:func:`~fraudscore_adapters.xgb.versions.locate`).
        """
        artifact_dir = locate(artifact_dir).path
        manifest, blobs = read_verified(artifact_dir, pin=pin)
        try:
            preprocessor = joblib.load(io.BytesIO(blobs[PREPROCESSOR_FILE]))
            model = joblib.load(io.BytesIO(blobs[MODEL_FILE]))
        except Exception as exc:  # verified bytes that still fail to unpickle
            raise ModelUnavailable(f"cannot unpickle {artifact_dir}: {exc!r}") from exc
        scorer = cls(preprocessor, model, manifest.fields, threads=threads, reasons=reasons)
        scorer.self_check()
        return scorer

    @property
    def threshold(self) -> float:
        """The decision threshold chosen at training (5% FPR on validation)."""
        return float(self.manifest["threshold"])

    @property
    def model_version(self) -> str:
        """``xgb-`` and the first 12 hex digits of model.pkl's SHA-256."""
        return str(self.manifest["model_version"])

    def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        """One fraud probability per application, in order, with reasons for the flagged ones
        (policy ``flagged``) and those ``explain`` names; raise ModelUnavailable."""
        if not applications:
            return Scores((), self.threshold, self.model_version)
        try:
            matrix = self.matrix(applications)
            probabilities = self.predict(matrix)
            reasons = self._reasons(applications, matrix, probabilities, explain)
        except (KeyError, TypeError, ValueError, xgboost.core.XGBoostError) as exc:
            raise ModelUnavailable(f"scoring failed: {exc!r}") from exc
        return Scores(probabilities.tolist(), self.threshold, self.model_version, reasons)

    def _reasons(
        self,
        applications: Sequence[Application],
        matrix: npt.NDArray[np.float64],
        probabilities: Probabilities,
        explain: Sequence[bool] | None,
    ) -> list[Reasons | None] | None:
        """Reasons for the rows to explain (one matrix call for all of them), None elsewhere;
        None when no row is. Flagged is the core's rule, ``is_fraud``, in float64."""
        wanted = (
            probabilities.astype(np.float64) >= self.threshold
            if self.reasons.when == "flagged"
            else np.zeros(len(applications), dtype=bool)
        )
        if explain is not None:
            wanted |= np.asarray(explain, dtype=bool)
        rows = np.flatnonzero(wanted).tolist()
        if not rows:
            return None
        out: list[Reasons | None] = [None] * len(applications)
        found = self._explainer.reasons([applications[i] for i in rows], matrix[rows])
        for i, reasons in zip(rows, found, strict=True):
            out[i] = reasons
        return out

    def explain(
        self, applications: Sequence[Application], matrix: npt.NDArray[np.float64] | None = None
    ) -> list[Reasons]:
        """The reasons of every application (``matrix``: their model-input rows, when already
        built), by the scorer's method."""
        rows = self.matrix(applications) if matrix is None else matrix
        return self._explainer.reasons(applications, rows)

    def contributions(
        self, applications: Sequence[Application]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Each application's contribution per feature (``FEATURE_NAMES`` order) and bias, in
        log-odds, by the scorer's method: they add up to the margin."""
        return self._explainer.contributions(self.matrix(applications))

    def matrix(self, applications: Sequence[Application]) -> npt.NDArray[np.float64]:
        """The model-input matrix of ``applications`` (the compiled transform)."""
        return self._transform.matrix(applications)

    def predict(self, matrix: npt.NDArray[np.float64], *, margin: bool = False) -> Probabilities:
        """Probabilities (or log-odds) of a model-input matrix, as ``predict_proba`` gives."""
        out: Probabilities = self._booster.inplace_predict(
            matrix,
            iteration_range=self._rounds,
            predict_type="margin" if margin else "value",
            missing=np.nan,
            validate_features=False,
        )
        return out

    def reference(self, frame: pl.DataFrame) -> Probabilities:
        """The slow path: ``model.predict_proba(preprocessor.transform(frame))[:, 1]``."""
        matrix = self._preprocessor.transform(frame.select(FEATURE_NAMES))
        out: Probabilities = self._model.predict_proba(matrix)[:, 1]
        return out

    def self_check(self) -> None:
        """Refuse the model unless the fast path reproduces the sklearn path exactly."""
        probes = probe_applications()
        fast = self._transform.matrix(probes)
        slow = np.asarray(self._preprocessor.transform(features_frame(probes)), dtype=np.float64)
        if fast.shape != slow.shape or not np.array_equal(fast, slow):
            raise ModelUnavailable("the compiled transform disagrees with the preprocessor")
        if not np.array_equal(self.predict(fast), self.reference(features_frame(probes))):
            raise ModelUnavailable("in-place prediction disagrees with predict_proba")
        self._explainer.check(fast, self.predict(fast, margin=True))


def _probe_value(feature: Feature, row: int) -> Value:
    if feature.kind is Kind.CATEGORICAL:
        return feature.categories[row % len(feature.categories)]
    if feature.nullable and row % 3 == 1:
        return None
    low, high = float(feature.low or 0.0), float(feature.high or 1.0)
    value = low + (high - low) * ((row * 0.37) % 1.0)
    return value if feature.kind is Kind.NUMERIC else round(value)


def probe_applications(rows: int = 9) -> list[Application]:
    """Valid applications covering every category, missing values and spread-out numbers."""
    return [Application(tuple(_probe_value(f, r) for f in FEATURES)) for r in range(rows)]
