"""Training: split, fit the pipeline and XGBoost, pick the threshold, evaluate, save artifacts.

Validation rows drive early stopping and the threshold, and their scores (in decile bins, in
the manifest) are what served scores are compared with for drift; test rows are touched once,
for the reported metrics. Same data and seed give the same split, model and metrics.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import numpy.typing as npt
import polars as pl
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from fraudscore import FEATURE_NAMES
from fraudscore_adapters.baf import load_features
from fraudscore_adapters.dataset import log as stderr_log
from fraudscore_adapters.monitoring.drift import MANIFEST_KEY, ScoreDistribution
from fraudscore_adapters.xgb.artifacts import (
    MODEL_FILE,
    PREPROCESSOR_FILE,
    sha256_file,
    write_manifest,
)
from fraudscore_adapters.xgb.metrics import (
    Evaluation,
    evaluate,
    plot_confusion,
    plot_importance,
    plot_pr,
    plot_roc,
    threshold_at_fpr,
)
from fraudscore_adapters.xgb.pipeline import build_preprocessor, source_features

__all__ = [
    "LABEL",
    "MONTH",
    "Log",
    "Splits",
    "TrainConfig",
    "TrainingResult",
    "fit_model",
    "gain_shares",
    "labels",
    "make_splits",
    "model_card",
    "split_random",
    "split_temporal",
    "stderr_log",
    "summary",
    "train_file",
    "train_frame",
]

LABEL = "fraud_bool"
MONTH = "month"
OLDER_AGE = 50
"""Fairness groups (predictive equality): applicants aged 50 or more vs under 50."""

Log = Callable[[str], None]
Labels = npt.NDArray[np.int8]
Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything that decides a training run besides the data."""

    seed: int = 42
    split: Literal["random", "temporal"] = "random"
    max_rounds: int = 1000
    learning_rate: float = 0.1
    max_depth: int = 6
    early_stopping_rounds: int = 50
    report_every: int = 50
    n_jobs: int = 2
    target_fpr: float = 0.05


@dataclass(frozen=True, slots=True)
class Splits:
    """Training, validation and test rows of a cleaned frame."""

    train: pl.DataFrame
    validation: pl.DataFrame
    test: pl.DataFrame

    def sizes(self) -> dict[str, dict[str, int]]:
        """Rows and frauds of each part."""
        parts = {"train": self.train, "validation": self.validation, "test": self.test}
        return {k: {"rows": v.height, "fraud": int(v[LABEL].sum())} for k, v in parts.items()}


def labels(frame: pl.DataFrame) -> Labels:
    """The 0/1 fraud labels of a cleaned frame; raise ValueError if absent or not 0/1."""
    if LABEL not in frame.columns:
        raise ValueError(f"the data has no {LABEL!r} column: it cannot train a model")
    y = frame[LABEL]
    if y.null_count() or not y.is_in([0, 1]).all():
        raise ValueError(f"{LABEL!r} must hold only 0 and 1")
    return y.cast(pl.Int8).to_numpy()


def split_random(frame: pl.DataFrame, seed: int) -> Splits:
    """Stratified 70/15/15 train/validation/test, seeded; rows keep their file order."""
    y = labels(frame)
    rows = np.arange(frame.height)
    train, rest = train_test_split(rows, test_size=0.30, stratify=y, random_state=seed)
    validation, test = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=seed)
    return Splits(*(frame[np.sort(part)] for part in (train, validation, test)))


def split_temporal(frame: pl.DataFrame) -> Splits:
    """The paper's split: train on months 0-5, test on 6-7.

    The last training month (5) is held out as validation, so early stopping and the
    threshold are chosen on data later than the trees saw, as they will be in use.
    """
    if MONTH not in frame.columns:
        raise ValueError(f"a temporal split needs the {MONTH!r} column")
    month = pl.col(MONTH)
    splits = Splits(
        frame.filter(month <= 4), frame.filter(month == 5), frame.filter(month.is_in([6, 7]))
    )
    empty = [name for name, size in splits.sizes().items() if size["rows"] == 0]
    if empty:
        raise ValueError(f"temporal split: no rows for {', '.join(empty)} (months 0-4, 5, 6-7)")
    return splits


def make_splits(frame: pl.DataFrame, config: TrainConfig) -> Splits:
    """The split ``config`` asks for; every part must hold both classes."""
    splits = split_random(frame, config.seed) if config.split == "random" else split_temporal(frame)
    for name, size in splits.sizes().items():
        if not 0 < size["fraud"] < size["rows"]:
            raise ValueError(f"the {name} split needs both fraud and legitimate rows: {size}")
    return splits


