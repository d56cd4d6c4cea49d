"""Suite-wide rules and fixtures.

A real PostgreSQL for the integration and e2e tests comes from ``TEST_DATABASE_URL`` first,
else from a PostgreSQL answering at the conventional local address (``LOCAL_POSTGRES``), else
from a testcontainers ``PostgresContainer`` where a Docker engine answers, else the tests
skip saying why; the report header says which. In CI a skip of a database test fails the
run (see the hook below). Each test run works in a fresh database of its own, dropped at the
end; each test starts from empty tables.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from fraudscore_adapters.migrate import apply_migrations


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In CI (``CI=true``) a skipped database test is a failure: CI must test the database."""
    report = yield
    needs_db = item.get_closest_marker("integration") is not None
    if report.skipped and needs_db and os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        report.outcome = "failed"
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"database test skipped in CI (CI=true): {reason}"
    return report


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small synthetic dataset and a small model trained on it: (data file, artifact dir)."""
    from fraudscore_adapters.baf.synthetic import generate  # noqa: PLC0415
    from fraudscore_adapters.xgb import TrainConfig, train_file  # noqa: PLC0415

    root = tmp_path_factory.mktemp("tiny_model")
    data = root / "baf_synthetic_tiny.parquet"
    generate(8_000, seed=11).write_parquet(data)
    config = TrainConfig(seed=3, max_rounds=30, max_depth=3, learning_rate=0.3, n_jobs=1)
    train_file(data, root / "artifacts", config, log=lambda _: None)
    return data, root / "artifacts"


@pytest.fixture(scope="session")
def second_tiny_model(
    tiny_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Another small model on the same data (another seed, so other trees and another model
    version): the artifact dir of the model a reload moves to."""
    from fraudscore_adapters.xgb import TrainConfig, train_file  # noqa: PLC0415

    out = tmp_path_factory.mktemp("second_tiny_model") / "artifacts"
    config = TrainConfig(seed=4, max_rounds=30, max_depth=3, learning_rate=0.3, n_jobs=1)
    train_file(tiny_model[0], out, config, log=lambda _: None)
    return out


@pytest.fixture
def model_root(tmp_path: Path, tiny_model: tuple[Path, Path], second_tiny_model: Path) -> Path:
    """An artifact root holding both tiny models as versions, A then B (oldest first);
    ``current`` names A and ``previous`` B."""
    from fraudscore_adapters.xgb import versions  # noqa: PLC0415
    from tests.support import versioned  # noqa: PLC0415

    root = tmp_path / "artifacts"
    a, _ = versioned(root, tiny_model[1], second_tiny_model)
    versions.use(root, a)
    return root


MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DOCKER_SOCKET = "/var/run/docker.sock"


@functools.cache
def _given_or_local() -> tuple[str | None, str]:
    """The server URL from the environment, else the local one if it answers; and whence."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url, "TEST_DATABASE_URL"
    try:
        psycopg.connect(LOCAL_POSTGRES, connect_timeout=2).close()
    except psycopg.Error:
        return None, f"TEST_DATABASE_URL unset and nothing answers at {LOCAL_POSTGRES}"
    return LOCAL_POSTGRES, f"TEST_DATABASE_URL unset: the local server at {LOCAL_POSTGRES}"


def pytest_report_header() -> str:
    """Say which PostgreSQL the database tests use."""
    return f"database tests: {_given_or_local()[1]}"


def _docker_postgres() -> Iterator[str]:
    try:
        import docker  # type: ignore[import-untyped]  # noqa: PLC0415 - only where Docker runs

        # No engine to ask: docker-py's failed attempt on a missing socket leaks that socket,
        # which -W error turns into a failure of the whole run after the skips.
        if not os.environ.get("DOCKER_HOST") and not Path(DOCKER_SOCKET).exists():
            raise FileNotFoundError(f"no DOCKER_HOST and no {DOCKER_SOCKET}")
        with contextlib.closing(docker.from_env()) as client:
            client.ping()
    except Exception as exc:
        pytest.skip(
            "no PostgreSQL for integration tests: set TEST_DATABASE_URL "
            f"(e.g. postgresql://postgres@127.0.0.1:5432/test), run one at {LOCAL_POSTGRES}"
            f" or run a Docker engine ({exc})"
        )
    from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

    with PostgresContainer("postgres:15-alpine", driver=None) as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL of a PostgreSQL server we may create databases on."""
    url, _ = _given_or_local()
    if url:
        yield url
    else:
        yield from _docker_postgres()


@contextlib.contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new, empty database on ``server``, dropped afterwards."""
    name = f"fraudscore_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            admin.execute(drop.format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A migrated database of this test run's own."""
    with fresh_database(server_url) as url:
        apply_migrations(url, MIGRATIONS)
        yield url


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A new database with nothing in it (for migration tests)."""
    with fresh_database(server_url) as url:
        yield url


@pytest.fixture
def db(database_url: str) -> str:
    """The run's database, with empty tables at the start of the test."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE feature_store, predictions RESTART IDENTITY")
    return database_url
