"""A real server process on a real socket, on the in-memory store or on PostgreSQL.

Every server gets an API key of its own, made by the real command line (``python -m
fraudscore_adapters keys create``) with the server's own environment: in a keys file in the
server's working folder for the embedded store, in the database's ``api_keys`` for
PostgreSQL. A server on PostgreSQL is pinned to the model (``FRAUDSCORE_MODEL_SHA256``), as
production requires.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from fraudscore_adapters.access import ApiKey, FileKeyStore, KeyStore
from fraudscore_adapters.baf import load_features
from fraudscore_adapters.bulkload import copy_features
from fraudscore_adapters.migrate import apply_migrations
from fraudscore_adapters.postgres.keys import PostgresKeyStore
from fraudscore_adapters.xgb import manifest_sha256, versions
from tests.conftest import MIGRATIONS, fresh_database

KEYS_REFRESH_S = 0.2
"""How often the test servers re-read their keys (FRAUDSCORE_KEYS_REFRESH_S)."""

_INHERITED_NOT = (
    "DATABASE_URL",
    "MIGRATIONS_DATABASE_URL",
    "FRAUDSCORE_KEYS_FILE",
    "FRAUDSCORE_MODEL_SHA256",
)
"""Taken out of the test run's environment: each server says where its data and keys are."""


def cli(
    env: Mapping[str, str], cwd: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python -m fraudscore_adapters ARGS`` as a subprocess with ``env``, in ``cwd``."""
    done = subprocess.run(
        [sys.executable, "-m", "fraudscore_adapters", *args],
        cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if check and done.returncode != 0:
        pytest.fail(f"`{' '.join(args)}` exited with {done.returncode}:\n{done.stderr}")
    return done


def key_id_of(key: str) -> str:
    """The id in a key (``fsk_<12 hex digits>_<secret>``)."""
    prefix, key_id, secret = key.split("_", 2)
    assert prefix == "fsk", key[:4]
    assert len(key_id) == 12, key_id
    assert secret
    return key_id


@dataclass
class Served:
    """A running server: its base URL, its database when it has one, and its API key."""

    base: str
    database_url: str | None
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(repr=False)
    workdir: Path
    key: str = field(repr=False)
    """A key with the ``predict`` scope, made for this server before it started."""

    @property
    def key_id(self) -> str:
        return key_id_of(self.key)

    @property
    def auth(self) -> dict[str, str]:
        """The headers that carry this server's key."""
        return bearer(self.key)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The command line, with this server's environment (same keys, same database)."""
        return cli(self.env, self.workdir, *args, check=check)

    def create_key(self, name: str, *scopes: str) -> str:
        """A new key made through the command line; printed alone on its stdout."""
        args = [arg for scope in scopes for arg in ("--scope", scope)]
        key = self.cli("keys", "create", "--name", name, *args).stdout.strip()
        key_id_of(key)
        return key

    def recorded(self, prediction_ids: list[str]) -> int | None:
        """How many of these predictions have a committed row (None without a database)."""
        if self.database_url is None:
            return None
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM predictions WHERE id = ANY(%s::uuid[])", (prediction_ids,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    def predictions(self) -> int | None:
        """How many prediction rows there are (None without a database)."""
        if self.database_url is None:
            return None
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute("SELECT count(*) FROM predictions").fetchone()
        assert row is not None
        return int(row[0])

    def callers(self, prediction_ids: list[str]) -> list[str | None]:
        """The ``caller`` of each of these predictions' rows (PostgreSQL only)."""
        assert self.database_url is not None
        with psycopg.connect(self.database_url) as conn:
            rows = conn.execute(
                "SELECT caller FROM predictions WHERE id = ANY(%s::uuid[])", (prediction_ids,)
            ).fetchall()
        return [row[0] for row in rows]

    def stored(self, key_id: str) -> ApiKey:
        """The key as its store holds it (the database's ``api_keys``, or the keys file)."""
        store: KeyStore = (
            PostgresKeyStore.connecting(self.database_url)
            if self.database_url
            else FileKeyStore(Path(self.env["FRAUDSCORE_KEYS_FILE"]))
        )
        (key,) = [k for k in store.all() if k.id == key_id]
        return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(
    workdir: Path,
    data: Path,
    artifacts: Path,
    database_url: str | None,
    port: int,
    *,
    keys_refresh_s: float = KEYS_REFRESH_S,
) -> dict[str, str]:
    """The environment of a test server, and of the command line that manages its keys."""
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED_NOT}
    env |= {
        "FRAUDSCORE_DATA_FILE": str(data),
        "FRAUDSCORE_ARTIFACT_DIR": str(artifacts),
        "FRAUDSCORE_PORT": str(port),
        "FRAUDSCORE_POOL_TIMEOUT_S": "2",
        "FRAUDSCORE_KEYS_REFRESH_S": str(keys_refresh_s),
    }
    if database_url:
        env["DATABASE_URL"] = database_url
        env["FRAUDSCORE_MODEL_SHA256"] = manifest_sha256(versions.locate(artifacts).path)
    else:
        env["FRAUDSCORE_KEYS_FILE"] = str(workdir / f"api_keys-{port}.json")
    return env


@contextlib.contextmanager
def serve(
    workdir: Path,
    data: Path,
    artifacts: Path,
    database_url: str | None,
    *,
    keys_refresh_s: float = KEYS_REFRESH_S,
    settings: Mapping[str, str] | None = None,
) -> Iterator[Served]:
    """Make a key with the command line, start ``python -m fraudscore_adapters serve`` (with
    ``settings`` on top of the test defaults) and wait until it is ready."""
    port = free_port()
    env = server_env(workdir, data, artifacts, database_url, port, keys_refresh_s=keys_refresh_s)
    env |= settings or {}
    key = cli(env, workdir, "keys", "create", "--name", "e2e").stdout.strip()
    key_id_of(key)
    log = workdir / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "fraudscore_adapters", "serve"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, log)
        yield Served(base, database_url, process, env, workdir, key)
    finally:
        process.terminate()
        process.wait(timeout=20)


def _wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"server not ready within 60 s:\n{log.read_text()}")


def seeded_database(server_url: str, data: Path) -> contextlib.AbstractContextManager[str]:
    """A fresh, migrated database holding the dataset's features."""

    @contextlib.contextmanager
    def make() -> Iterator[str]:
        with fresh_database(server_url) as url:
            apply_migrations(url, MIGRATIONS)
            frame, _ = load_features(data)
            with psycopg.connect(url) as conn:
                copy_features(conn, frame)
            yield url

    return make()


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("memory", marks=pytest.mark.e2e),
        pytest.param("postgres", marks=[pytest.mark.e2e, pytest.mark.integration]),
    ],
)
def served(
    request: pytest.FixtureRequest,
    tiny_model: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    data, artifacts = tiny_model
    workdir = tmp_path_factory.mktemp("served")
    if request.param == "memory":
        with serve(workdir, data, artifacts, None) as served:
            yield served
        return
    server_url = request.getfixturevalue("server_url")
    with seeded_database(server_url, data) as url, serve(workdir, data, artifacts, url) as served:
        yield served