def fit_model(
    x_train: Matrix, y_train: Labels, x_val: Matrix, y_val: Labels, config: TrainConfig
) -> XGBClassifier:
    """Fit XGBoost with early stopping on validation; progress every N rounds to stderr."""
    model = XGBClassifier(
        tree_method="hist",
        n_estimators=config.max_rounds,
        learning_rate=config.learning_rate,
        max_depth=config.max_depth,
        subsample=0.8,
        colsample_bytree=0.8,
        # Imbalance (about 1% fraud): no scale_pos_weight. Reweighting would inflate every
        # probability, and the service returns probabilities as such. The operating point
        # comes from the 5% FPR threshold chosen on validation, which works on the ranking,
        # so honest (calibrated) probabilities cost nothing in recall there.
        scale_pos_weight=1.0,
        # Early stopping watches the last metric, ROC-AUC: the 5% FPR operating point is a
        # point of the ROC curve. PR-AUC is reported alongside.
        eval_metric=["aucpr", "auc"],
        early_stopping_rounds=config.early_stopping_rounds,
        n_jobs=config.n_jobs,
        random_state=config.seed,
    )
    with contextlib.redirect_stdout(sys.stderr):  # xgboost prints its eval log to stdout
        model.fit(x_train, y_train, eval_set=[(x_val, y_val)], verbose=config.report_every)
    return model


def probabilities(preprocessor: Pipeline, model: XGBClassifier, frame: pl.DataFrame) -> Any:
    """Fraud probabilities of a cleaned frame through the sklearn pipeline (float32)."""
    return model.predict_proba(preprocessor.transform(frame.select(FEATURE_NAMES)))[:, 1]


def gain_shares(model: XGBClassifier, preprocessor: Pipeline) -> dict[str, float]:
    """Each original feature's share of total gain (its one-hot / indicator columns summed).

    Only the trees kept by early stopping count. Largest first.
    """
    booster = model.get_booster()
    kept = booster[: model.best_iteration + 1]
    sources = source_features(preprocessor)
    totals = dict.fromkeys(FEATURE_NAMES, 0.0)
    for key, gain in kept.get_score(importance_type="total_gain").items():
        totals[sources[int(key.removeprefix("f"))]] += float(np.sum(gain))
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """What a training run produced and measured."""

    out_dir: Path
    model_version: str
    threshold: float
    best_iteration: int
    validation: Evaluation
    test: Evaluation
    importance: dict[str, float]
    metrics: dict[str, object]


def train_file(
    data: Path,
    out_dir: Path,
    config: TrainConfig | None = None,
    *,
    drop_invalid: bool = False,
    log: Log = stderr_log,
) -> TrainingResult:
    """Load a BAF file (CSV or Parquet), train, write the artifacts to ``out_dir``."""
    log(f"loading {data}")
    started = time.perf_counter()
    frame, report = load_features(data, drop_invalid=drop_invalid)
    log(
        f"loaded {report.rows_out:,} rows ({report.dropped:,} invalid rows dropped)"
        f" in {time.perf_counter() - started:.1f}s"
    )
    for problem in report.problems:
        log(f"  dropped for: {problem}")
    fingerprint = {
        "file": data.name,
        "sha256": sha256_file(data),
        "rows": report.rows_in,
        "rows_used": report.rows_out,
        "rows_dropped": report.dropped,
    }
    return train_frame(frame, out_dir, config or TrainConfig(), data=fingerprint, log=log)


def _fit(splits: Splits, config: TrainConfig, log: Log) -> tuple[Pipeline, XGBClassifier]:
    started = time.perf_counter()
    preprocessor = build_preprocessor()
    x_train = preprocessor.fit_transform(splits.train.select(FEATURE_NAMES))
    x_val = preprocessor.transform(splits.validation.select(FEATURE_NAMES))
    log(f"preprocessed: {x_train.shape[1]} model columns in {time.perf_counter() - started:.1f}s")
    log(
        f"fitting xgboost (up to {config.max_rounds} rounds, early stopping after"
        f" {config.early_stopping_rounds}; validation aucpr/auc every {config.report_every})"
    )
    started = time.perf_counter()
    y_train, y_val = labels(splits.train), labels(splits.validation)
    model = fit_model(x_train, y_train, x_val, y_val, config)
    log(f"fitted: best iteration {model.best_iteration} in {time.perf_counter() - started:.1f}s")
    return preprocessor, model


@dataclass(frozen=True, slots=True)
class _Scored:
    """Labels, fraud probabilities and the fairness group of one split part."""

    y: Labels
    scores: npt.NDArray[np.float32]
    older: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, frame: pl.DataFrame, preprocessor: Pipeline, model: XGBClassifier) -> _Scored:
        older = (frame["customer_age"] >= OLDER_AGE).to_numpy()
        return cls(labels(frame), probabilities(preprocessor, model, frame), older)

    def evaluate(self, threshold: float, target_fpr: float) -> Evaluation:
        return evaluate(self.y, self.scores, threshold, self.older, target_fpr)


