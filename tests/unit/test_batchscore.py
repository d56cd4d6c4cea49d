"""Offline batch scoring: `python -m fraudscore_adapters score INPUT --out OUTPUT`."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from fraudscore import FEATURE_NAMES, Application, is_fraud
from fraudscore_adapters import batchscore, cli
from fraudscore_adapters.xgb import XGBScorer

ROWS = 1_200
"""Rows of the tiny model's data file used here (scoring all 8,000 adds nothing)."""


@pytest.fixture(scope="module")
def raw(tiny_model: tuple[Path, Path]) -> pl.DataFrame:
    """The first rows of the tiny model's data, as BAF writes them (labels, sentinels)."""
    return pl.read_parquet(tiny_model[0]).head(ROWS)


@pytest.fixture(scope="module")
def scorer(tiny_model: tuple[Path, Path]) -> XGBScorer:
    return XGBScorer.load(tiny_model[1])


@pytest.fixture(scope="module")
def expected(raw: pl.DataFrame, scorer: XGBScorer) -> list[float]:
    """What the service's path gives for each row: XGBScorer.score, one row at a time."""
    rows = raw.select(FEATURE_NAMES).to_dicts()
    return [scorer.score([Application.parse(row)]).probabilities[0] for row in rows]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: tuple[Path, Path]) -> Path:
    """Settings for the command: the tiny model, no database, no pin; cwd (no .env) tmp_path."""
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "MIGRATIONS_DATABASE_URL", "FRAUDSCORE_MODEL_SHA256"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FRAUDSCORE_ARTIFACT_DIR", str(tiny_model[1]))
    return tmp_path


def score(*args: str | Path) -> int:
    return cli.main(["score", *map(str, args)])


def read(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)


def only_outputs(directory: Path, *names: str) -> None:
    """``directory`` holds the inputs and exactly ``names`` of the outputs: no partial files."""
    found = {p.name for p in directory.iterdir() if not p.name.startswith("in.")}
    assert found == set(names)


def test_scored_frame_has_the_columns_and_the_service_probabilities(
    raw: pl.DataFrame, scorer: XGBScorer, expected: list[float], tmp_path: Path
) -> None:
    path = tmp_path / "in.parquet"
    raw.write_parquet(path)
    frame, report = batchscore.read_applications(path)
    assert (report.rows_in, report.rows_out, report.problems) == (ROWS, ROWS, ())
    seen: list[tuple[int, int]] = []
    scored = batchscore.score_frame(
        scorer, frame, chunk_rows=500, progress=lambda done, total, _: seen.append((done, total))
    )
    assert scored.schema == pl.Schema(batchscore.OUTPUT_COLUMNS)
    assert seen == [(500, ROWS), (1000, ROWS), (ROWS, ROWS)]
    assert scored["user_id"].to_list() == list(range(ROWS))
    assert scored["probability"].to_list() == pytest.approx(expected, abs=1e-12, rel=0)
    threshold = scorer.threshold
    assert set(scored["threshold"]) == {threshold}
    assert set(scored["model_version"]) == {scorer.model_version}
    flags = [is_fraud(p, threshold) for p in scored["probability"]]
    assert scored["is_fraud"].to_list() == flags
    assert 0 < sum(flags) < ROWS  # the rule is exercised both ways


def test_an_empty_frame_scores_to_an_empty_output(scorer: XGBScorer, raw: pl.DataFrame) -> None:
    frame = raw.head(0).with_row_index("user_id").select("user_id", *FEATURE_NAMES)
    empty = batchscore.score_frame(scorer, frame.cast({"user_id": pl.Int64}))
    assert empty.height == 0
    assert empty.schema == pl.Schema(batchscore.OUTPUT_COLUMNS)


