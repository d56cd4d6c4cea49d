"""`make migrate && make load-features` end to end, through the command line's main()."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from fraudscore_adapters import cli, postgres
from tests.conftest import MIGRATIONS
from tests.support import RAW_APPLICATION, latest, raw

pytestmark = pytest.mark.integration


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, empty_database_url: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", empty_database_url)
    monkeypatch.setenv("FRAUDSCORE_MIGRATIONS_DIR", str(MIGRATIONS))
    monkeypatch.setenv("FRAUDSCORE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FRAUDSCORE_SYNTHETIC_ROWS", "3000")
    return empty_database_url


def counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT user_id) FROM feature_store").fetchone()
    assert row is not None
    return row[0], row[1]


def test_migrate_then_load_twice_appends_a_version(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrate"]) == 0
    assert cli.main(["migrate"]) == 0
    assert "none pending" in capsys.readouterr().err
    assert cli.main(["load-features"]) == 0
    err = capsys.readouterr().err
    assert "generating 3,000 synthetic rows" in err
    assert "loaded: 3,000/3,000 rows (100%" in err
    assert counts(env) == (3000, 3000)
    assert cli.main(["load-features"]) == 0
    assert counts(env) == (6000, 3000)
    with postgres.open_pool(
        env, min_size=1, max_size=1, timeout_s=2, statement_timeout_ms=2000
    ) as pool:
        assert latest(postgres.PostgresFeatureStore(pool), 2999) is not None


def test_load_features_without_a_database_url_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("FRAUDSCORE_DATA_FILE", str(tmp_path / "none.csv"))
    assert cli.main(["migrate"]) == 2
    assert "DATABASE_URL is not set" in capsys.readouterr().err


def test_migrating_through_a_pooler_warns(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@ep-x-pooler.localhost:1/db")
    monkeypatch.setenv("FRAUDSCORE_CONNECT_TIMEOUT_S", "1")
    assert cli.main(["migrate"]) == 2  # nothing listens there
    err = capsys.readouterr().err
    assert "set MIGRATIONS_DATABASE_URL to the direct endpoint" in err
    assert "u:pw@" not in err


def test_load_features_drop_invalid_drops_non_numbers_and_says_where(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "Base.csv"
    header: list[object] = ["fraud_bool", *RAW_APPLICATION, "month"]
    rows = [[0, *raw(income="abc" if i in (1, 4) else 0.5).values(), 1] for i in range(6)]
    data.write_text("".join(",".join(str(cell) for cell in row) + "\n" for row in [header, *rows]))
    monkeypatch.setenv("FRAUDSCORE_DATA_FILE", str(data))
    assert cli.main(["migrate"]) == 0
    assert cli.main(["load-features"]) == 2
    err = capsys.readouterr().err
    assert "income: holds values that are not numbers, e.g. 'abc' (2 rows; lines 3, 6)" in err
    assert cli.main(["load-features", "--drop-invalid"]) == 0
    err = capsys.readouterr().err
    assert (
        "dropped 2 invalid rows: income: holds values that are not numbers, e.g. 'abc'"
        " (2 rows; lines 3, 6)"
    ) in err
    assert counts(env) == (4, 4)