def train_frame(
    frame: pl.DataFrame,
    out_dir: Path,
    config: TrainConfig,
    *,
    data: Mapping[str, object],
    log: Log = stderr_log,
) -> TrainingResult:
    """Train on a cleaned frame (with ``fraud_bool``; ``month`` for a temporal split)."""
    splits = make_splits(frame, config)
    _log_sizes(splits, log)
    preprocessor, model = _fit(splits, config, log)
    log("evaluating: threshold on validation, metrics on test")
    val = _Scored.of(splits.validation, preprocessor, model)
    test = _Scored.of(splits.test, preprocessor, model)
    threshold = threshold_at_fpr(val.y, val.scores, config.target_fpr)
    evaluations = (
        val.evaluate(threshold, config.target_fpr),
        test.evaluate(threshold, config.target_fpr),
    )
    model_version = _save_models(out_dir, preprocessor, model)
    importance = gain_shares(model, preprocessor)
    metrics = {
        "model_version": model_version,
        "data": dict(data),
        **_run_facts(config, splits, model, threshold),
        "validation": evaluations[0].as_dict(),
        "test": evaluations[1].as_dict(),
        # the reference of the served scores' drift (PSI): validation scores in decile bins
        MANIFEST_KEY: ScoreDistribution.of_scores(val.scores.tolist()).as_dict(),
        "feature_importance": importance,
    }
    best = int(model.best_iteration)
    result = TrainingResult(
        out_dir, model_version, threshold, best, *evaluations, importance, metrics
    )
    _write_reports(result, test)
    log(f"wrote the artifacts to {out_dir} (model {model_version})")
    return result


def _log_sizes(splits: Splits, log: Log) -> None:
    for name, size in splits.sizes().items():
        share = size["fraud"] / size["rows"]
        log(f"{name:<10} {size['rows']:>10,} rows  {size['fraud']:>8,} fraud ({share:.2%})")


def _run_facts(
    config: TrainConfig, splits: Splits, model: XGBClassifier, threshold: float
) -> dict[str, object]:
    return {
        "split": config.split,
        "seed": config.seed,
        "sizes": splits.sizes(),
        "target_fpr": config.target_fpr,
        "threshold": threshold,
        "best_iteration": int(model.best_iteration),
        "params": _params(model),
    }