def test_parquet_in_parquet_out_numbers_rows_and_reports_progress(
    env: Path, raw: pl.DataFrame, expected: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    raw.write_parquet(env / "in.parquet")
    assert score(env / "in.parquet", "--out", env / "out.parquet", "--chunk-rows", "400") == 0
    out = read(env / "out.parquet")
    assert out.columns == list(batchscore.OUTPUT_COLUMNS)
    assert out.schema == pl.Schema(batchscore.OUTPUT_COLUMNS)
    assert out["user_id"].to_list() == list(range(ROWS))
    # the command's booster uses every core: still exactly the service's numbers
    assert out["probability"].to_list() == pytest.approx(expected, abs=1e-12, rel=0)
    err = capsys.readouterr().err
    assert "scored: 400/1,200 rows (33%" in err
    assert "scored: 1,200/1,200 rows (100%" in err
    assert "scored 1,200 rows in" in err
    assert "rows/s" in err
    only_outputs(env, "out.parquet")


@pytest.mark.parametrize("labels", [True, False], ids=["with-labels", "features-only"])
def test_kaggle_csv_in_csv_out(
    env: Path, raw: pl.DataFrame, expected: list[float], labels: bool
) -> None:
    source = raw if labels else raw.drop("fraud_bool", "month")
    source.write_csv(env / "in.csv")
    assert score(env / "in.csv", "--out", env / "out.csv") == 0
    out = read(env / "out.csv")
    assert out.columns == list(batchscore.OUTPUT_COLUMNS)
    assert out["user_id"].to_list() == list(range(ROWS))
    assert out["is_fraud"].dtype == pl.Boolean
    assert out["probability"].to_list() == pytest.approx(expected, abs=1e-12, rel=0)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_explain_adds_each_rows_reasons_as_the_service_gives_them(
    env: Path, raw: pl.DataFrame, scorer: XGBScorer, suffix: str
) -> None:
    raw.head(300).write_csv(env / "in.csv")
    assert score(env / "in.csv", "--out", env / f"out{suffix}", "--explain") == 0
    out = read(env / f"out{suffix}")
    assert out.columns == [*batchscore.OUTPUT_COLUMNS, batchscore.REASONS_COLUMN]
    rows = raw.head(300).select(FEATURE_NAMES).to_dicts()
    for row, document in zip(rows, out["reasons"], strict=True):
        (served,) = scorer.score([Application.parse(row)], explain=[True]).reasons or [None]
        assert served is not None
        reasons = json.loads(document)
        assert [r["feature"] for r in reasons] == [r.feature for r in served]
        assert [r["value"] for r in reasons] == [r.value for r in served]
        assert [r["contribution"] for r in reasons] == pytest.approx(
            [r.contribution for r in served], abs=1e-6
        )
    assert any(len(json.loads(d)) >= 2 for d in out["reasons"])


def test_a_user_id_column_is_kept(env: Path, raw: pl.DataFrame, expected: list[float]) -> None:
    ids = [10_000 + 7 * i for i in range(ROWS)]
    raw.with_columns(pl.Series("user_id", ids)).write_csv(env / "in.csv")
    assert score(env / "in.csv", "--out", env / "out.parquet") == 0
    out = read(env / "out.parquet")
    assert out["user_id"].to_list() == ids
    assert out["probability"].to_list() == pytest.approx(expected, abs=1e-12, rel=0)


def test_a_negative_user_id_is_refused(
    env: Path, raw: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    raw.with_columns(pl.int_range(-1, ROWS - 1).alias("user_id")).write_parquet(env / "in.parquet")
    assert score(env / "in.parquet", "--out", env / "out.parquet", "--drop-invalid") == 2
    assert "user_id: is null or negative (1 row; 0-based row index 0)" in capsys.readouterr().err
    only_outputs(env)


def spoil(raw: pl.DataFrame) -> pl.DataFrame:
    """Rows 3 and 10 out of range (income), row 10 also of an unknown category."""
    bad = pl.int_range(pl.len()).is_in([3, 10])
    return raw.with_columns(
        pl.when(bad).then(5.0).otherwise(pl.col("income")).alias("income"),
        pl.when(pl.int_range(pl.len()) == 10)
        .then(pl.lit("XX"))
        .otherwise(pl.col("payment_type"))
        .alias("payment_type"),
    )


def test_invalid_rows_fail_the_run_and_nothing_is_written(
    env: Path, raw: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    spoil(raw).write_csv(env / "in.csv")
    assert score(env / "in.csv", "--out", env / "out.parquet") == 2
    err = capsys.readouterr().err
    assert "does not fit the BAF schema" in err
    assert "income: is out of range [0.1, 0.9] (2 rows; lines 5, 12)" in err
    assert "payment_type: holds categories outside" in err
    assert "(1 row; line 12)" in err
    assert "scored" not in err
    only_outputs(env)


def test_invalid_rows_are_dropped_and_reported_on_request(
    env: Path, raw: pl.DataFrame, expected: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    spoil(raw).write_parquet(env / "in.parquet")
    assert score(env / "in.parquet", "--out", env / "out.csv", "--drop-invalid") == 0
    err = capsys.readouterr().err
    assert "dropped 2 invalid rows: income: is out of range" in err
    assert "1,200 rows read, 1,198 valid" in err
    out = read(env / "out.csv")
    kept = [i for i in range(ROWS) if i not in (3, 10)]
    assert out["user_id"].to_list() == kept  # row numbers of the file, not of the kept rows
    assert out["probability"].to_list() == pytest.approx(
        [expected[i] for i in kept], abs=1e-12, rel=0
    )


@pytest.mark.parametrize("name", ["out.json", "out", "out.parquet.tmp"])
def test_an_output_that_is_neither_parquet_nor_csv_is_refused(
    env: Path, raw: pl.DataFrame, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    raw.write_parquet(env / "in.parquet")
    assert score(env / "in.parquet", "--out", env / name) == 2
    assert "the output must end in .parquet or .csv" in capsys.readouterr().err
    only_outputs(env)


def test_a_missing_input_says_so(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert score(env / "none.csv", "--out", env / "out.csv") == 2
    assert "no dataset at" in capsys.readouterr().err


def test_chunk_rows_must_be_positive(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert score(env / "in.csv", "--out", env / "out.csv", "--chunk-rows", "0") == 2
    assert "--chunk-rows must be at least 1" in capsys.readouterr().err


def test_record_needs_a_database_url(
    env: Path, raw: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    raw.write_parquet(env / "in.parquet")
    assert score(env / "in.parquet", "--out", env / "out.parquet", "--record") == 2
    assert "DATABASE_URL is not set" in capsys.readouterr().err
    only_outputs(env)


@pytest.mark.parametrize(
    ("setting", "value", "record", "says"),
    [
        # recording is production: a pin is required
        ("MIGRATIONS_DATABASE_URL", "postgresql://u@127.0.0.1:1/db", True,
         "FRAUDSCORE_MODEL_SHA256 is not"),
        # a pin that is set is checked, recording or not
        ("FRAUDSCORE_MODEL_SHA256", "0" * 64, False, "is not the pinned model"),
    ],
)  # fmt: skip
def test_the_model_pin_is_enforced(
    env: Path,
    raw: pl.DataFrame,
    *,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    value: str,
    record: bool,
    says: str,
) -> None:
    raw.write_parquet(env / "in.parquet")
    monkeypatch.setenv(setting, value)
    flags = ["--record"] if record else []
    assert score(env / "in.parquet", "--out", env / "out.parquet", *flags) == 2
    assert says in capsys.readouterr().err
    only_outputs(env)


def test_write_output_leaves_nothing_when_the_last_step_fails(
    tmp_path: Path, scorer: XGBScorer, raw: pl.DataFrame
) -> None:
    frame, _ = batchscore.read_applications(_written(raw, tmp_path / "in.parquet"))
    scored = batchscore.score_frame(scorer, frame)

    def fail() -> None:
        raise RuntimeError("recording failed")

    with pytest.raises(RuntimeError, match="recording failed"):
        batchscore.write_output(scored, tmp_path / "out.parquet", before_rename=fail)
    only_outputs(tmp_path)
    batchscore.write_output(scored, tmp_path / "out.parquet")
    assert read(tmp_path / "out.parquet").equals(scored)


def _written(frame: pl.DataFrame, path: Path) -> Path:
    frame.write_parquet(path)
    return path
