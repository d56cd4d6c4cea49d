"""One contract, three key stores: memory, the keys file and PostgreSQL (a connection per call,
as the command line uses it, and the server's pool) must keep API keys the same way.

Like tests/integration/test_store_contract.py, every test runs against every store, so the
fakes cannot drift from the real thing: add and read back exactly, oldest first; revoke once
(a second revoke keeps the first time; an unknown id is None); touch moves a last use forward
only and ignores unknown ids; two handles on the same keys (two processes) do not undo each
other's writes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from fraudscore import StoreError
from fraudscore_adapters import postgres
from fraudscore_adapters.access import ApiKey, FileKeyStore, KeyStore, MemoryKeyStore, mint
from fraudscore_adapters.postgres.keys import PostgresKeyStore
from tests.integration.test_store_contract import POOL

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """``seconds`` after T0."""
    return T0 + timedelta(seconds=seconds)


def key(
    name: str = "alice", *, created: float = 0.0, scopes: tuple[str, ...] = ("predict",)
) -> ApiKey:
    """A freshly minted key's record, created at ``created`` seconds after T0."""
    record, _ = mint(name, scopes)
    return ApiKey(record.id, record.name, record.key_sha256, record.scopes, at(created))


@dataclass
class Subject:
    """A key store under test, and another handle on the same keys (another process's view:
    a new file store on the same file, a new connection, the same pool)."""

    store: KeyStore
    reopen: Callable[[], KeyStore]


def _clean(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE api_keys")


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("file", marks=pytest.mark.unit),
        pytest.param("postgres-connecting", marks=pytest.mark.integration),
        pytest.param("postgres-pool", marks=pytest.mark.integration),
    ]
)
def keys(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Subject]:
    if request.param == "memory":
        store = MemoryKeyStore()
        yield Subject(store, lambda: store)
        return
    if request.param == "file":
        path = tmp_path_factory.mktemp("keys") / "nested" / "api_keys.json"
        yield Subject(FileKeyStore(path), lambda: FileKeyStore(path))
        return
    url = request.getfixturevalue("database_url")
    _clean(url)
    try:
        if request.param == "postgres-connecting":
            yield Subject(
                PostgresKeyStore.connecting(url), lambda: PostgresKeyStore.connecting(url)
            )
            return
        with postgres.open_pool(url, **POOL) as pool:
            on_pool = PostgresKeyStore.on_pool(pool, timeout_s=POOL["timeout_s"])
            yield Subject(on_pool, lambda: PostgresKeyStore.on_pool(pool, timeout_s=2.0))
    finally:
        _clean(url)


def test_an_empty_store_has_no_keys(keys: Subject) -> None:
    assert keys.store.all() == []
    keys.store.touch({})
    keys.store.touch({"0123456789ab": at(1)})
    assert keys.store.revoke("0123456789ab", at(2)) is None
    assert keys.store.all() == []


def test_added_keys_read_back_exactly_oldest_first(keys: Subject) -> None:
    late, early, middle = (
        key("late", created=30),
        key("early", created=-5),
        key("middle", created=7),
    )
    both = key("ops", created=10, scopes=("predict", "admin"))
    for record in (late, early, both, middle):
        keys.store.add(record)
    assert keys.store.all() == [early, middle, both, late]
    assert keys.reopen().all() == [early, middle, both, late]
    (read,) = [k for k in keys.store.all() if k.id == early.id]
    assert read.created_at == early.created_at
    assert read.created_at.utcoffset() is not None  # an instant, never a naive time
    assert read.active
    assert read.last_used_at is None
    assert read.revoked_at is None


def test_a_second_key_with_the_same_id_is_refused(keys: Subject) -> None:
    first = key("first")
    keys.store.add(first)
    with pytest.raises((ValueError, StoreError)):
        keys.store.add(ApiKey(first.id, "second", key("x").key_sha256, ("admin",), at(1)))
    assert keys.store.all() == [first]


def test_revoke_marks_the_key_and_a_second_revoke_keeps_the_first_time(keys: Subject) -> None:
    alice, bob = key("alice"), key("bob", created=1)
    keys.store.add(alice)
    keys.store.add(bob)
    revoked = keys.store.revoke(alice.id, at(60))
    assert revoked is not None
    assert (revoked.id, revoked.name, revoked.revoked_at) == (alice.id, "alice", at(60))
    assert not revoked.active
    again = keys.reopen().revoke(alice.id, at(120))
    assert again is not None
    assert again.revoked_at == at(60)  # the first revocation stands
    assert keys.store.revoke(alice.id, at(30)) == revoked  # nor does an earlier time move it
    assert keys.store.all() == [revoked, bob]
    assert keys.store.revoke("0123456789ab", at(61)) is None  # unknown: nothing to revoke
    assert keys.store.all() == [revoked, bob]


def test_touch_moves_last_use_forward_only_and_ignores_unknown_ids(keys: Subject) -> None:
    alice, bob = key("alice"), key("bob", created=1)
    keys.store.add(alice)
    keys.store.add(bob)
    keys.store.touch({alice.id: at(10), "0123456789ab": at(10)})
    assert [(k.id, k.last_used_at) for k in keys.store.all()] == [
        (alice.id, at(10)),
        (bob.id, None),
    ]
    keys.store.touch({alice.id: at(5), bob.id: at(7)})  # alice's time does not move back
    assert [k.last_used_at for k in keys.store.all()] == [at(10), at(7)]
    keys.reopen().touch({alice.id: at(20)})
    keys.store.touch({})
    assert [k.last_used_at for k in keys.store.all()] == [at(20), at(7)]
    assert {k.id for k in keys.store.all()} == {alice.id, bob.id}  # no key made by a touch
    assert keys.store.revoke(bob.id, at(30)) is not None
    keys.store.touch({bob.id: at(40)})  # a request admitted just before the revocation
    (_, stored_bob) = keys.store.all()
    assert (stored_bob.last_used_at, stored_bob.revoked_at) == (at(40), at(30))


def test_touches_and_a_revoke_from_two_handles_do_not_undo_each_other(keys: Subject) -> None:
    """The server's workers record last uses while the command line revokes: every write
    lands (the keys file is rewritten whole, under a lock)."""
    alice, bob = key("alice"), key("bob", created=1)
    keys.store.add(alice)
    keys.store.add(bob)
    errors: list[BaseException] = []

    def touches(worker: int) -> None:
        store = keys.reopen()
        try:
            for i in range(15):
                store.touch({alice.id: at(100 + 10 * i + worker), bob.id: at(100 + i)})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=touches, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    assert keys.store.revoke(alice.id, at(50)) is not None
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    stored_alice, stored_bob = keys.store.all()
    assert stored_alice.revoked_at == at(50)
    assert stored_alice.last_used_at == at(100 + 10 * 14 + 2)
    assert stored_bob.last_used_at == at(114)
    assert stored_bob.revoked_at is None