def _save_models(out_dir: Path, preprocessor: Pipeline, model: XGBClassifier) -> str:
    """Pickle both; return the model version (``xgb-`` + 12 hex of model.pkl's SHA-256)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(preprocessor, out_dir / PREPROCESSOR_FILE)
    joblib.dump(model, out_dir / MODEL_FILE)
    return "xgb-" + sha256_file(out_dir / MODEL_FILE)[:12]


def _params(model: XGBClassifier) -> dict[str, object]:
    keep = (
        "n_estimators",
        "learning_rate",
        "max_depth",
        "subsample",
        "colsample_bytree",
        "scale_pos_weight",
        "early_stopping_rounds",
        "tree_method",
        "random_state",
    )
    params = model.get_params()
    return {k: params[k] for k in keep}


METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"
PLOT_FILES = ("confusion_matrix.png", "roc_curve.png", "pr_curve.png", "feature_importance.png")


def _write_reports(result: TrainingResult, test: _Scored) -> None:
    """metrics.json, the plots, the model card, then the manifest over all of them."""
    out = result.out_dir
    (out / METRICS_FILE).write_text(json.dumps(result.metrics, indent=2) + "\n", encoding="utf-8")
    confusion_png, roc_png, pr_png, importance_png = (out / name for name in PLOT_FILES)
    plot_confusion(result.test.confusion, result.threshold, confusion_png)
    plot_roc(test.y, test.scores, result.threshold, roc_png)
    plot_pr(test.y, test.scores, pr_png)
    plot_importance(result.importance, importance_png)
    (out / CARD_FILE).write_text(model_card(result), encoding="utf-8")
    files = [PREPROCESSOR_FILE, MODEL_FILE, METRICS_FILE, *PLOT_FILES, CARD_FILE]
    fields = {k: v for k, v in result.metrics.items() if k != "feature_importance"}
    write_manifest(out, {**fields, "features": list(FEATURE_NAMES)}, files)


_SPLITS = {
    "random": "stratified random 70/15/15 train/validation/test (seeded)",
    "temporal": "by month, as in the BAF paper: train months 0-4, validation month 5,"
    " test months 6-7",
}


def _rows(result: TrainingResult) -> list[tuple[str, str, str]]:
    """(metric, validation, test) rows of the metrics table."""

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    v, t = result.validation, result.test
    rows = [
        (name, fmt(getattr(v, attr)), fmt(getattr(t, attr)))
        for name, attr in (
            ("ROC-AUC", "roc_auc"),
            ("PR-AUC (average precision)", "pr_auc"),
            ("Recall at 5% FPR (threshold re-picked)", "tpr_at_5pct_fpr"),
            ("Recall at the chosen threshold", "recall"),
            ("FPR at the chosen threshold", "fpr"),
            ("Precision", "precision"),
            ("F1", "f1"),
            ("Accuracy", "accuracy"),
        )
    ]
    rows.append(
        ("FPR ratio age>=50 / <50 (min/max)", fmt(v.fairness.fpr_ratio), fmt(t.fairness.fpr_ratio))
    )
    return rows


def model_card(result: TrainingResult) -> str:
    """A short Markdown model card: data, split, metrics, threshold, fairness, caveats."""
    m, t = result.metrics, result.test
    c = t.confusion
    lines = [
        f"# Model card: {result.model_version}",
        "",
        "Gradient-boosted trees (XGBoost, `hist`) scoring the fraud probability of a"
        " bank-account-opening application, on the 30 features of the Feedzai Bank Account"
        " Fraud (BAF) schema. Probabilities are not reweighted (no `scale_pos_weight`).",
        "",
        *_data_section(m),
        "## Metrics",
        "| Metric | Validation | Test |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {v} | {tv} |" for name, v, tv in _rows(result)),
        "",
        f"Threshold **{result.threshold:.6f}**: the smallest validation score whose FPR on"
        f" validation legitimate rows is at most {m['target_fpr']:.0%}. Flag when"
        " probability >= threshold.",
        f"Test confusion matrix at it: TN {c.tn:,}, FP {c.fp:,}, FN {c.fn:,}, TP {c.tp:,}.",
        "",
        "## Fairness (predictive equality)",
        f"Test: {t.fairness.summary}. A ratio near 1 means both age groups see the same"
        " false-positive rate; the BAF paper's usual bar is 0.8 or more.",
        "",
        "## Top features (share of total gain)",
        *(f"- {name}: {share:.1%}" for name, share in list(result.importance.items())[:8]),
        "",
        "## Caveats",
        *_caveats(result),
    ]
    return "\n".join(lines) + "\n"


def _data_section(metrics: Mapping[str, Any]) -> list[str]:
    data, sizes = metrics["data"], metrics["sizes"]
    return [
        "## Data",
        f"- File `{data.get('file', '?')}`, SHA-256 `{data.get('sha256', '?')}`",
        f"- {data.get('rows_used', 0):,} rows used of {data.get('rows', 0):,}"
        f" ({data.get('rows_dropped', 0):,} invalid rows dropped)",
        f"- Split: {_SPLITS[str(metrics['split'])]}; seed {metrics['seed']}",
        *(
            f"- {k}: {s['rows']:,} rows, {s['fraud']:,} fraud ({s['fraud'] / s['rows']:.2%})"
            for k, s in sizes.items()
        ),
        "",
    ]


def _caveats(result: TrainingResult) -> list[str]:
    data: Any = result.metrics["data"]
    caveats = [
        "- Trained and tested on one dataset; BAF is itself synthetic (privacy-preserving"
        " generated from real data); performance on live traffic is unmeasured.",
        "- The threshold holds the FPR at 5% on validation data; drift moves it.",
        "- customer_age is a model input; the fairness ratio above is the check on it.",
    ]
    if "synthetic" in str(data.get("file", "")).lower():
        caveats.insert(
            0,
            "- **The training data is synthetic test data** (the file name says"
            " so): these metrics say nothing about real fraud.",
        )
    return caveats


def summary(result: TrainingResult) -> str:
    """The one-screen summary table printed at the end of a run."""
    width = max(len(name) for name, _, _ in _rows(result))
    c = result.test.confusion
    lines = [
        f"model {result.model_version}  threshold {result.threshold:.6f}"
        f"  best iteration {result.best_iteration}",
        f"{'metric':<{width}}  {'validation':>10}  {'test':>10}",
        *(f"{name:<{width}}  {v:>10}  {t:>10}" for name, v, t in _rows(result)),
        f"test confusion: TN {c.tn:,}  FP {c.fp:,}  FN {c.fn:,}  TP {c.tp:,}",
        "top features: "
        + ", ".join(f"{k} {v:.0%}" for k, v in list(result.importance.items())[:5]),
        f"artifacts: {result.out_dir}",
    ]
    return "\n".join(lines)
