"""Vectorised validation of whole BAF frames: errors name the column and the rows affected."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from fraudscore import FEATURE_NAMES, Application
from fraudscore_adapters.baf import DatasetError, clean_frame, load_features, read_table
from tests.support import RAW_APPLICATION, raw

pytestmark = pytest.mark.unit


def frame_of(*rows: dict[str, object]) -> pl.DataFrame:
    return pl.DataFrame(list(rows))


def problems(frame: pl.DataFrame) -> dict[str, tuple[str, int]]:
    with pytest.raises(DatasetError) as caught:
        clean_frame(frame)
    return {p.column: (p.problem, p.rows) for p in caught.value.problems}


def test_clean_frame_matches_the_row_validator() -> None:
    rows = [raw(), raw(customer_age=20, housing_status="BA", bank_months_count=-1)]
    cleaned, report = clean_frame(frame_of(*rows))
    assert report.rows_in == report.rows_out == 2
    assert report.dropped == 0
    assert cleaned.columns == list(FEATURE_NAMES)
    for got, row in zip(cleaned.iter_rows(named=True), rows, strict=True):
        assert Application.parse(got) == Application.parse(row)
    assert cleaned["bank_months_count"].null_count() == 1
    assert cleaned["intended_balcon_amount"].null_count() == 2


def test_out_of_range_and_unknown_categories_count_rows() -> None:
    bad = frame_of(raw(customer_age=200), raw(customer_age=300), raw(housing_status="ZZ"), raw())
    found = problems(bad)
    assert found["customer_age"] == ("is out of range [10, 90]", 2)
    assert found["housing_status"][1] == 1
    assert "categories outside" in found["housing_status"][0]


def test_drop_invalid_drops_and_says_how_many_and_why() -> None:
    bad = frame_of(raw(customer_age=200), raw(income=0.05), raw())
    cleaned, report = clean_frame(bad, drop_invalid=True)
    assert cleaned.height == 1
    assert report.dropped == 2
    assert {p.column for p in report.problems} == {"customer_age", "income"}


def test_missing_extra_and_mistyped_columns_are_structural_errors() -> None:
    frame = (
        frame_of(raw())
        .drop("source")
        .with_columns(pl.lit("x").alias("zip_count_4w"), pl.lit(1).alias("colour"))
    )
    found = problems(frame)
    assert found["source"] == ("is missing", 1)
    assert found["colour"] == ("is not a column of the BAF schema", 1)
    assert "expected numbers" in found["zip_count_4w"][0]
    with pytest.raises(DatasetError):
        clean_frame(frame, drop_invalid=True)


def test_nulls_only_where_a_sentinel_exists_and_non_integers_rejected() -> None:
    frame = frame_of(raw(customer_age=None), raw(zip_count_4w=10.5), raw(bank_months_count=None))
    found = problems(frame.with_columns(pl.col("zip_count_4w").cast(pl.Float64)))
    assert found["customer_age"] == ("is null (the column has no missing-value marker)", 1)
    assert found["zip_count_4w"] == ("is not a whole number", 1)
    assert "bank_months_count" not in found


def test_csv_in_kaggle_layout_loads_with_row_numbers_as_ids(tmp_path: Path) -> None:
    path = tmp_path / "Base.csv"
    row = {"fraud_bool": 1, **RAW_APPLICATION, "month": 3}
    frame_of(row, {**row, "fraud_bool": 0}).write_csv(path)
    cleaned, _ = load_features(path)
    assert cleaned.columns[:3] == ["user_id", "fraud_bool", "month"]
    assert cleaned["user_id"].to_list() == [0, 1]
    assert Application.parse(cleaned.drop("user_id", "fraud_bool", "month").row(1, named=True)) == (
        Application.parse(RAW_APPLICATION)
    )


def test_unreadable_and_unknown_files_are_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_table(tmp_path / "none.csv")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"neither \.csv nor \.parquet"):
        read_table(tmp_path / "x.txt")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match="cannot be read"):
        read_table(tmp_path / "bad.parquet")
