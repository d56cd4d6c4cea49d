"""`score --record`: the scored rows COPY'd into a fresh migrated database."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import polars as pl
import psycopg
import pytest

from fraudscore_adapters import cli
from fraudscore_adapters.xgb import manifest_sha256

pytestmark = pytest.mark.integration

ROWS = 2_500


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: tuple[Path, Path], db: str
) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MIGRATIONS_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("FRAUDSCORE_ARTIFACT_DIR", str(tiny_model[1]))
    monkeypatch.setenv("FRAUDSCORE_MODEL_SHA256", manifest_sha256(tiny_model[1]))
    pl.read_parquet(tiny_model[0]).head(ROWS).write_csv(tmp_path / "in.csv")
    return db


def stored(url: str) -> pl.DataFrame:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, user_id, probability, is_fraud, threshold, model_version, route,"
            " created_at, caller FROM predictions ORDER BY user_id"
        ).fetchall()
    names = ["id", "user_id", "probability", "is_fraud", "threshold", "model_version", "route"]
    return pl.DataFrame([r[:7] for r in rows], schema=names, orient="row").with_columns(
        pl.Series("created_at", [r[7] for r in rows], dtype=pl.Object),
        pl.Series("caller", [r[8] for r in rows], dtype=pl.String),
    )


def test_record_copies_every_scored_row(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.parquet"
    assert cli.main(["score", "in.csv", "--out", str(out), "--record", "--chunk-rows", "1000"]) == 0
    err = capsys.readouterr().err
    assert f"recorded: {ROWS:,}/{ROWS:,} rows (100%" in err
    assert f"recorded {ROWS:,} predictions (route 'batch')" in err
    scored = pl.read_parquet(out)
    rows = stored(env)
    assert rows.height == scored.height == ROWS
    assert set(rows["route"]) == {"batch"}
    assert set(rows["caller"].to_list()) == {None}
    assert len(set(rows["created_at"].to_list())) == 1  # one instant for the run
    ids = [uuid.UUID(str(i)) for i in rows["id"]]
    assert len(set(ids)) == ROWS
    assert {i.version for i in ids} == {4}
    columns = ["user_id", "probability", "is_fraud", "threshold", "model_version"]
    assert rows.select(columns).equals(scored.select(columns))  # exact floats, via CSV COPY


def test_record_with_explain_stores_each_rows_reasons(env: str, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    assert cli.main(["score", "in.csv", "--out", str(out), "--record", "--explain"]) == 0
    written = pl.read_csv(out)
    with psycopg.connect(env) as conn:
        rows = conn.execute("SELECT user_id, reasons FROM predictions ORDER BY user_id").fetchall()
    assert len(rows) == written.height == ROWS
    for (user_id, reasons), (want_id, document) in zip(
        rows, written.select("user_id", "reasons").iter_rows(), strict=True
    ):
        assert user_id == want_id
        assert reasons == json.loads(document)
    assert all(isinstance(r, list) for _, r in rows)


def test_a_failed_record_writes_no_output(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(env, autocommit=True) as conn:
        conn.execute("ALTER TABLE predictions ADD CONSTRAINT no_batch CHECK (route <> 'batch')")
    try:
        out = tmp_path / "out.csv"
        assert cli.main(["score", "in.csv", "--out", str(out), "--record"]) == 2
        assert "recording predictions" in capsys.readouterr().err
        assert not out.exists()
        assert [p.name for p in tmp_path.iterdir()] == ["in.csv"]
        assert stored(env).height == 0  # one transaction: nothing half-recorded
    finally:
        with psycopg.connect(env, autocommit=True) as conn:
            conn.execute("ALTER TABLE predictions DROP CONSTRAINT no_batch")
