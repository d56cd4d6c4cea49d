"""Reason codes on real XGBoost output: they add up to the margin, name the features the model
was built to use, follow the policy (flagged, asked for), and survive the scorer's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost

from fraudscore import FEATURE_NAMES, Application, ModelUnavailable
from fraudscore_adapters.xgb import TrainConfig, XGBScorer, train_file
from fraudscore_adapters.xgb.reasons import HAND_ROWS, MAX_REASONS, Explainer, ReasonPolicy, _Paths
from tests.support import application
from tests.unit.test_xgb import raw_baf_frame

pytestmark = pytest.mark.unit

TINY = TrainConfig(seed=5, max_rounds=60, max_depth=3, learning_rate=0.3, n_jobs=1)
METHODS = ["approx", "exact"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model of data whose fraud odds rise with housing_status BA, device_os windows,
    a missing previous address and age (``raw_baf_frame``'s rule), and nothing else."""
    root = tmp_path_factory.mktemp("reasons")
    raw_baf_frame(12_000, seed=7).write_parquet(root / "data.parquet")
    train_file(root / "data.parquet", root / "model", TINY, log=lambda _: None)
    return root / "model"


def scorer(artifacts: Path, method: str = "approx", when: str = "flagged") -> XGBScorer:
    return XGBScorer.load(artifacts, reasons=ReasonPolicy(when=when, method=method))


def risky() -> Application:
    """Every risk the data was made with."""
    return application(
        housing_status="BA", device_os="windows", prev_address_months_count=-1, customer_age=80
    )


def safe() -> Application:
    return application(
        housing_status="BE", device_os="linux", prev_address_months_count=30, customer_age=20
    )


