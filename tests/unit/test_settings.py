"""Settings are read once, from the environment over .env, and refuse what they do not know."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudscore_adapters.settings import Settings, SettingsError

pytestmark = pytest.mark.unit


def test_defaults_need_no_database() -> None:
    settings = Settings.from_env({}, dotenv=None)
    assert settings.database_url is None
    assert settings.migrations_url is None
    assert settings.raw_dir == Path("data/raw")
    assert settings.synthetic_rows == 1_000_000


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# local\nexport DATABASE_URL='postgresql://a@h/db'\n"
        "FRAUDSCORE_SEED=7\nFRAUDSCORE_POOL_TIMEOUT_S=1.5\n\n"
    )
    settings = Settings.from_env({"FRAUDSCORE_SEED": "9"}, dotenv=dotenv)
    assert settings.database_url == "postgresql://a@h/db"
    assert settings.migrations_url == "postgresql://a@h/db"
    assert settings.seed == 9
    assert settings.pool_timeout_s == 1.5


def test_migrations_may_use_a_direct_endpoint() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://x-pooler/db",
            "MIGRATIONS_DATABASE_URL": "postgresql://x/db",
        },
        dotenv=None,
    )
    assert settings.migrations_url == "postgresql://x/db"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRAUDSCORE_SEEDS": "1"}, "unknown setting FRAUDSCORE_SEEDS"),
        ({"FRAUDSCORE_SYNTHETIC_ROWS": "many"}, "is not a number"),
        ({"FRAUDSCORE_DATABASE_URL": "x"}, "unknown setting"),
    ],
)
def test_mistakes_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env, dotenv=None)


def test_a_malformed_dotenv_line_is_named(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("DATABASE_URL=x\nnonsense\n")
    with pytest.raises(SettingsError, match=r"\.env:2: expected KEY=VALUE"):
        Settings.from_env({}, dotenv=dotenv)


def test_paths_and_numbers_are_typed() -> None:
    settings = Settings.from_env(
        {"FRAUDSCORE_DATA_FILE": "/tmp/x.csv", "FRAUDSCORE_SYNTHETIC_ROWS": "1_000"}, dotenv=None
    )
    assert settings.data_file == Path("/tmp/x.csv")
    assert settings.synthetic_rows == 1_000
