"""API keys: what a key is, how one is minted and hashed, and the port of their store.

A key is ``fsk_<id>_<secret>``: ``id`` is 12 hex digits (public: it names the key in lists,
logs and the audit trail), ``secret`` 32 random bytes (256 bits) in URL-safe base64. The key
is shown once, at creation; only its SHA-256 is stored.

Why SHA-256 and not a password hash (argon2, bcrypt): those are slow on purpose, to make
guessing a low-entropy password from its hash expensive. A 256-bit random secret cannot be
guessed from its hash at any speed, and the server checks a key on every request: a password
hash there would cost milliseconds of CPU per request and hand anyone a lever to burn it.
Keys issued by GitHub and Stripe are stored the same way.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "KEY_PREFIX",
    "SCOPES",
    "ApiKey",
    "KeyProblem",
    "KeyStore",
    "MemoryKeyStore",
    "add_to",
    "check_id",
    "check_name",
    "check_scopes",
    "key_sha256",
    "mint",
    "revoke_in",
    "touch_in",
]

KEY_PREFIX = "fsk_"
SCOPES = ("predict", "admin")
"""``predict``: the predict routes; ``admin``: operational routes."""
_ID = re.compile(r"^[0-9a-f]{12}$")
_NAME_MAX = 100


class KeyProblem(ValueError):
    """A key name, scope, id or keys file that is not right; the message says why."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: everything but the key itself."""

    id: str
    name: str
    key_sha256: str
    """Hex SHA-256 of the whole key (prefix, id and secret)."""
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None

    def used(self, at: datetime) -> ApiKey:
        """This key, last used at ``at`` if that is later than what it says."""
        if self.last_used_at is not None and self.last_used_at >= at:
            return self
        return dataclasses.replace(self, last_used_at=at)


def key_sha256(key: str | bytes) -> str:
    """The hex SHA-256 a key is stored and looked up by."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


def check_name(name: str) -> str:
    """A key's name: 1-100 printable characters; raise KeyProblem."""
    if not 1 <= len(name) <= _NAME_MAX or not name.isprintable():
        raise KeyProblem(f"a key name is 1 to {_NAME_MAX} printable characters")
    return name


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Known scopes, deduplicated in ``SCOPES`` order; at least one; raise KeyProblem."""
    wanted = set(scopes)
    unknown = wanted - set(SCOPES)
    if unknown or not wanted:
        raise KeyProblem(f"scopes are one or more of {', '.join(SCOPES)}; got {sorted(wanted)}")
    return tuple(s for s in SCOPES if s in wanted)


def mint(name: str, scopes: Iterable[str], taken: Iterable[str] = ()) -> tuple[ApiKey, str]:
    """A new key: its record (to store) and the key itself (to show once, then forget)."""
    taken = set(taken)
    key_id = secrets.token_hex(6)
    while key_id in taken:
        key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    key = f"{KEY_PREFIX}{key_id}_{secret}"
    record = ApiKey(
        id=key_id,
        name=check_name(name),
        key_sha256=key_sha256(key),
        scopes=check_scopes(scopes),
        created_at=datetime.now(UTC),
    )
    return record, key


def check_id(key_id: str) -> str:
    """A key id as :func:`mint` makes them; raise KeyProblem."""
    if not _ID.match(key_id):
        raise KeyProblem(f"a key id is 12 hex digits (see `keys list`), not {key_id[:20]!r}")
    return key_id


class KeyStore(Protocol):
    """Where keys are kept: the CLI adds, lists and revokes; the server reads and touches."""

    def add(self, key: ApiKey) -> None:
        """Store a new key."""
        ...

    def all(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        ...

    def revoke(self, key_id: str, at: datetime) -> ApiKey | None:
        """Revoke a key (kept, marked revoked at ``at``); the key, or None if unknown."""
        ...

    def touch(self, used: Mapping[str, datetime]) -> None:
        """Record when keys were last used (never moves a time back)."""
        ...


def add_to(keys: dict[str, ApiKey], key: ApiKey) -> None:
    """The rules of :meth:`KeyStore.add` on a dict of keys by id (the memory and file stores)."""
    if key.id in keys:
        raise ValueError(f"key {key.id} exists")
    keys[key.id] = key


def revoke_in(keys: dict[str, ApiKey], key_id: str, at: datetime) -> ApiKey | None:
    """The rules of :meth:`KeyStore.revoke` on a dict of keys: an earlier revocation stands."""
    key = keys.get(key_id)
    if key is not None and key.revoked_at is None:
        key = keys[key_id] = dataclasses.replace(key, revoked_at=at)
    return key


def touch_in(keys: dict[str, ApiKey], used: Mapping[str, datetime]) -> None:
    """The rules of :meth:`KeyStore.touch` on a dict of keys: unknown ids are ignored."""
    for key_id, at in used.items():
        if key_id in keys:
            keys[key_id] = keys[key_id].used(at)


class MemoryKeyStore:
    """A :class:`KeyStore` in memory (tests, and a library embedding the service)."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self._keys = {k.id: k for k in keys}
        self._lock = threading.Lock()

    def add(self, key: ApiKey) -> None:
        """Store a new key."""
        with self._lock:
            add_to(self._keys, key)

    def all(self) -> list[ApiKey]:
        """Every key, oldest first."""
        with self._lock:
            return sorted(self._keys.values(), key=lambda k: k.created_at)

    def revoke(self, key_id: str, at: datetime) -> ApiKey | None:
        """Revoke a key; the key, or None if unknown."""
        with self._lock:
            return revoke_in(self._keys, key_id, at)

    def touch(self, used: Mapping[str, datetime]) -> None:
        """Record last-use times."""
        with self._lock:
            touch_in(self._keys, used)
