"""API keys in PostgreSQL (the ``api_keys`` table of migration 0003).

The server reads keys and writes last-use times through its pool, as the application role
(which may do exactly that: migration 0004). The CLI adds and revokes keys on a connection
of its own, as the migration owner (``MIGRATIONS_DATABASE_URL``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import psycopg
import psycopg_pool

from fraudscore_adapters.access.keys import ApiKey
from fraudscore_adapters.postgres.conninfo import connection_kwargs
from fraudscore_adapters.postgres.faults import run, store_errors

__all__ = ["PostgresKeyStore"]

T = TypeVar("T")
Work = Callable[[psycopg.Connection[Any]], T]

_COLUMNS = "id, name, key_sha256, scopes, created_at, last_used_at, revoked_at"
ALL_SQL = f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id"
ADD_SQL = f"INSERT INTO api_keys ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
REVOKE_SQL = f"""
    UPDATE api_keys SET revoked_at = coalesce(revoked_at, %s) WHERE id = %s
    RETURNING {_COLUMNS}
"""
TOUCH_SQL = """
    UPDATE api_keys AS k SET last_used_at = u.at
    FROM json_to_recordset(%s::json) AS u(id text, at timestamptz)
    WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)
"""
"""One statement for every key's last use (the application role may update only that)."""
_ENCODER = msgspec.json.Encoder()


class PostgresKeyStore:
    """A :class:`~fraudscore_adapters.access.keys.KeyStore` on PostgreSQL."""

    def __init__(self, call: Callable[[str, Work[Any]], Any]) -> None:
        self._call = call

    @classmethod
    def on_pool(
        cls, pool: psycopg_pool.ConnectionPool[Any], *, timeout_s: float
    ) -> PostgresKeyStore:
        """On the server's pool: each call bounded like every other store call."""
        return cls(lambda what, work: run(pool, what, work, timeout_s=timeout_s))

    @classmethod
    def connecting(cls, url: str, *, connect_timeout_s: int = 10) -> PostgresKeyStore:
        """A connection per call (the CLI)."""

        def call(what: str, work: Work[T]) -> T:
            with (
                store_errors(what),
                psycopg.connect(
                    url,
                    **connection_kwargs(
                        statement_timeout_ms=0, connect_timeout_s=connect_timeout_s
                    ),
                ) as conn,
            ):
                return work(conn)

        return cls(call)

    def add(self, key: ApiKey) -> None:
        """Store a new key."""
        row = (key.id, key.name, key.key_sha256, list(key.scopes), key.created_at, None, None)
        self._call("adding an API key", lambda conn: conn.execute(ADD_SQL, row))

    def all(self) -> list[ApiKey]:
        """Every key, oldest first."""
        rows = self._call("reading API keys", lambda conn: conn.execute(ALL_SQL).fetchall())
        return [_key(row) for row in rows]

    def revoke(self, key_id: str, at: datetime) -> ApiKey | None:
        """Revoke a key (an earlier revocation stands); the key, or None if unknown."""
        row = self._call(
            "revoking an API key", lambda conn: conn.execute(REVOKE_SQL, (at, key_id)).fetchone()
        )
        return None if row is None else _key(row)

    def touch(self, used: Mapping[str, datetime]) -> None:
        """Record last-use times, one statement for all."""
        if not used:
            return
        document = _ENCODER.encode([{"id": k, "at": at.isoformat()} for k, at in used.items()])
        params = (document.decode(),)
        self._call("recording API key use", lambda conn: conn.execute(TOUCH_SQL, params))


def _key(row: tuple[Any, ...]) -> ApiKey:
    key_id, name, digest, scopes, created, last_used, revoked = row
    return ApiKey(key_id, name, digest, tuple(scopes), created, last_used, revoked)
