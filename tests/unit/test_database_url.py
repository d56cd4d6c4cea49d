"""No secret from DATABASE_URL reaches a log line or an error message, however malformed.

libpq ends a URL's user-info at its first ``@`` or ``/``: with a raw ``@`` in the password
(``postgresql://app:p@ss@127.0.0.1/db``) the tail became the host name, and psycopg_pool
logged ``error connecting in 'fraudscore': failed to resolve host 'ss@127.0.0.1'`` from its
background thread on every retry. The settings now refuse such URLs, naming the rule, never
the URL; the pools refuse them too; a well-formed URL that fails to connect logs no password.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from pathlib import Path

import pytest

from fraudscore import StoreUnavailable
from fraudscore_adapters import cli, postgres
from fraudscore_adapters.postgres.conninfo import parse_conninfo
from fraudscore_adapters.settings import Settings, SettingsError

pytestmark = pytest.mark.unit

SECRET = "Zq7@Xv9/Kw2?Jm4#Tp8"
"""A password of every reserved character, each between distinctive pieces."""
PIECES = ("Zq7", "Xv9", "Kw2", "Jm4", "Tp8")
HOST = "127.0.0.1:5432"

MALFORMED = [
    f"postgresql://app:{SECRET}@{HOST}/db",
    "postgresql://app:Zq7Xv9@Kw2Jm4Tp8@127.0.0.1:5432/db",
    "postgresql://app:Zq7Xv9@Kw2Jm4@Tp8@127.0.0.1:5432/db",
    "postgresql://app:Zq7Xv9/Kw2Jm4Tp8@127.0.0.1:5432/db",
    "postgresql://app:Zq7Xv9?Kw2Jm4Tp8@127.0.0.1:5432/db",
    "postgresql://app:Zq7Xv9#Kw2Jm4Tp8@127.0.0.1:5432/db",
    "postgres://app:Zq7Xv9@Kw2Jm4Tp8@127.0.0.1/db?sslmode=require",
    "postgresql://Zq7Xv9/Kw2Jm4Tp8@127.0.0.1/db",
    "postgresql://127.0.0.1/db?password=Zq7Xv9@Kw2Jm4Tp8",
    "postgresql://app:Zq7Xv9%zzKw2Jm4Tp8@127.0.0.1/db",
    "postgresql://app:Zq7Xv9Kw2Jm4Tp8%4@127.0.0.1/db",
    "postgresql://app:Zq7Xv9Kw2Jm4Tp8%@127.0.0.1/db",
    "postgresql://app:Zq7Xv9%00Kw2Jm4Tp8@127.0.0.1/db",
    "postgresql://app:Zq7Xv9 Kw2Jm4Tp8@127.0.0.1/db",
    "postgresql://app:Zq7Xv9\nKw2Jm4Tp8@127.0.0.1/db",
    "postgresql://app@127.0.0.1/db?passwrd=Zq7Xv9Kw2Jm4Tp8",
    "postgresql://app@127.0.0.1/db?Zq7Xv9Kw2Jm4Tp8",
    "postgresql://app@127.0.0.1/db?Zq7Xv9Kw2Jm4Tp8=x",
    "host=127.0.0.1 user=app password=Zq7Xv9Kw2Jm4Tp8 dbname=db",
    "host=127.0.0.1 password='Zq7Xv9 Kw2Jm4Tp8'",
    "app:Zq7Xv9Kw2Jm4Tp8@127.0.0.1:5432/db",
    "postgresql:app:Zq7Xv9Kw2Jm4Tp8@127.0.0.1/db",
    "POSTGRESQL://app:Zq7Xv9Kw2Jm4Tp8@127.0.0.1/db",
    "postgresql+psycopg://app:Zq7Xv9Kw2Jm4Tp8@127.0.0.1/db",
    "mysql://app:Zq7Xv9@Kw2Jm4Tp8@127.0.0.1/db",
    "postgresql://app:Zq7Xv9Kw2Jm4Tp8@/db",
    "postgresql://app:Zq7Xv9Kw2Jm4Tp8@:5432/db",
    "postgresql://app:Zq7Xv9Kw2Jm4Tp8@h1,,h2/db",
    "postgresql://app:Zq7Xv9Kw2Jm4Tp8@127.0.0.1:54x2/db",
    "postgresql://app:Zq7Xv9Kw2Jm4Tp8@127.0.0.1:99999/db",
    "postgresql://app:Zq7Xv9Kw2Jm4Tp8@[::1:5432/db",
    "postgresql://app:Zq7Xv9Kw2Jm4Tp8@::1/db",
    "postgresql://app:Zq7Xv9Kw2Jm4Tp8@ho$t/db",
    "postgresql://app:Zq7Xv9[Kw2]Jm4Tp8@127.0.0.1/db",
]

VALID = [
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://app:Zq7Xv9Kw2@127.0.0.1:5432/db",
    "postgres://postgres:postgres@db:5432/fraudscore",
    "postgresql://app:pw@localhost/db",
    "postgresql://a@h/db",
    "postgresql://x-pooler/db",
    "postgresql://app:Zq7%40Xv9%2FKw2%3FJm4%23Tp8%25@127.0.0.1:5432/db",
    "postgresql://app:pa:ss@h/db",
    "postgresql://app:pw@[::1]:5432/db",
    "postgresql://app@[::1]/db",
    "postgresql://app@[fe80::1%25eth0]:5432/db",
    "postgresql://u:pw@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb?sslmode=require",
    "postgresql://u:pw@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb"
    "?sslmode=require&channel_binding=require",
    "postgresql://u:pw@ep-x.eu-central-1.aws.neon.tech/db?sslmode=require"
    "&options=endpoint%3Dep-x%20-c%20statement_timeout%3D5000",
    "postgresql://u:pw@host1:5432,host2:5432/db?target_session_attrs=read-write",
    "postgresql://u@db-a,ep-x-pooler.neon.tech/db",
    "postgresql://u@h/db?ssl=true",
    "postgresql://u@h/db?application_name=fraudscore&connect_timeout=10",
    "postgresql://%2Fvar%2Frun%2Fpostgresql/db",
    "postgresql:///db?host=/var/run/postgresql",
]


def fragments(secret: str, size: int = 4) -> set[str]:
    """Every ``size``-character piece of ``secret``: none may be shown."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def password_of(url: str) -> str:
    """The secret part of a test URL: its distinctive run, from the first to the last piece."""
    start = min(url.index(p) for p in PIECES if p in url)
    end = max(url.index(p) + len(p) for p in PIECES if p in url)
    return url[start:end]


