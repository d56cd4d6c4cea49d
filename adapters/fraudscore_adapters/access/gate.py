"""The gate in front of every protected route: who is calling, may they, and not too often.

:meth:`Gate.admit` is the one check; every way a route is served calls it (see
:mod:`fraudscore_adapters.http.frontdoor`). It raises, and nothing else happens, for:

- no key, a malformed header, an unknown or a revoked key: :class:`Unauthenticated` (401),
  one answer for every cause, so a caller learns nothing about which keys exist;
- a valid key without the route's scope: :class:`Forbidden` (403);
- a key over its rate: :class:`RateLimited` (429 with ``Retry-After``);
- keys not read for too long (their store is down): :class:`KeysUnavailable` (503). Fails
  closed: a key revoked meanwhile must not keep working.

The check takes the same time whatever the key: the presented key is hashed (SHA-256) and
the digest looked up in a dict of the active keys' digests. The only bytes ever compared are
digests, which a caller cannot steer toward a stored one, so timing tells nothing about how
much of a key was right. Revoked keys are simply absent, so they cost what unknown keys do.

Per worker process: :func:`keep_fresh` re-reads the keys, writes last-use times back and logs
the refusals every ``refresh_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fraudscore import FraudscoreError
from fraudscore_adapters.access.keys import ApiKey, KeyStore

__all__ = [
    "AccessDenied",
    "Forbidden",
    "Gate",
    "KeysUnavailable",
    "RateLimited",
    "TokenBuckets",
    "Unauthenticated",
    "bearer",
    "keep_fresh",
]

log = logging.getLogger("fraudscore.access")

_BEARER = b"bearer "


class AccessDenied(FraudscoreError):
    """The gate refused a request."""


class Unauthenticated(AccessDenied):
    """No valid key: missing, malformed, unknown or revoked (deliberately not said which)."""

    def __init__(self) -> None:
        super().__init__("a valid API key is required: send `Authorization: Bearer <key>`")


class Forbidden(AccessDenied):
    """A valid key that lacks the scope the route needs."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"this API key lacks the `{scope}` scope")
        self.scope = scope


class RateLimited(AccessDenied):
    """A key over its rate limit; ``retry_after_s`` is when a request would pass."""

    def __init__(self, retry_after_s: int, rate: float) -> None:
        super().__init__(f"this API key is over its rate limit ({rate:g} requests per second)")
        self.retry_after_s = retry_after_s


class KeysUnavailable(AccessDenied):
    """The keys have not been read for too long to tell who may call."""

    def __init__(self, age_s: float | None) -> None:
        since = "yet" if age_s is None else f"for {age_s:.0f} s"
        super().__init__(f"the API keys could not be read {since}; try again shortly")


def bearer(authorization: bytes | None) -> bytes:
    """The key of an ``Authorization: Bearer <key>`` header value; empty when there is none."""
    if authorization and authorization[:7].lower() == _BEARER:
        return authorization[7:].strip()
    return b""


