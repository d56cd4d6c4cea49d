"""Errors of the BAF loader name the column, the rule, the row count and the first lines, once.

CSV problems name file lines as an editor shows them (the header is line 1, so the first data
row is line 2); Parquet problems name 0-based row indices.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl
import pytest

from fraudscore_adapters import cli
from fraudscore_adapters.baf import ColumnProblem, DatasetError, load_features
from fraudscore_adapters.baf.synthetic import generate
from tests.support import RAW_APPLICATION, raw

pytestmark = pytest.mark.unit

HEADER = ["fraud_bool", *RAW_APPLICATION, "month"]
"""The Kaggle layout: label, the 30 features, month."""
HOUSING = ["BA", "BB", "BC", "BD", "BE", "BF", "BG"]
"""housing_status's categories, as an error quotes them."""


def kaggle_row(**changes: object) -> dict[str, object]:
    """One data row of a real-layout BAF CSV."""
    return {"fraud_bool": 0, **raw(**changes), "month": 1}


def write_csv(path: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    """Header then one line per row, exactly as given (None is an empty cell)."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=HEADER, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def bad_csv(path: Path) -> Path:
    """``abc`` in income on lines 3 and 6, ages out of range on lines 4 and 5 (of 7 lines)."""
    rows = [kaggle_row() for _ in range(6)]
    rows[1]["income"] = rows[4]["income"] = "abc"
    rows[2]["customer_age"], rows[3]["customer_age"] = 200, 5
    return write_csv(path, rows)


def load_error(path: Path) -> DatasetError:
    with pytest.raises(DatasetError) as caught:
        load_features(path)
    return caught.value


def test_csv_errors_name_column_rule_rows_and_lines(tmp_path: Path) -> None:
    path = bad_csv(tmp_path / "Base.csv")
    error = load_error(path)
    assert error.problems == (
        ColumnProblem("income", "holds values that are not numbers, e.g. 'abc'", 2, (3, 6), "line"),
        ColumnProblem("customer_age", "is out of range [10, 90]", 2, (4, 5), "line"),
    )
    assert str(error) == (
        f"{path} does not fit the BAF schema:\n"
        "  income: holds values that are not numbers, e.g. 'abc' (2 rows; lines 3, 6)\n"
        "  customer_age: is out of range [10, 90] (2 rows; lines 4, 5)"
    )
    lines = path.read_text().splitlines()
    assert lines[3 - 1].split(",")[1] == "abc"  # line 3 as an editor numbers it
    assert lines[4 - 1].split(",")[HEADER.index("customer_age")] == "200"


def test_every_value_rule_carries_its_first_lines(tmp_path: Path) -> None:
    rows = [kaggle_row() for _ in range(8)]
    rows[0]["customer_age"] = None  # empty cell, column without a missing-value marker
    rows[1]["bank_months_count"] = None  # empty cell where -1 marks missing: accepted
    rows[2]["velocity_6h"] = "NaN"
    rows[3]["zip_count_4w"] = 10.5
    rows[4]["housing_status"] = "ZZ"
    rows[5]["zip_count_4w"] = " 7"  # a number and nothing else, or an empty cell
    found = {
        (p.column, p.problem): p.lines
        for p in load_error(write_csv(tmp_path / "x.csv", rows)).problems
    }
    assert found == {
        ("customer_age", "is null (the column has no missing-value marker)"): (2,),
        ("velocity_6h", "is NaN or infinite"): (4,),
        ("zip_count_4w", "is not a whole number"): (5,),
        ("housing_status", f"holds categories outside {HOUSING}"): (6,),
        ("zip_count_4w", "holds values that are not numbers, e.g. ' 7'"): (7,),
    }


def test_only_the_first_five_lines_are_named(tmp_path: Path) -> None:
    rows = [kaggle_row(income="n/a" if i % 2 else 0.5) for i in range(20)]
    (problem,) = load_error(write_csv(tmp_path / "x.csv", rows)).problems
    assert str(problem) == (
        "income: holds values that are not numbers, e.g. 'n/a' (10 rows; lines 3, 5, 7, 9, 11, ...)"
    )


def test_a_huge_cell_is_cut_short(tmp_path: Path) -> None:
    huge = "x" * 100_000
    error = load_error(write_csv(tmp_path / "x.csv", [kaggle_row(), kaggle_row(income=huge)]))
    (problem,) = error.problems
    assert problem.problem == (
        "holds values that are not numbers, e.g. 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... "
        "(100,000 characters)"
    )
    assert len(str(error)) < 200 + len(str(tmp_path))


def test_drop_invalid_drops_non_numbers_and_says_where(tmp_path: Path) -> None:
    frame, report = load_features(bad_csv(tmp_path / "Base.csv"), drop_invalid=True)
    assert (report.rows_in, report.rows_out, report.dropped) == (6, 2, 4)
    assert frame["user_id"].to_list() == [0, 5]
    assert [str(p) for p in report.problems] == [
        "income: holds values that are not numbers, e.g. 'abc' (2 rows; lines 3, 6)",
        "customer_age: is out of range [10, 90] (2 rows; lines 4, 5)",
    ]
    assert frame.schema["income"] == pl.Float64


def test_parquet_problems_name_zero_based_row_indices(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    rows = [kaggle_row(), kaggle_row(customer_age=200), kaggle_row(), kaggle_row(customer_age=5)]
    rows[3]["income"] = 5.0
    pl.DataFrame(rows).write_parquet(path)
    error = load_error(path)
    assert error.problems[0] == ColumnProblem(
        "income", "is out of range [0.1, 0.9]", 1, (3,), "row index"
    )
    assert [str(p) for p in error.problems] == [
        "income: is out of range [0.1, 0.9] (1 row; 0-based row index 3)",
        "customer_age: is out of range [10, 90] (2 rows; 0-based row indices 1, 3)",
    ]


def test_structural_problems_keep_their_form(tmp_path: Path) -> None:
    rows = [{k: v for k, v in kaggle_row().items() if k != "source"}]
    path = tmp_path / "x.csv"
    pl.DataFrame(rows).write_csv(path)
    (problem,) = load_error(path).problems
    assert str(problem) == "source: is missing (1 row)"


def test_an_unreadable_file_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_text("not parquet")
    error = load_error(tmp_path / "bad.parquet")
    header, line = str(error).split("\n")
    assert header.endswith("bad.parquet does not fit the BAF schema:")
    assert line.startswith("  (file): cannot be read: ")
    assert not line.endswith("rows)")
    path = write_csv(tmp_path / "ragged.csv", [kaggle_row()])
    path.write_text(path.read_text() + "1,2,3," + "4," * 40 + "\n")
    (ragged,) = load_error(path).problems
    assert ragged.problem == "cannot be read: found more fields than defined in 'Schema'"


def test_a_dataset_error_without_problems_is_its_message_alone() -> None:
    assert str(DatasetError([], "training on x failed")) == "training on x failed"


@pytest.fixture
def train_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Settings for ``cli.main(["train"])`` pointing into tmp_path; returns the data path."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "Base.csv"
    monkeypatch.setenv("FRAUDSCORE_DATA_FILE", str(data))
    monkeypatch.setenv("FRAUDSCORE_ARTIFACT_DIR", str(tmp_path / "artifacts"))
    return data


def test_train_cli_prints_one_error_naming_column_value_and_lines(
    train_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_csv(train_env)
    assert cli.main(["train"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"loading {train_env}\n"
        f"error: {train_env} does not fit the BAF schema:\n"
        "  income: holds values that are not numbers, e.g. 'abc' (2 rows; lines 3, 6)\n"
        "  customer_age: is out of range [10, 90] (2 rows; lines 4, 5)\n"
    )
    assert [line for line in captured.err.splitlines() if line.startswith("error:")] == [
        f"error: {train_env} does not fit the BAF schema:"
    ]
    assert "" not in captured.err.splitlines()


def test_train_cli_reports_data_that_cannot_train_once(
    train_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(train_env, [kaggle_row() for _ in range(10)])  # no fraud at all
    assert cli.main(["train"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: cannot train on {train_env}: ")


def test_train_cli_trains_and_prints_summary_wall_time_and_rss(
    train_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate(3_000, seed=5).select(HEADER).write_csv(train_env)
    assert cli.main(["train"]) == 0
    err = capsys.readouterr().err
    assert "error:" not in err
    assert "wall time" in err
    assert "peak RSS" in err
    assert (train_env.parent / "artifacts" / "current" / "manifest.json").is_file()