def assert_hidden(text: str, url: str) -> None:
    shown = {piece for piece in fragments(password_of(url)) if piece in text}
    assert not shown, f"password fragments {shown} in {text!r}"


@pytest.mark.parametrize("url", MALFORMED)
def test_a_malformed_url_is_refused_without_a_piece_of_it(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DATABASE_URL": url}, dotenv=None)
    message = str(caught.value)
    assert message.startswith("DATABASE_URL ")
    assert_hidden(message, url)
    assert "\n" not in message


@pytest.mark.parametrize("url", MALFORMED[:6])
def test_the_migrations_url_is_checked_alike(url: str) -> None:
    env = {"DATABASE_URL": VALID[0], "MIGRATIONS_DATABASE_URL": url}
    with pytest.raises(SettingsError, match=r"^MIGRATIONS_DATABASE_URL ") as caught:
        Settings.from_env(env, dotenv=None)
    assert_hidden(str(caught.value), url)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        (MALFORMED[0], r"percent-encode @ / \? # in the user name and password, e.g. @ as %40"),
        (MALFORMED[3], re.escape("raw @, /, ? or # in its user name or password")),
        (MALFORMED[9], "% not followed by two hex digits"),
        ("postgresql://app@h/db?sslmod=require", r"libpq does not know \(did you mean sslmode\?\)"),
        ("host=h dbname=db", "keyword/value string"),
        ("postgresql://app@h:0/db", "port that is not a number"),
        ("postgresql://app@/db", "names no host"),
    ],
)
def test_the_message_names_the_rule(url: str, rule: str) -> None:
    with pytest.raises(SettingsError, match=rule):
        Settings.from_env({"DATABASE_URL": url}, dotenv=None)


