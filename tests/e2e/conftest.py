"""A real server process on a real socket, on the in-memory store or on PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from fraudscore_adapters.baf import load_features
from fraudscore_adapters.bulkload import copy_features
from fraudscore_adapters.migrate import apply_migrations
from tests.conftest import MIGRATIONS, fresh_database


@dataclass
class Served:
    """A running server: its base URL, and its database when it has one."""

    base: str
    database_url: str | None
    process: subprocess.Popen[bytes]

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(workdir: Path, data: Path, artifacts: Path, database_url: str | None) -> Iterator[Served]:
    """Start ``python -m fraudscore_adapters serve`` and wait until it is ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {
        "FRAUDSCORE_DATA_FILE": str(data),
        "FRAUDSCORE_ARTIFACT_DIR": str(artifacts),
        "FRAUDSCORE_PORT": str(port),
        "FRAUDSCORE_POOL_TIMEOUT_S": "2",
    }
    if database_url:
        env["DATABASE_URL"] = database_url
    log = workdir / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "fraudscore_adapters", "serve"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, log)
        yield Served(base, database_url, process)
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
