"""Schema migrations with yoyo-migrations (its Python API and its lock) over psycopg 3.

yoyo's own lock table only exists once yoyo has initialised the database, so two processes
that start on an empty database could race while creating it. A PostgreSQL advisory lock,
held on a separate connection around the whole run, closes that gap: running ``migrate`` twice,
or from two processes at once, applies each migration exactly once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from yoyo import get_backend, read_migrations

from fraudscore_adapters.postgres import redact, store_errors

__all__ = ["apply_migrations", "pending_migrations", "rollback_migrations", "yoyo_url"]

_ADVISORY_KEY = 0x66_72_61_75_64  # "fraud": one key for every fraudscore migration run


def yoyo_url(database_url: str) -> str:
    """The yoyo URL for a ``postgresql://`` DSN: the ``postgresql+psycopg://`` scheme."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise ValueError(f"not a PostgreSQL URL: {redact(database_url)}")
    return f"postgresql+psycopg://{rest}"


@contextlib.contextmanager
def _exclusive(database_url: str, timeout_s: float) -> Iterator[None]:
    with (
        store_errors("migrating"),
        psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn,
    ):
        conn.execute(
            "SELECT set_config('lock_timeout', %s, false)", (f"{int(timeout_s * 1000)}ms",)
        )
        conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_KEY,))


@contextlib.contextmanager
def _backend(database_url: str) -> Iterator[Any]:
    """A yoyo backend whose connection is closed afterwards (yoyo leaves it open)."""
    backend = get_backend(yoyo_url(database_url))
    try:
        yield backend
    finally:
        backend.connection.close()


def apply_migrations(database_url: str, directory: Path, *, timeout_s: float = 60) -> list[str]:
    """Apply every pending migration in ``directory``; return the ids applied (maybe none)."""
    with _exclusive(database_url, timeout_s), _backend(database_url) as backend:
        migrations = read_migrations(str(directory))
        with backend.lock(timeout=timeout_s):
            todo = backend.to_apply(migrations)
            backend.apply_migrations(todo)
        return [m.id for m in todo]


def rollback_migrations(
    database_url: str, directory: Path, *, count: int | None = None, timeout_s: float = 60
) -> list[str]:
    """Roll back the newest ``count`` applied migrations (all when None); return their ids."""
    with _exclusive(database_url, timeout_s), _backend(database_url) as backend:
        migrations = read_migrations(str(directory))
        with backend.lock(timeout=timeout_s):
            todo = backend.to_rollback(migrations)
            if count is not None:
                todo = todo[:count]
            backend.rollback_migrations(todo)
        return [m.id for m in todo]


def pending_migrations(database_url: str, directory: Path) -> list[str]:
    """Ids of the migrations not applied yet."""
    with store_errors("reading migration state"), _backend(database_url) as backend:
        return [m.id for m in backend.to_apply(read_migrations(str(directory)))]