@pytest.mark.parametrize("url", VALID)
def test_the_forms_in_use_are_accepted_unchanged(url: str) -> None:
    settings = Settings.from_env({"DATABASE_URL": url, "MIGRATIONS_DATABASE_URL": url}, dotenv=None)
    assert (settings.database_url, settings.migrations_url) == (url, url)


@pytest.mark.parametrize("url", VALID)
def test_the_accepted_forms_are_read_by_libpq(url: str) -> None:
    params = parse_conninfo(url, "reading")
    assert params.get("host") or params.get("dbname")


RAW_AT = "postgresql://app:Zq7Xv9@Kw2Jm4Tp8@127.0.0.1:5432/db"
"""The bug report's URL: libpq reads host ``Kw2Jm4Tp8@127.0.0.1`` and psycopg printed it."""


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A working directory with no ``.env``, no dataset and short connection timeouts."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MIGRATIONS_DATABASE_URL", raising=False)
    monkeypatch.setenv("FRAUDSCORE_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("FRAUDSCORE_DATA_FILE", str(tmp_path / "none.csv"))
    return monkeypatch


@pytest.mark.parametrize("command", ["migrate", "load-features"])
@pytest.mark.parametrize("url", [RAW_AT, MALFORMED[3], MALFORMED[0]])
def test_the_command_line_fails_early_and_shows_no_piece_of_the_password(
    command: str,
    url: str,
    cli_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_env.setenv("DATABASE_URL", url)
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    assert cli.main([command]) == 2
    time.sleep(0.2)  # room for any background thread to log
    out, err = capsys.readouterr()
    for text in (out, err, caplog.text, *(r.getMessage() for r in caplog.records)):
        assert_hidden(text, url)
    assert "error: DATABASE_URL has a raw @" in err
    assert "@ as %40" in err
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("url", MALFORMED[:9])
def test_a_pool_refuses_a_url_libpq_would_misread_before_connecting(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreUnavailable, match="malformed connection string") as caught:
        postgres.open_pool(url, min_size=1, max_size=1, timeout_s=0.5, statement_timeout_ms=500)
    with pytest.raises(StoreUnavailable) as async_caught:
        asyncio.run(
            postgres.open_async_pool(
                url, min_size=1, max_size=1, timeout_s=0.5, statement_timeout_ms=500
            )
        )
    assert not [r for r in caplog.records if r.name.startswith("psycopg")]
    for text in (str(caught.value), str(async_caught.value), caplog.text):
        assert_hidden(text, url)


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_well_formed_url_that_cannot_connect_logs_no_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "Zq7Xv9%40Kw2Jm4Tp8"
    url = f"postgresql://app:{password}@127.0.0.1:{closed_port()}/db?sslmode=disable"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreUnavailable) as caught:  # retried in the background for ~1 s
        postgres.open_pool(
            url,
            min_size=1,
            max_size=1,
            timeout_s=0.5,
            statement_timeout_ms=500,
            connect_timeout_s=1,
        )
    warnings = [r for r in caplog.records if r.name == "psycopg.pool" and r.levelname == "WARNING"]
    assert warnings, "the pool's background warnings were not exercised"
    assert "Connection refused" in caplog.text
    for text in (str(caught.value), caplog.text, *(r.getMessage() for r in caplog.records)):
        assert_hidden(text, url)
        assert "Zq7Xv9@Kw2Jm4Tp8" not in text


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://app:{SECRET}@{HOST}/db",
        "postgresql://app:Zq7Xv9@Kw2Jm4Tp8@127.0.0.1/db",
        "postgresql://app:Zq7Xv9/Kw2Jm4Tp8@127.0.0.1/db",
        "postgresql://app:Zq7Xv9 Kw2Jm4Tp8@127.0.0.1/db",
        "mysql://app:Zq7Xv9@Kw2Jm4Tp8@127.0.0.1/db",
        "postgresql://Zq7Xv9/Kw2Jm4Tp8@127.0.0.1/db",
        "could not use postgresql://app:Zq7Xv9@Kw2Jm4Tp8@h/db: refused",
    ],
)
def test_redact_hides_a_password_with_raw_reserved_characters(text: str) -> None:
    redacted = postgres.redact(text)
    assert_hidden(redacted, text)
    assert "***@" in redacted
    assert "@127.0.0.1" in redacted or "@h/db" in redacted
