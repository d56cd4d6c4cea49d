"""The synthetic BAF Base generator: Kaggle layout, raw encodings, and the real data's signal."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest

from fraudscore_adapters.baf import clean_frame
from fraudscore_adapters.baf.synthetic import SYNTHETIC_FILE_STEM, base_stats, generate

N_ROWS = 200_000
MINUS_ONE_COLUMNS = (
    "prev_address_months_count",
    "current_address_months_count",
    "bank_months_count",
    "session_length_in_minutes",
    "device_distinct_emails_8w",
)
DTYPES = {"int64": pl.Int64, "float64": pl.Float64, "object": pl.String}


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return generate(N_ROWS, seed=7)


@pytest.fixture(scope="module")
def stats() -> dict[str, Any]:
    return base_stats()


def mean(series: pl.Series) -> float:
    value = series.cast(pl.Float64).mean()
    assert isinstance(value, float)
    return value


def fraud_rate(frame: pl.DataFrame, condition: pl.Expr) -> float:
    return mean(frame.filter(condition)["fraud_bool"])


def of_class(frame: pl.DataFrame, label: int) -> pl.DataFrame:
    return frame.filter(pl.col("fraud_bool") == label)


def auc(frame: pl.DataFrame, col: str) -> float:
    """P(fraud value > legit value) + half the ties, from average ranks."""
    ranks = frame[col].rank("average").to_numpy()
    label = frame["fraud_bool"].to_numpy() == 1
    n_fraud, n_legit = int(label.sum()), int((~label).sum())
    return float((ranks[label].sum() - n_fraud * (n_fraud + 1) / 2) / (n_fraud * n_legit))


@pytest.mark.unit
def test_same_seed_same_rows_and_another_seed_other_rows() -> None:
    first = generate(5_000, seed=3)
    assert first.equals(generate(5_000, seed=3))
    other = generate(5_000, seed=4)
    assert not first.equals(other)
    assert first["credit_risk_score"].to_list() != other["credit_risk_score"].to_list()


@pytest.mark.unit
def test_kaggle_base_layout(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    assert frame.height == N_ROWS
    assert frame.columns == stats["columns"]
    assert len(frame.columns) == 32
    assert (frame.columns[0], frame.columns[-1]) == ("fraud_bool", "month")
    expected = {col: DTYPES[kind] for col, kind in stats["csv_dtype"].items()}
    assert dict(frame.schema) == expected
    assert "synthetic" in SYNTHETIC_FILE_STEM


@pytest.mark.unit
def test_every_row_passes_the_project_validation(frame: pl.DataFrame) -> None:
    cleaned, report = clean_frame(frame, keep=["fraud_bool", "month"])
    assert report.rows_out == report.rows_in == N_ROWS
    assert cleaned["customer_age"].null_count() == 0


@pytest.mark.unit
def test_zero_rows_keep_the_layout_and_negative_counts_are_refused() -> None:
    empty = generate(0)
    assert empty.height == 0
    assert empty.columns == base_stats()["columns"]
    with pytest.raises(ValueError, match="n_rows"):
        generate(-1)


@pytest.mark.unit
def test_months_and_fraud_rates_follow_the_base_facts(
    frame: pl.DataFrame, stats: dict[str, Any]
) -> None:
    assert mean(frame["fraud_bool"]) == pytest.approx(0.011029, abs=2e-5)
    month = stats["month"]
    by_month = frame.group_by("month").agg(pl.len(), pl.col("fraud_bool").mean()).sort("month")
    assert by_month["month"].to_list() == list(range(8))
    for m, rows, rate in by_month.iter_rows():
        assert rows / N_ROWS == pytest.approx(month["rows"][m] / 1_000_000, abs=1e-4)
        assert rate == pytest.approx(month["frauds_approx"][m] / month["rows"][m], abs=2e-4)


@pytest.mark.unit
def test_age_carries_the_real_signal(frame: pl.DataFrame) -> None:
    old = fraud_rate(frame, pl.col("customer_age") >= 50)
    young = fraud_rate(frame, pl.col("customer_age") < 50)
    assert old / young > 2
    assert old == pytest.approx(0.0234, abs=0.003)
    assert young == pytest.approx(0.0083, abs=0.001)


@pytest.mark.unit
def test_category_fraud_rates_match_the_full_base_facts(frame: pl.DataFrame) -> None:
    assert fraud_rate(frame, pl.col("housing_status") == "BA") == pytest.approx(0.0375, abs=0.004)
    assert fraud_rate(frame, pl.col("device_os") == "windows") == pytest.approx(0.0247, abs=0.003)
    cc = fraud_rate(frame, pl.col("employment_status") == "CC")
    assert cc == pytest.approx(0.0247, abs=0.007)
    assert fraud_rate(frame, pl.col("housing_status") == "BE") < 0.006


@pytest.mark.unit
@pytest.mark.parametrize("col", [*MINUS_ONE_COLUMNS, "intended_balcon_amount"])
def test_missing_shares_per_class_match_the_figures(
    frame: pl.DataFrame, stats: dict[str, Any], col: str
) -> None:
    figures = stats["numeric"][col]["missing_share"]
    if col == "prev_address_months_count":
        figures = stats["full_base_facts"]["prev_address_months_count_missing_share"]
    missing = pl.col(col) < 0
    for label, cls, tolerance in ((0, "legit", 0.005), (1, "fraud", 0.02)):
        got = of_class(frame, label).select(missing.mean()).item()
        assert got == pytest.approx(figures[cls], abs=tolerance), cls


@pytest.mark.unit
def test_missing_values_co_occur_as_in_base(frame: pl.DataFrame) -> None:
    legit = of_class(frame, 0)
    no_bank = legit.filter(pl.col("bank_months_count") == -1)
    assert mean(no_bank["intended_balcon_amount"] < 0) > 0.95
    both = (pl.col("prev_address_months_count") == -1) & (pl.col("intended_balcon_amount") < 0)
    assert mean(legit.select(both).to_series()) == pytest.approx(0.3567 + 0.1579, abs=0.01)
    prev_missing = legit.filter(pl.col("prev_address_months_count") == -1)
    prev_known = legit.filter(pl.col("prev_address_months_count") >= 0)
    current = "current_address_months_count"
    assert np.median(prev_missing[current].to_numpy()) > 2 * np.median(
        prev_known[current].to_numpy()
    )


@pytest.mark.unit
def test_sentinels_and_value_sets_are_raw_base_encodings(
    frame: pl.DataFrame, stats: dict[str, Any]
) -> None:
    for col in MINUS_ONE_COLUMNS:
        negatives = frame.filter(pl.col(col) < 0)[col]
        assert negatives.len() > 0, col
        assert set(negatives.unique().to_list()) == {-1}, col
    balcon = frame.filter(pl.col("intended_balcon_amount") < 0)["intended_balcon_amount"]
    assert balcon.to_numpy().min() >= -16
    assert balcon.n_unique() > 1000
    assert frame["device_fraud_count"].unique().to_list() == [0]
    assert set(frame["customer_age"].unique().to_list()) <= set(range(10, 100, 10))
    income = {float(v) for v in stats["numeric"]["income"]["csv_repr"].values()}
    assert set(frame["income"].unique().to_list()) == income
    limits = set(stats["numeric"]["proposed_credit_limit"]["values"]["value"])
    assert set(frame["proposed_credit_limit"].unique().to_list()) <= limits


@pytest.mark.unit
def test_per_class_quantiles_match_the_figures(frame: pl.DataFrame, stats: dict[str, Any]) -> None:
    cases = [("name_email_similarity", 0.02), ("credit_risk_score", 6), ("velocity_24h", 120)]
    for col, tolerance in cases:
        for label, cls in ((0, "legit"), (1, "fraud")):
            q = stats["numeric"][col][cls]["q"]
            got = np.quantile(of_class(frame, label)[col].to_numpy(), [0.25, 0.5, 0.75])
            assert got == pytest.approx([q[3], q[4], q[5]], abs=tolerance), (col, cls)


@pytest.mark.unit
@pytest.mark.parametrize(
    "col",
    [
        "customer_age",
        "credit_risk_score",
        "proposed_credit_limit",
        "income",
        "name_email_similarity",
        "keep_alive_session",
        "date_of_birth_distinct_emails_4w",
        "bank_branch_count_8w",
        "zip_count_4w",
    ],
)
def test_univariate_auc_matches_real_base(
    frame: pl.DataFrame, stats: dict[str, Any], col: str
) -> None:
    assert auc(frame, col) == pytest.approx(stats["spearman"]["auc"][col], abs=0.02)


@pytest.mark.unit
def test_rank_correlations_inside_the_legit_class(frame: pl.DataFrame) -> None:
    legit = of_class(frame, 0).select(
        pl.corr("credit_risk_score", "proposed_credit_limit", method="spearman").alias("credit"),
        pl.corr("customer_age", "date_of_birth_distinct_emails_4w", method="spearman").alias("age"),
        pl.corr("phone_home_valid", "phone_mobile_valid", method="spearman").alias("phones"),
    )
    assert legit.row(0) == pytest.approx((0.62, -0.44, -0.28), abs=0.03)


@pytest.mark.unit
def test_monthly_drift_is_there(frame: pl.DataFrame) -> None:
    medians = frame.group_by("month").agg(pl.col("velocity_4w").median()).sort("month")
    velocity = medians["velocity_4w"].to_list()
    assert velocity[0] > 5_800
    assert velocity[7] < 3_500
    assert velocity == sorted(velocity, reverse=True)
