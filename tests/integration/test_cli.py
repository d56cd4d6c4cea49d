"""`make migrate && make load-features` end to end, and the `keys` and `model-pin` commands,
through the command line's main()."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fraudscore_adapters import cli, postgres
from fraudscore_adapters.migrate import apply_migrations
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


# -- keys and model-pin ---------------------------------------------------------------------


@dataclass
class KeysAt:
    """Where the `keys` commands keep keys in a test: the stored rows, as the store has them."""

    where: str
    stored: Callable[[], list[dict[str, Any]]]
    """Every stored key as a dict of its stored fields."""
    raw: Callable[[], str]
    """Everything the store holds, as text (to show no key is in it)."""


def _file_keys(path: Path) -> KeysAt:
    def stored() -> list[dict[str, Any]]:
        if not path.exists():
            return []
        keys: list[dict[str, Any]] = json.loads(path.read_text())["keys"]
        return keys

    return KeysAt(str(path), stored, path.read_text)


def _database_keys(url: str) -> KeysAt:
    def stored() -> list[dict[str, Any]]:
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT row_to_json(k) FROM api_keys AS k ORDER BY created_at")
            return [row[0] for row in rows.fetchall()]

    return KeysAt("the database", stored, lambda: json.dumps(stored()))


@pytest.fixture(params=["postgres", "file"])
def keys_at(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> KeysAt:
    """A clean environment whose `keys` commands use a fresh migrated database, or a keys
    file under FRAUDSCORE_DATA_DIR."""
    _no_database(monkeypatch, tmp_path)
    if request.param == "file":
        return _file_keys(tmp_path / "data" / "api_keys.json")
    url = request.getfixturevalue("empty_database_url")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("FRAUDSCORE_MIGRATIONS_DIR", str(MIGRATIONS))
    assert cli.main(["migrate"]) == 0
    return _database_keys(url)


def _no_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run in ``tmp_path`` with no database and no FRAUDSCORE_* setting but the data dir."""
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "MIGRATIONS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("FRAUDSCORE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FRAUDSCORE_DATA_DIR", str(tmp_path / "data"))


