"""API keys in a local JSON file: the key store of the embedded default (no database).

The file holds hashes only and is written with mode 0600, by whole-file replacement (write a
temporary file, ``fsync``, ``rename``), so a reader never sees half a file. Writers (the
CLI, and every server worker recording last-use times) take an exclusive ``flock`` on a
sibling lock file first, so a revoke and a last-use update never undo each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fraudscore_adapters.access.keys import ApiKey, KeyProblem, add_to, revoke_in, touch_in

__all__ = ["FileKeyStore", "KeyFileError"]

_VERSION = 1


class KeyFileError(KeyProblem):
    """The keys file cannot be read as one (the message names the file, never a key)."""


class FileKeyStore:
    """A :class:`~fraudscore_adapters.access.keys.KeyStore` in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, key: ApiKey) -> None:
        """Store a new key (creates the file and its folder if need be)."""
        with self._locked() as keys:
            add_to(keys, key)

    def all(self) -> list[ApiKey]:
        """Every key in the file, oldest first; none when there is no file."""
        return sorted(self._read().values(), key=lambda k: k.created_at)

    def revoke(self, key_id: str, at: datetime) -> ApiKey | None:
        """Mark a key revoked; the key, or None if the file has no such key."""
        with self._locked() as keys:
            return revoke_in(keys, key_id, at)

    def touch(self, used: Mapping[str, datetime]) -> None:
        """Record last-use times (a no-op when ``used`` is empty: no write, no lock)."""
        if not used:
            return
        with self._locked() as keys:
            touch_in(keys, used)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, ApiKey]]:
        """The keys, to change in place under the lock; written back if the block succeeds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            keys = self._read()
            yield keys
            self._write(keys)

    def _read(self) -> dict[str, ApiKey]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read the keys file {self.path}: {exc}") from exc
        try:
            document = json.loads(text)
            if document.get("version") != _VERSION:
                raise ValueError(f"version {document.get('version')!r}, expected {_VERSION}")
            return {k.id: k for k in map(_from_json, document["keys"])}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyFileError(f"the keys file {self.path} is malformed: {exc!r}") from None

    def _write(self, keys: Mapping[str, ApiKey]) -> None:
        document = {"version": _VERSION, "keys": [_to_json(k) for k in keys.values()]}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                json.dump(document, stream, indent=2)
                stream.write("\n")
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def _to_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "key_sha256": key.key_sha256,
        "scopes": list(key.scopes),
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def _time(raw: object) -> datetime | None:
    return None if raw is None else datetime.fromisoformat(str(raw))


def _from_json(raw: Mapping[str, Any]) -> ApiKey:
    created = _time(raw["created_at"])
    if created is None:
        raise ValueError("a key without created_at")
    return ApiKey(
        id=str(raw["id"]),
        name=str(raw["name"]),
        key_sha256=str(raw["key_sha256"]),
        scopes=tuple(str(s) for s in raw["scopes"]),
        created_at=created,
        last_used_at=_time(raw.get("last_used_at")),
        revoked_at=_time(raw.get("revoked_at")),
    )
