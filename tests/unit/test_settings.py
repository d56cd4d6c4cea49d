"""Settings are read once, from the environment over .env, and refuse what they do not know.

Also the database settings they drive: prepared statements and startup options at a pooler
(Neon's ``-pooler`` endpoints), connect and pool timeouts, and secrets kept out of messages.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest

from fraudscore import StoreError, StoreUnavailable
from fraudscore_adapters import bootstrap, postgres
from fraudscore_adapters.postgres import pools
from fraudscore_adapters.postgres.conninfo import TCP_KEEPALIVE
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
        ({"FRAUDSCORE_BATCH_CONCURRENCY": "0"}, "BATCH_CONCURRENCY='0': must be at least 1"),
        ({"FRAUDSCORE_MAX_BATCH": "-5"}, "must be at least 1"),
        ({"FRAUDSCORE_WORKERS": "0"}, "must be at least 1"),
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


def test_database_settings_for_a_database_that_scales_to_zero() -> None:
    settings = Settings.from_env(
        {
            "FRAUDSCORE_PREPARED_STATEMENTS": "off",
            "FRAUDSCORE_CONNECT_TIMEOUT_S": "15",
            "FRAUDSCORE_POOL_MAX_IDLE_S": "120",
        },
        dotenv=None,
    )
    assert settings.prepared_statements == "off"
    assert settings.connect_timeout_s == 15
    assert settings.pool_max_idle_s == 120.0
    defaults = Settings()
    assert (defaults.prepared_statements, defaults.connect_timeout_s) == ("auto", 10)
    assert defaults.connect_timeout_s > defaults.pool_timeout_s


def test_an_unknown_prepared_statements_mode_is_named() -> None:
    with pytest.raises(SettingsError, match=r"FRAUDSCORE_PREPARED_STATEMENTS='yes'.*auto, on, off"):
        Settings.from_env({"FRAUDSCORE_PREPARED_STATEMENTS": "yes"}, dotenv=None)


def test_the_repr_of_settings_hides_the_database_urls() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u:hunter2@h/db",
            "MIGRATIONS_DATABASE_URL": "postgresql://u:hunter3@h/db",
        },
        dotenv=None,
    )
    assert "hunter" not in repr(settings)
    assert settings.database_url == "postgresql://u:hunter2@h/db"


NEON_POOLED = (
    "postgresql://u:pw@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/db?sslmode=require"
)
NEON_DIRECT = "postgresql://u:pw@ep-cool-darkness-123456.us-east-2.aws.neon.tech/db?sslmode=require"


@pytest.mark.parametrize(
    ("mode", "url", "expected"),
    [
        ("auto", NEON_POOLED, False),
        ("auto", NEON_DIRECT, True),
        ("auto", "postgresql://postgres@127.0.0.1:5432/test", True),
        ("auto", "host=ep-x-pooler.eu-central-1.aws.neon.tech dbname=db sslmode=require", False),
        ("auto", "postgresql://u@db-a,ep-x-pooler.neon.tech/db", False),
        ("on", NEON_POOLED, True),
        ("off", NEON_DIRECT, False),
    ],
)
def test_prepared_statements_are_off_at_a_pooler_unless_forced(
    mode: str, url: str, expected: bool
) -> None:
    assert postgres.use_prepared_statements(mode, url) is expected


def test_an_unknown_prepare_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="use one of"):
        postgres.use_prepared_statements("sometimes", NEON_DIRECT)


def test_a_pooler_gets_no_startup_options() -> None:
    assert postgres.startup_statement_timeout_ms(3_000, NEON_POOLED) == 0
    assert postgres.startup_statement_timeout_ms(3_000, NEON_DIRECT) == 3_000
    pooled = postgres.connection_kwargs(statement_timeout_ms=0, connect_timeout_s=10, prepare=False)
    assert pooled == {
        "autocommit": True,
        "connect_timeout": 10,
        "prepare_threshold": None,
        **TCP_KEEPALIVE,
    }
    assert TCP_KEEPALIVE["keepalives"] == 1
    assert 0 < TCP_KEEPALIVE["tcp_user_timeout"] <= 10_000
    direct = postgres.connection_kwargs(statement_timeout_ms=3_000, connect_timeout_s=10)
    assert direct["options"] == "-c statement_timeout=3000"
    assert "prepare_threshold" not in direct


def test_pools_wait_briefly_per_request_but_allow_a_cold_start() -> None:
    options = pools._pool_options(2, 8, 3.0, 3_000, connect_timeout_s=10, max_idle_s=300.0)
    assert (options["timeout"], options["kwargs"]["connect_timeout"]) == (3.0, 10)
    assert options["max_idle"] == 300.0
    assert pools._open_wait_s(3.0, 10) == 10
    legacy = pools._pool_options(1, 1, 2.5, 500)
    assert legacy["kwargs"]["connect_timeout"] == 2
    assert pools._open_wait_s(1.0, None) == 1.0


def test_the_composition_root_configures_a_neon_pooled_endpoint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(database_url=NEON_POOLED.replace(":pw@", ":hunter2@"))
    assert settings.database_url is not None
    with caplog.at_level(logging.INFO, logger="fraudscore"):
        options = bootstrap._pool_settings(settings, settings.database_url)
    assert options["prepare"] is False
    assert options["statement_timeout_ms"] == 0
    assert (options["connect_timeout_s"], options["timeout_s"]) == (10, 3.0)
    assert "pooled endpoint" in caplog.text
    assert "hunter2" not in caplog.text


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://fraud:hunter2@ep-x-pooler.neon.tech/db?sslmode=require",
        "postgres://fraud:hunter2@h:5432/db",
        "host=h user=fraud password=hunter2 dbname=db",
        "host=h password = 'hunter2 with spaces' dbname=db",
        "postgresql://fraud@h/db?password=hunter2&sslmode=require",
    ],
)
def test_redact_hides_passwords(text: str) -> None:
    redacted = postgres.redact(text)
    assert "hunter2" not in redacted
    assert "***" in redacted
    assert "h" in redacted


def test_redact_keeps_the_rest_of_the_url() -> None:
    assert postgres.redact("postgresql://u:pw@h:5432/db?sslmode=require") == (
        "postgresql://u:***@h:5432/db?sslmode=require"
    )
    assert postgres.redact("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://fraud:hunt%zzer2@h/db",
        "host=h password=hunt er2 dbname=db",
    ],
)
def test_a_malformed_connection_string_fails_without_its_password(url: str) -> None:
    with pytest.raises(StoreUnavailable) as caught, postgres.store_errors("connecting"):
        psycopg.connect(url)
    assert "malformed connection string" in str(caught.value)
    assert "hunt" not in str(caught.value)
    assert "er2" not in str(caught.value)
    with pytest.raises(StoreUnavailable) as opening:
        postgres.open_pool(url, min_size=1, max_size=1, timeout_s=1.0, statement_timeout_ms=500)
    assert "hunt" not in str(opening.value)


def test_other_programming_errors_are_store_errors_naming_the_fault() -> None:
    with (
        pytest.raises(StoreError, match="x: the query has 1 placeholders") as caught,
        postgres.store_errors("x"),
    ):
        raise psycopg.ProgrammingError("the query has 1 placeholders but 2 parameters")
    assert isinstance(caught.value.__cause__, psycopg.ProgrammingError)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FRAUDSCORE_SPLIT", "monthly"),
        ("FRAUDSCORE_SERVER", "gunicorn"),
        ("FRAUDSCORE_MAX_QUEUE", "0"),
        ("FRAUDSCORE_REQUEST_TIMEOUT_S", "0"),
        ("FRAUDSCORE_REQUEST_TIMEOUT_S", "soon"),
    ],
)
def test_settings_without_a_sane_meaning_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value}, dotenv=None)


def test_fault_bounds_have_their_documented_defaults() -> None:
    defaults = Settings.from_env({}, dotenv=None)
    assert (defaults.request_timeout_s, defaults.max_queue) == (3.0, 512)
    parsed = Settings.from_env(
        {"FRAUDSCORE_REQUEST_TIMEOUT_S": "1.5", "FRAUDSCORE_MAX_QUEUE": "64"}, dotenv=None
    )
    assert (parsed.request_timeout_s, parsed.max_queue) == (1.5, 64)