class TokenBuckets:
    """Per-key token buckets: ``rate`` tokens a second, at most ``burst`` saved up.

    Written by hand (a dict of two-item lists): measured at ~0.4 µs a check, where a
    general limiter library's storage and key formatting cost several times that on a path
    whose whole budget is ~120 µs. Only keys that passed authentication get a bucket, so the
    dict is bounded by the number of keys.
    """

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate above 0 and a burst of at least 1")
        self.rate, self.burst = rate, float(burst)
        self._buckets: dict[str, list[float]] = {}

    def take(self, key: str, now: float) -> float:
        """Take a token for ``key`` at ``now`` (monotonic seconds): 0.0 if it had one, else
        the seconds until it will."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate


@dataclass(frozen=True, slots=True)
class _Grant:
    key_id: str
    scopes: frozenset[str]


class Gate:
    """Authentication, scopes and rate limits; see the module. One per worker process."""

    def __init__(self, *, rate: float, burst: int, max_stale_s: float) -> None:
        self._grants: dict[bytes, _Grant] = {}
        self._loaded_at: float | None = None
        self._max_stale_s = max_stale_s
        self._buckets = TokenBuckets(rate, burst)
        self._used: dict[str, float] = {}
        """Key id -> when (monotonic) it last passed, since the last :meth:`take_used`."""
        self._unsaved: dict[str, datetime] = {}
        """Last-use times taken but not yet written back (kept across a failed write)."""
        self.refused: Counter[str] = Counter()
        """Refusals since the last :meth:`take_refused`, by reason (a key id for a rate)."""
        self.problem = "not read yet"
        """Why the keys are stale, for readiness."""

    def load(self, keys: Iterable[ApiKey]) -> int:
        """Serve these keys from now on (revoked ones are dropped); how many are active."""
        grants = {
            bytes.fromhex(k.key_sha256): _Grant(k.id, frozenset(k.scopes)) for k in keys if k.active
        }
        self._grants, self._loaded_at, self.problem = grants, time.monotonic(), ""
        return len(grants)

    def active(self) -> int:
        """How many keys may call (any scope)."""
        return len(self._grants)

    def _stale(self, now: float) -> bool:
        return self._loaded_at is None or now - self._loaded_at > self._max_stale_s

    def freshness(self) -> str:
        """Readiness: ``ok`` while the gate can decide; else why not."""
        if not self._stale(time.monotonic()):
            return "ok"
        return f"{self.problem or 'not read'}; {KeysUnavailable(self.age_s())}"

    def age_s(self) -> float | None:
        """Seconds since the keys were last read (None: never)."""
        return None if self._loaded_at is None else time.monotonic() - self._loaded_at

    def admit(self, authorization: bytes | None, scope: str) -> str:
        """The id of the key in ``authorization`` (an ``Authorization`` header value), if it
        may call a route needing ``scope`` now; raise an :class:`AccessDenied` if not."""
        grant = self._grants.get(hashlib.sha256(bearer(authorization)).digest())
        now = time.monotonic()
        if self._stale(now):
            raise KeysUnavailable(self.age_s())
        if grant is None:
            self.refused["unauthenticated"] += 1
            raise Unauthenticated
        if scope not in grant.scopes:
            self.refused["forbidden"] += 1
            raise Forbidden(scope)
        wait = self._buckets.take(grant.key_id, now)
        if wait:
            self.refused[grant.key_id] += 1
            raise RateLimited(max(1, math.ceil(wait)), self._buckets.rate)
        self._used[grant.key_id] = now
        return grant.key_id

    def take_used(self) -> dict[str, datetime]:
        """When each key last passed (wall-clock, UTC), for every key whose time is not
        written back yet: call :meth:`saved` once it is."""
        used, self._used = self._used, {}
        wall, mono = datetime.now(UTC), time.monotonic()
        for key_id, at in used.items():
            self._unsaved[key_id] = wall - timedelta(seconds=mono - at)
        return dict(self._unsaved)

    def saved(self, used: dict[str, datetime]) -> None:
        """These last-use times are written back (later ones stay to be written)."""
        for key_id, at in used.items():
            if self._unsaved.get(key_id) == at:
                del self._unsaved[key_id]

    def take_refused(self) -> Counter[str]:
        """Refusals since the previous call; resets."""
        refused, self.refused = self.refused, Counter()
        return refused


RETRY_S = 0.25
"""After a failed read, the keys are tried again this soon (not a whole refresh later): once
the store is back, a gate that failed closed opens again within this."""


async def refresh(gate: Gate, store: KeyStore) -> bool:
    """Write last-use times back and re-read the keys, once; a failure is logged, the times
    are kept for the next try, and the gate keeps the keys it has until they are too old
    (then it fails closed)."""
    used = gate.take_used()
    try:
        keys = await asyncio.to_thread(_exchange, store, used)
    except Exception as exc:
        gate.problem = f"reading the API keys failed: {exc}"
        log.warning("%s (keys read %s s ago)", gate.problem, _age(gate))
        return False
    gate.saved(used)
    gate.load(keys)
    for reason, count in gate.take_refused().items():
        if reason in ("unauthenticated", "forbidden"):
            log.warning("%d request(s) refused: %s", count, reason)
        else:
            log.warning("%d request(s) of key %s refused over its rate limit", count, reason)
    return True


def _exchange(store: KeyStore, used: dict[str, datetime]) -> list[ApiKey]:
    store.touch(used)
    return store.all()


def _age(gate: Gate) -> str:
    age = gate.age_s()
    return "never" if age is None else f"{age:.1f}"


async def keep_fresh(gate: Gate, store: KeyStore, every_s: float) -> None:
    """:func:`refresh` every ``every_s`` seconds (every ``RETRY_S`` while it fails), until
    cancelled."""
    ok = True
    while True:
        await asyncio.sleep(every_s if ok else min(every_s, RETRY_S))
        ok = await refresh(gate, store)