def _create(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    """`keys create ARGS`: the key (all of stdout) and what went to stderr."""
    capsys.readouterr()
    assert cli.main(["keys", "create", *args]) == 0
    out, err = capsys.readouterr()
    assert out.endswith("\n")
    assert out.count("\n") == 1  # the key alone on stdout, for KEY=$(... keys create ...)
    return out.strip(), err


def test_keys_create_list_revoke(keys_at: KeysAt, capsys: pytest.CaptureFixture[str]) -> None:
    key, err = _create(capsys, "--name", "alice")
    assert re.fullmatch(r"fsk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key), key
    key_id = key.split("_")[1]
    assert f"created API key {key_id} ('alice', scopes predict) in {keys_at.where}" in err
    assert key not in err
    ops, _ = _create(capsys, "--name", "ops bot", "--scope", "admin", "--scope", "predict")
    ops_id = ops.split("_")[1]

    (alice, ops_row) = keys_at.stored()
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert (alice["id"], alice["name"], alice["scopes"]) == (key_id, "alice", ["predict"])
    assert alice["key_sha256"] == digest  # the SHA-256 of the key, not the key
    assert ops_row["scopes"] == ["predict", "admin"]
    assert alice["last_used_at"] is None
    assert alice["revoked_at"] is None
    secret = key.split("_", 2)[2]
    assert secret not in keys_at.raw()
    assert ops.split("_", 2)[2] not in keys_at.raw()

    assert cli.main(["keys", "list"]) == 0
    listed, err = capsys.readouterr()
    header, *lines = listed.splitlines()
    assert header.split()[:3] == ["id", "name", "scopes"]
    assert [line.split()[0] for line in lines] == [key_id, ops_id]
    assert lines[0].split()[1:3] == ["alice", "predict"]
    assert "ops bot" in lines[1]
    assert "predict,admin" in lines[1]
    assert f"2 active, 2 in all, in {keys_at.where}" in err

    assert cli.main(["keys", "revoke", key_id]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert f"revoked API key {key_id} ('alice')" in err
    assert "within FRAUDSCORE_KEYS_REFRESH_S" in err
    first = keys_at.stored()[0]["revoked_at"]
    assert first is not None
    assert cli.main(["keys", "revoke", key_id]) == 0  # again: the first revocation stands
    assert keys_at.stored()[0]["revoked_at"] == first
    assert keys_at.stored()[1]["revoked_at"] is None
    assert cli.main(["keys", "list"]) == 0
    listed, err = capsys.readouterr()
    assert "1 active, 2 in all" in err
    (alice_line,) = [line for line in listed.splitlines() if line.startswith(key_id)]
    assert not alice_line.rstrip().endswith("-")  # the revoked column holds a time

    everything = listed + err + out
    for shown_once in (key, ops):  # never shown again, nor anything to find it by
        assert shown_once not in everything
        assert shown_once.split("_", 2)[2] not in everything
        assert hashlib.sha256(shown_once.encode()).hexdigest() not in everything


def test_the_keys_file_is_private(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_database(monkeypatch, tmp_path)
    path = tmp_path / "data" / "api_keys.json"
    key, err = _create(capsys, "--name", "alice")
    assert f"in {path};" in err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key_id = _file_keys(path).stored()[0]["id"]
    assert cli.main(["keys", "revoke", key_id]) == 0  # rewritten whole: still private
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key not in path.read_text()


def test_revoking_an_unknown_key_exits_2_saying_so(
    keys_at: KeysAt, capsys: pytest.CaptureFixture[str]
) -> None:
    _create(capsys, "--name", "alice")
    assert cli.main(["keys", "revoke", "0123456789ab"]) == 2
    err = capsys.readouterr().err
    assert f"error: no API key 0123456789ab in {keys_at.where} (see `keys list`)" in err
    assert cli.main(["keys", "revoke", "not-an-id"]) == 2
    assert "a key id is 12 hex digits" in capsys.readouterr().err
    assert [k["revoked_at"] for k in keys_at.stored()] == [None]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--name", ""], "a key name is 1 to 100 printable characters"),
        (["--name", "x" * 101], "a key name is 1 to 100 printable characters"),
        (["--name", "tab\there"], "a key name is 1 to 100 printable characters"),
        (["--name", "ok", "--scope", "root"], "invalid choice: 'root'"),
        (["--name", "ok", "--scope", ""], "invalid choice: ''"),
    ],
    ids=["empty-name", "long-name", "unprintable-name", "unknown-scope", "empty-scope"],
)
def test_a_bad_name_or_scope_is_refused(
    keys_at: KeysAt, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    capsys.readouterr()
    code: int | str | None
    try:
        code = cli.main(["keys", "create", *args])
    except SystemExit as exc:  # argparse refuses what is not a choice
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert says in err
    assert keys_at.stored() == []


def test_keys_go_to_migrations_database_url_when_set(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    empty_database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database_url = empty_database_url
    apply_migrations(database_url, MIGRATIONS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    monkeypatch.setenv("MIGRATIONS_DATABASE_URL", database_url)
    monkeypatch.setenv("FRAUDSCORE_CONNECT_TIMEOUT_S", "1")
    key, _ = _create(capsys, "--name", "owner-made")
    key_id = key.split("_")[1]
    assert key_id in [k["id"] for k in _database_keys(database_url).stored()]
    assert cli.main(["keys", "revoke", key_id]) == 0


def test_a_keys_file_named_by_fraudscore_keys_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_database(monkeypatch, tmp_path)
    path = tmp_path / "elsewhere" / "keys.json"
    monkeypatch.setenv("FRAUDSCORE_KEYS_FILE", str(path))
    key, err = _create(capsys, "--name", "alice")
    assert f"in {path};" in err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _file_keys(path).stored()[0]["key_sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert not (tmp_path / "data" / "api_keys.json").exists()


def test_model_pin_prints_the_manifest_sha256(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_model: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, artifacts = tiny_model
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FRAUDSCORE_ARTIFACT_DIR", str(artifacts))
    capsys.readouterr()
    assert cli.main(["model-pin"]) == 0
    out = capsys.readouterr().out
    assert out == hashlib.sha256((artifacts / "manifest.json").read_bytes()).hexdigest() + "\n"

    forged = tmp_path / "forged"
    shutil.copytree(artifacts, forged)
    with (forged / "model.pkl").open("ab") as model:
        model.write(b"\0")
    monkeypatch.setenv("FRAUDSCORE_ARTIFACT_DIR", str(forged))
    assert cli.main(["model-pin"]) == 2  # a folder that disagrees with its manifest: no pin
    out, err = capsys.readouterr()
    assert out == ""
    assert "error:" in err
