"""API keys, the key file, token buckets and the gate, without a server."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import multiprocessing
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fraudscore_adapters.access import (
    ApiKey,
    FileKeyStore,
    Forbidden,
    Gate,
    KeysUnavailable,
    MemoryKeyStore,
    RateLimited,
    TokenBuckets,
    Unauthenticated,
    key_sha256,
    mint,
    refresh,
)
from fraudscore_adapters.access.gate import bearer
from fraudscore_adapters.access.keyfile import KeyFileError
from fraudscore_adapters.access.keys import KeyProblem, check_id

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _gate(*records: ApiKey, rate: float = 1000.0, burst: int = 10) -> Gate:
    gate = Gate(rate=rate, burst=burst, max_stale_s=60.0)
    gate.load(records)
    return gate


def _auth(key: str) -> bytes:
    return f"Bearer {key}".encode()


def test_a_minted_key_is_random_and_only_its_hash_is_kept() -> None:
    record, key = mint("ci", ["predict"])
    other, other_key = mint("ci", ["predict"])
    assert key.startswith(f"fsk_{record.id}_")
    assert len(key) == 4 + 12 + 1 + 43
    assert key != other_key
    assert record.id != other.id
    assert record.key_sha256 == hashlib.sha256(key.encode()).hexdigest() == key_sha256(key)
    assert key not in repr(record)
    assert key.split("_", 2)[2] not in repr(record)
    assert record.scopes == ("predict",)
    assert record.active


@pytest.mark.parametrize(
    ("name", "scopes"),
    [("", ["predict"]), ("x" * 101, ["predict"]), ("tab\there", ["predict"]), ("ok", []),
     ("ok", ["root"])],
)  # fmt: skip
def test_bad_names_and_scopes_are_refused(name: str, scopes: list[str]) -> None:
    with pytest.raises(KeyProblem):
        mint(name, scopes)


def test_scopes_are_deduplicated_in_a_fixed_order() -> None:
    record, _ = mint("ops", ["admin", "predict", "admin"])
    assert record.scopes == ("predict", "admin")


@pytest.mark.parametrize("key_id", ["", "ABCDEF012345", "abc", "0123456789abc", "g12345678901"])
def test_key_ids_have_one_shape(key_id: str) -> None:
    with pytest.raises(KeyProblem):
        check_id(key_id)


@pytest.mark.parametrize(
    ("header", "key"),
    [(None, b""), (b"", b""), (b"Basic abc", b""), (b"Bearer", b""), (b"Bearer k", b"k"),
     (b"bearer  k ", b"k"), (b"BEARER k", b"k")],
)  # fmt: skip
def test_bearer_reads_only_bearer_credentials(header: bytes | None, key: bytes) -> None:
    assert bearer(header) == key


def test_the_gate_admits_a_valid_key_and_names_it() -> None:
    record, key = mint("ci", ["predict"])
    gate = _gate(record)
    assert gate.admit(_auth(key), "predict") == record.id
    used = gate.take_used()
    assert set(used) == {record.id}
    assert gate.take_used() == used  # until written back
    gate.saved(used)
    assert gate.take_used() == {}


def test_every_unauthenticated_cause_gets_the_same_error() -> None:
    record, key = mint("ci", ["predict"])
    revoked, revoked_key = mint("old", ["predict"])
    gate = _gate(record, dataclasses.replace(revoked, revoked_at=T0))
    causes = [None, b"", b"Basic " + key.encode(), b"Bearer", _auth(key + "x"), _auth(key[:-1]),
              _auth("fsk_" + record.id + "_guess"), _auth(revoked_key)]  # fmt: skip
    messages = set()
    for header in causes:
        with pytest.raises(Unauthenticated) as caught:
            gate.admit(header, "predict")
        messages.add(str(caught.value))
    assert len(messages) == 1
    assert gate.take_refused() == {"unauthenticated": len(causes)}


def test_a_key_without_the_scope_is_forbidden() -> None:
    record, key = mint("ops", ["admin"])
    gate = _gate(record)
    with pytest.raises(Forbidden, match="lacks the `predict` scope"):
        gate.admit(_auth(key), "predict")
    assert gate.admit(_auth(key), "admin") == record.id


def test_stale_keys_fail_closed() -> None:
    record, key = mint("ci", ["predict"])
    never = Gate(rate=10, burst=10, max_stale_s=0.05)
    with pytest.raises(KeysUnavailable, match="could not be read yet"):
        never.admit(_auth(key), "predict")
    assert never.freshness() != "ok"
    gate = Gate(rate=10, burst=10, max_stale_s=0.0)
    gate.load([record])
    with pytest.raises(KeysUnavailable):
        gate.admit(_auth(key), "predict")


def test_rate_limits_are_per_key_and_say_when_to_retry() -> None:
    first, first_key = mint("a", ["predict"])
    second, second_key = mint("b", ["predict"])
    gate = _gate(first, second, rate=0.5, burst=2)
    gate.admit(_auth(first_key), "predict")
    gate.admit(_auth(first_key), "predict")
    with pytest.raises(RateLimited) as caught:
        gate.admit(_auth(first_key), "predict")
    assert caught.value.retry_after_s == 2  # one token at 0.5/s
    assert gate.admit(_auth(second_key), "predict") == second.id
    assert gate.take_refused() == {first.id: 1}


def test_token_buckets_allow_a_burst_then_the_rate() -> None:
    buckets = TokenBuckets(rate=10.0, burst=3)
    assert [buckets.take("k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", 0.0) == pytest.approx(0.1)
    assert buckets.take("k", 0.05) == pytest.approx(0.05)  # half a token saved meanwhile
    assert buckets.take("k", 0.1) == 0.0
    assert [buckets.take("k", 100.0) for _ in range(4)][-1] > 0  # never more than the burst
    with pytest.raises(ValueError, match="rate above 0"):
        TokenBuckets(rate=0, burst=1)


def test_the_key_file_keeps_hashes_only_with_owner_only_access(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "sub" / "keys.json")
    assert store.all() == []
    record, key = mint("ci", ["predict", "admin"])
    store.add(record)
    text = store.path.read_text()
    assert key not in text
    assert key.split("_", 2)[2] not in text
    assert record.key_sha256 in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.all() == [record]
    with pytest.raises(ValueError, match="exists"):
        store.add(record)


def test_the_key_file_revokes_once_and_never_moves_last_use_back(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys.json")
    record, _ = mint("ci", ["predict"])
    store.add(record)
    store.touch({record.id: T0, "000000000000": T0})
    store.touch({record.id: T0 - timedelta(hours=1)})
    assert store.all()[0].last_used_at == T0
    revoked = store.revoke(record.id, T0)
    assert revoked is not None
    assert revoked.revoked_at == T0
    again = store.revoke(record.id, T0 + timedelta(days=1))
    assert again is not None
    assert again.revoked_at == T0
    assert store.revoke("0123456789ab", T0) is None


@pytest.mark.parametrize("content", ["{", "[]", '{"version": 2, "keys": []}', '{"version": 1}'])
def test_a_malformed_key_file_is_an_error_naming_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(KeyFileError, match=str(path)):
        FileKeyStore(path).all()


def _touch_many(path: Path, key_id: str, hours: int) -> None:
    store = FileKeyStore(path)
    for h in range(hours):
        store.touch({key_id: T0 + timedelta(hours=h)})


def test_concurrent_writers_of_the_key_file_lose_nothing(tmp_path: Path) -> None:
    """Workers recording last use while the CLI adds and revokes keys: the lock serialises
    their read-modify-write cycles, so no change undoes another."""
    store = FileKeyStore(tmp_path / "keys.json")
    records = [mint(f"k{i}", ["predict"])[0] for i in range(2)]
    for record in records:
        store.add(record)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_touch_many, args=(store.path, r.id, 40)) for r in records]
    for worker in workers:
        worker.start()
    added = [mint(f"new{i}", ["predict"])[0] for i in range(20)]
    for record in added:
        store.add(record)
    store.revoke(records[0].id, T0)
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    final = {k.id: k for k in store.all()}
    assert set(final) == {r.id for r in records + added}
    assert final[records[0].id].revoked_at == T0
    assert all(final[r.id].last_used_at == T0 + timedelta(hours=39) for r in records)


class _FailingStore(MemoryKeyStore):
    def __init__(self, *keys: ApiKey) -> None:
        super().__init__(keys)
        self.fail = False

    def all(self) -> list[ApiKey]:
        if self.fail:
            raise OSError("disk gone")
        return super().all()


def test_refresh_writes_use_back_and_logs_ids_never_keys(caplog: pytest.LogCaptureFixture) -> None:
    record, key = mint("ci", ["predict"])
    store = _FailingStore(record)
    gate = Gate(rate=1.0, burst=1, max_stale_s=60.0)
    caplog.set_level(logging.DEBUG)
    asyncio.run(refresh(gate, store))
    gate.admit(_auth(key), "predict")
    with pytest.raises(RateLimited):
        gate.admit(_auth(key), "predict")
    with pytest.raises(Unauthenticated):
        gate.admit(_auth("fsk_nope"), "predict")
    asyncio.run(refresh(gate, store))
    (stored,) = store.all()
    assert stored.last_used_at is not None
    assert record.id in caplog.text
    assert "rate limit" in caplog.text
    store.fail = True
    asyncio.run(refresh(gate, store))
    assert "disk gone" in caplog.text
    assert gate.freshness() == "ok"
    assert "disk gone" in gate.problem
    assert key not in caplog.text
    assert key.split("_", 2)[2] not in caplog.text
