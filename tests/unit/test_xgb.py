"""The XGBoost adapter: metrics by hand, training artifacts, determinism, the fast scorer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import joblib
import numpy as np
import polars as pl
import pytest

from fraudscore import FEATURE_NAMES, FEATURES, Application, Kind, ModelUnavailable
from fraudscore_adapters.baf import clean_frame, load_features
from fraudscore_adapters.monitoring.drift import MANIFEST_KEY, DriftWindow, ScoreDistribution
from fraudscore_adapters.xgb import (
    Confusion,
    TrainConfig,
    TrainingResult,
    XGBScorer,
    confusion,
    evaluate,
    fairness,
    features_frame,
    make_splits,
    read_manifest,
    split_random,
    split_temporal,
    threshold_at_fpr,
    tpr_at_fpr,
    train_file,
)
from fraudscore_adapters.xgb.__main__ import main

pytestmark = pytest.mark.unit

TINY = TrainConfig(
    seed=7,
    max_rounds=40,
    learning_rate=0.3,
    max_depth=3,
    early_stopping_rounds=10,
    report_every=10,
    n_jobs=1,
)


def raw_baf_frame(rows: int, seed: int) -> pl.DataFrame:
    """A random frame in the raw Kaggle Base.csv layout, with a label that has real signal.

    Fraud is logistic in customer_age, housing_status == "BA", device_os == "windows" and a
    missing previous address; nullable columns hold -1 sentinels (about 20% of rows).
    """
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for f in FEATURES:
        if f.kind is Kind.CATEGORICAL:
            columns[f.name] = rng.choice(list(f.categories), rows)
            continue
        low, high = float(f.low or 0), float(f.high or 1)
        if f.name == "customer_age":
            values = rng.integers(1, 10, rows) * 10.0
        elif f.kind is Kind.NUMERIC:
            values = rng.uniform(low, high, rows)
        else:
            values = rng.integers(int(low), int(high) + 1, rows).astype(np.float64)
        if f.nullable:
            values[rng.random(rows) < 0.2] = -1.0
        columns[f.name] = values
    logit = (
        -4.0
        + 0.04 * (np.asarray(columns["customer_age"]) - 40)
        + 1.5 * (np.asarray(columns["housing_status"]) == "BA")
        + 1.0 * (np.asarray(columns["device_os"]) == "windows")
        + 1.2 * (np.asarray(columns["prev_address_months_count"]) == -1)
    )
    fraud = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    month = rng.integers(0, 8, rows)
    return pl.DataFrame({"fraud_bool": fraud, **columns, "month": month})


def cleaned(rows: int, seed: int) -> pl.DataFrame:
    frame, _ = clean_frame(raw_baf_frame(rows, seed), keep=["fraud_bool", "month"])
    return frame


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "synthetic_tiny.parquet"
    raw_baf_frame(6000, seed=1).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def trained(data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingResult:
    return train_file(data_file, tmp_path_factory.mktemp("model"), TINY, log=lambda _: None)


@pytest.fixture
def artifacts(trained: TrainingResult, tmp_path: Path) -> Path:
    """A private copy of the artifacts, free to tamper with."""
    return Path(shutil.copytree(trained.out_dir, tmp_path / "artifacts"))


# --- metrics, by hand ---------------------------------------------------------------------


def test_confusion_and_rates_by_hand() -> None:
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    flagged = np.array([0, 0, 0, 0, 1, 1, 0, 1, 1, 1], dtype=bool)
    counts = confusion(y, flagged)
    assert counts == Confusion(tn=4, fp=2, fn=1, tp=3)
    assert counts.fpr == pytest.approx(2 / 6)
    assert counts.tpr == pytest.approx(3 / 4)
    assert counts.precision == pytest.approx(3 / 5)
    assert counts.accuracy == pytest.approx(7 / 10)
    assert counts.f1 == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert confusion(y, np.zeros(10, dtype=bool)).precision == 0.0


def test_threshold_is_the_smallest_observed_score_within_the_fpr_budget() -> None:
    legit = np.arange(1, 21) / 100  # 0.01 .. 0.20: 5% of 20 allows one false positive
    y = np.array([0] * 20 + [1, 1, 1])
    scores = np.concatenate([legit, [0.195, 0.5, 0.05]])
    threshold = threshold_at_fpr(y, scores, 0.05)
    assert threshold == 0.195  # a fraud score between the two top legit ones: FP stays 1
    assert confusion(y, scores >= threshold) == Confusion(tn=19, fp=1, fn=1, tp=2)
    assert tpr_at_fpr(y, scores, 0.05) == pytest.approx(2 / 3)
    assert threshold_at_fpr(y, scores, 0.10) == 0.19  # two false positives allowed


def test_threshold_flags_nothing_when_the_top_score_is_legit_and_no_fp_is_allowed() -> None:
    y = np.array([0] * 10 + [1])
    scores = np.array([*np.linspace(0.1, 0.9, 10), 0.5], dtype=np.float32)
    threshold = threshold_at_fpr(y, scores, 0.05)  # 10 legit: 0 false positives allowed
    assert np.float32(threshold) > scores.max()
    assert not (scores >= threshold).any()


def test_fairness_ratio_of_false_positive_rates() -> None:
    y = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 1])
    flagged = np.array([1, 0, 0, 0, 1, 1, 1, 0, 0, 0], dtype=bool)
    older = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    result = fairness(y, flagged, older)  # FPR older 1/4, younger 2/4
    assert (result.fpr_age_50_plus, result.fpr_under_50) == (0.25, 0.5)
    assert result.fpr_ratio == 0.5
    assert fairness(y, np.zeros(10, dtype=bool), older).fpr_ratio == 1.0
    assert fairness(y, flagged, np.ones(10, dtype=bool)).fpr_ratio is None


def test_evaluate_a_known_case() -> None:
    y = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.3])
    result = evaluate(y, scores, 0.35, np.array([0, 0, 1, 1, 1], dtype=bool))
    assert result.confusion == Confusion(tn=1, fp=2, fn=1, tp=1)
    assert result.roc_auc == pytest.approx(4 / 6)  # 4 of 6 (fraud, legit) pairs ordered right
    assert result.precision == pytest.approx(1 / 3)
    assert result.recall == 0.5
    assert result.tpr_at_5pct_fpr == 0.5  # threshold 0.8 flags no legit row
    assert result.fairness.fpr_ratio == 0.5  # FPR 1/1 (older) vs 1/2 (younger)


# --- training -----------------------------------------------------------------------------


def test_threshold_holds_validation_fpr_within_5_percent(trained: TrainingResult) -> None:
    validation = trained.validation
    assert validation.fpr <= 0.05
    assert validation.threshold == trained.threshold == trained.test.threshold
    assert 0.0 < trained.threshold < 1.0
    assert trained.test.roc_auc is not None
    assert trained.test.roc_auc > 0.7  # the label has real signal


def test_artifacts_exist_and_the_manifest_lists_their_hashes(trained: TrainingResult) -> None:
    out = trained.out_dir
    manifest = json.loads((out / "manifest.json").read_text())
    expected = {
        "preprocessor.pkl", "model.pkl", "metrics.json", "MODEL_CARD.md",
        "confusion_matrix.png", "roc_curve.png", "pr_curve.png", "feature_importance.png",
    }  # fmt: skip
    assert set(manifest["artifacts"]) == expected
    assert all((out / name).stat().st_size > 0 for name in expected)
    assert all((out / n).read_bytes()[:4] == b"\x89PNG" for n in expected if n.endswith(".png"))
    assert manifest["model_version"] == trained.model_version
    assert trained.model_version.startswith("xgb-")
    assert manifest["features"] == list(FEATURE_NAMES)
    assert manifest["data"]["rows"] == 6000
    assert set(manifest["versions"]) >= {"python", "numpy", "scikit-learn", "xgboost", "joblib"}
    assert "synthetic test data" in (out / "MODEL_CARD.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["feature_importance"]) == set(FEATURE_NAMES)
    assert metrics["test"]["confusion"]["tp"] == trained.test.confusion.tp


def test_the_manifest_carries_the_validation_score_deciles(
    data_file: Path, trained: TrainingResult
) -> None:
    """The drift reference: the validation scores cut at their deciles, the share of
    validation rows in each bin; scores served by the loaded model fall in the same bins, and
    the validation scores themselves are at PSI 0 against it."""
    fields = read_manifest(trained.out_dir).fields
    saved = ScoreDistribution.from_manifest(fields)
    assert saved is not None
    assert (
        fields[MANIFEST_KEY]
        == json.loads((trained.out_dir / "metrics.json").read_text())[MANIFEST_KEY]
    )
    frame, _ = load_features(data_file)
    validation = make_splits(frame, TINY).validation
    scores = XGBScorer.load(trained.out_dir).reference(validation).tolist()
    assert saved.rows == validation.height == len(scores)
    assert saved == ScoreDistribution.of_scores(scores)
    assert 2 <= len(saved.shares) <= 10
    counts = [0] * len(saved.shares)
    for score in scores:
        counts[saved.bin_of(score)] += 1
    assert [c / len(scores) for c in counts] == pytest.approx(saved.shares)
    window = DriftWindow(saved, size=len(scores))
    window.add(scores)
    assert window.psi() == pytest.approx(0.0, abs=1e-12)


def test_same_seed_gives_the_same_metrics(
    data_file: Path, trained: TrainingResult, tmp_path: Path
) -> None:
    again = train_file(data_file, tmp_path, TINY, log=lambda _: None)
    assert again.metrics == trained.metrics
    assert (tmp_path / "metrics.json").read_bytes() == (
        trained.out_dir / "metrics.json"
    ).read_bytes()


def test_temporal_split_respects_months() -> None:
    splits = split_temporal(cleaned(3000, seed=2))
    assert set(splits.train["month"].unique()) == {0, 1, 2, 3, 4}
    assert set(splits.validation["month"].unique()) == {5}
    assert set(splits.test["month"].unique()) == {6, 7}
    assert splits.train.height + splits.validation.height + splits.test.height == 3000


def test_random_split_is_stratified_70_15_15() -> None:
    frame = cleaned(4000, seed=3)
    splits = split_random(frame, seed=5)
    sizes = splits.sizes()
    assert [sizes[k]["rows"] for k in ("train", "validation", "test")] == [2800, 600, 600]
    rate = float(np.mean(frame["fraud_bool"].to_numpy()))
    assert all(abs(s["fraud"] / s["rows"] - rate) < 0.005 for s in sizes.values())
    ids = pl.concat([splits.train, splits.validation, splits.test])
    assert ids.height == frame.height


def test_cli_trains_a_temporal_model(data_file: Path, tmp_path: Path) -> None:
    args = ["--data", str(data_file), "--out", str(tmp_path), "--split", "temporal"]
    assert main([*args, "--max-rounds", "15", "--seed", "3"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["split"], manifest["seed"]) == ("temporal", 3)
    assert main(["--data", str(tmp_path / "absent.csv"), "--out", str(tmp_path)]) == 2


# --- the scorer ---------------------------------------------------------------------------


def test_fast_path_matches_the_sklearn_pipeline(trained: TrainingResult) -> None:
    scorer = XGBScorer.load(trained.out_dir)
    frame = cleaned(5000, seed=11).select(FEATURE_NAMES)
    for f in FEATURES:
        if f.kind is Kind.CATEGORICAL:
            assert frame[f.name].n_unique() == len(f.categories)
        if f.nullable:
            assert frame[f.name].null_count() > 0
    applications = [Application(row) for row in frame.iter_rows()]
    preprocessor = joblib.load(trained.out_dir / "preprocessor.pkl")
    model = joblib.load(trained.out_dir / "model.pkl")
    slow = model.predict_proba(preprocessor.transform(frame))[:, 1]
    fast = np.array(scorer.score(applications).probabilities)
    assert fast.shape == slow.shape == (5000,)
    assert np.max(np.abs(fast - slow)) <= 1e-6
    single = np.array([scorer.score([a]).probabilities[0] for a in applications[:300]])
    assert np.max(np.abs(single - slow[:300])) <= 1e-6
    assert np.array_equal(scorer.reference(features_frame(applications[:50])), slow[:50])


def test_scores_has_one_probability_per_application_in_order(trained: TrainingResult) -> None:
    scorer = XGBScorer.load(trained.out_dir)
    applications = [Application(row) for row in cleaned(40, seed=4).select(FEATURE_NAMES).rows()]
    scores = scorer.score(applications)
    assert len(scores.probabilities) == 40
    assert list(scorer.score(applications[::-1]).probabilities) == list(scores.probabilities)[::-1]
    assert (scores.threshold, scores.model_version) == (trained.threshold, trained.model_version)
    assert all(0.0 <= scores.probability(i) <= 1.0 for i in range(40))
    assert list(scorer.score([]).probabilities) == []


@pytest.mark.parametrize("name", ["model.pkl", "preprocessor.pkl", "roc_curve.png"])
def test_scorer_refuses_a_missing_file(artifacts: Path, name: str) -> None:
    (artifacts / name).unlink()
    with pytest.raises(ModelUnavailable, match=name):
        XGBScorer.load(artifacts)


@pytest.mark.parametrize("name", ["model.pkl", "preprocessor.pkl", "metrics.json"])
def test_scorer_refuses_a_tampered_file_before_unpickling(
    artifacts: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytearray((artifacts / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (artifacts / name).write_bytes(bytes(data))

    def forbidden(*_: object) -> None:
        raise AssertionError("unpickled a file that failed its integrity check")

    monkeypatch.setattr("fraudscore_adapters.xgb.scorer.joblib.load", forbidden)
    with pytest.raises(ModelUnavailable, match="integrity"):
        XGBScorer.load(artifacts)


def _set_version(artifacts: Path, library: str, version: str) -> None:
    path = artifacts / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["versions"][library] = version
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("library", ["xgboost", "scikit-learn"])
def test_scorer_refuses_another_minor_version(artifacts: Path, library: str) -> None:
    installed = json.loads((artifacts / "manifest.json").read_text())["versions"][library]
    major, minor, *_ = installed.split(".")
    _set_version(artifacts, library, f"{major}.{int(minor) + 1}.0")
    with pytest.raises(ModelUnavailable, match=library):
        XGBScorer.load(artifacts)


def test_scorer_accepts_another_patch_version(artifacts: Path) -> None:
    installed = json.loads((artifacts / "manifest.json").read_text())["versions"]["xgboost"]
    major, minor, *_ = installed.split(".")
    _set_version(artifacts, "xgboost", f"{major}.{minor}.99")
    assert XGBScorer.load(artifacts).model_version.startswith("xgb-")


def test_scorer_refuses_a_directory_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="manifest"):
        XGBScorer.load(tmp_path)