def spread(n: int) -> list[Application]:
    """``n`` varied applications: each category of the risk features, ages, missing or not."""
    statuses = ["BA", "BB", "BC", "BD", "BE", "BF", "BG"]
    systems = ["linux", "macintosh", "other", "windows", "x11"]
    return [
        application(
            housing_status=statuses[i % 7],
            device_os=systems[i % 5],
            prev_address_months_count=-1 if i % 3 == 0 else 12 + i,
            customer_age=20 + 10 * (i % 7),
            bank_months_count=-1 if i % 4 == 0 else 5,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("method", METHODS)
def test_contributions_and_bias_add_up_to_the_margin(artifacts: Path, method: str) -> None:
    model = scorer(artifacts, method)
    applications = spread(40)
    by_feature, bias = model.contributions(applications)
    margins = model.predict(model.matrix(applications), margin=True)
    assert by_feature.shape == (40, len(FEATURE_NAMES))
    np.testing.assert_allclose(by_feature.sum(axis=1) + bias, margins, atol=1e-5)
    assert np.ptp(by_feature.sum(axis=1)) > 1.0  # not a constant that happens to fit


@pytest.mark.parametrize("method", METHODS)
def test_the_reasons_are_the_features_the_data_was_made_with(artifacts: Path, method: str) -> None:
    model = scorer(artifacts, method)
    (reasons,) = model.explain([risky()])
    named = [r.feature for r in reasons]
    assert set(named[:3]) <= {
        "housing_status", "device_os", "prev_address_months_count", "customer_age",
    }  # fmt: skip
    assert {"housing_status", "prev_address_months_count"} <= set(named)
    assert len(reasons) <= MAX_REASONS
    contributions = [r.contribution for r in reasons]
    assert contributions == sorted(contributions, reverse=True)
    assert all(c > 0 for c in contributions)
    values = {r.feature: r.value for r in reasons}
    assert values["housing_status"] == "BA"
    assert values["prev_address_months_count"] is None  # the cleaned value: missing
    (safe_reasons,) = model.explain([safe()])
    assert "housing_status" not in {r.feature for r in safe_reasons}  # BE lowers the odds


def test_a_reason_is_its_features_summed_contribution(artifacts: Path) -> None:
    """Each reason's contribution is XGBoost's own ``pred_contribs`` summed over the model
    columns of that feature (the one-hot columns of housing_status, for one)."""
    model = scorer(artifacts, "exact")
    app = risky()
    (reasons,) = model.explain([app])
    matrix = model.matrix([app])
    booster = model._model.get_booster()
    raw = booster.predict(
        xgboost.DMatrix(matrix), pred_contribs=True, iteration_range=model._rounds
    )[0]
    names = model._preprocessor.named_steps["columns"].get_feature_names_out()  # scikit-learn's
    housing = [i for i, n in enumerate(names) if n.startswith("cat__housing_status_")]
    assert len(housing) == 7
    by_name = {r.feature: r.contribution for r in reasons}
    assert by_name["housing_status"] == pytest.approx(float(raw[housing].sum()), abs=1e-6)


def test_flagged_applications_are_explained_and_the_others_only_when_asked(
    artifacts: Path,
) -> None:
    model = scorer(artifacts)
    applications = spread(30)
    scores = model.score(applications)
    flagged = [p >= scores.threshold for p in scores.probabilities]
    assert 0 < sum(flagged) < len(flagged)
    assert scores.reasons is not None
    assert [r is not None for r in scores.reasons] == flagged
    asked = [i % 2 == 0 for i in range(30)]
    both = model.score(applications, explain=asked)
    assert both.reasons is not None
    assert [r is not None for r in both.reasons] == [
        f or a for f, a in zip(flagged, asked, strict=True)
    ]
    assert list(both.probabilities) == list(scores.probabilities)  # reasons change no score


def test_only_asked_ones_are_explained_under_the_requested_policy(artifacts: Path) -> None:
    model = scorer(artifacts, when="requested")
    applications = [risky(), safe(), risky()]
    assert model.score(applications).reasons is None
    scores = model.score(applications, explain=[False, True, False])
    assert scores.reasons is not None
    assert [r is not None for r in scores.reasons] == [False, True, False]


def test_a_batch_explained_together_gives_each_its_own_reasons(artifacts: Path) -> None:
    model = scorer(artifacts)
    applications = spread(12)
    together = model.explain(applications)
    alone = [model.explain([a])[0] for a in applications]
    assert [[r.feature for r in rs] for rs in together] == [[r.feature for r in rs] for rs in alone]


def test_reasons_that_do_not_add_up_are_refused(artifacts: Path) -> None:
    model = scorer(artifacts)
    matrix = model.matrix(spread(5))
    margins = model.predict(matrix, margin=True)
    explainer = Explainer(model._booster, model._rounds, model._preprocessor, "approx")
    explainer.check(matrix, margins)
    with pytest.raises(ModelUnavailable, match="do not add up to the margin"):
        explainer.check(matrix, margins + 0.01)


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="not a known policy"):
        ReasonPolicy(method="shapley")
    with pytest.raises(ValueError, match="not a known policy"):
        ReasonPolicy(when="always")


def test_the_hand_walked_contributions_are_xgboosts(artifacts: Path) -> None:
    """Below HAND_ROWS rows the approximate contributions are walked in numpy; they must be
    XGBoost's own ``approx_contribs``, feature by feature, and the same bias."""
    model = scorer(artifacts, "approx")
    explainer = model._explainer
    matrix = model.matrix(spread(HAND_ROWS - 1))
    ours, our_bias = explainer.contributions(matrix)
    theirs, their_bias = explainer._by_xgboost(matrix)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    np.testing.assert_allclose(our_bias, their_bias, atol=1e-6)
    assert np.count_nonzero(ours) > 3 * (HAND_ROWS - 1)


def test_hand_walked_contributions_that_drift_from_xgboost_are_refused(
    artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = scorer(artifacts, "approx")
    walked = _Paths.contributions
    shift = 1e-3 * (np.arange(len(FEATURE_NAMES)) - 14.5)  # sums to 0: the margin still adds up

    def drifting(self: _Paths, matrix: np.ndarray) -> np.ndarray:
        return walked(self, matrix) + shift

    monkeypatch.setattr(_Paths, "contributions", drifting)
    with pytest.raises(ModelUnavailable, match="differ from XGBoost's"):
        model.self_check()  # still adds up to the margin: only the comparison catches it
