"""Model reload under load, end to end: a real server with two worker processes, clients
busy on both routes, while the ``current`` pointer moves and ``POST /admin/reload`` or a
SIGHUP to the server asks for the new model. Nothing may be lost: every request answered 200,
each by one of the two models, and in the end every worker serves the new one."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from fraudscore_adapters.xgb import versions
from tests.e2e.conftest import Served, bearer, serve
from tests.support import model_version_of, tamper

pytestmark = pytest.mark.e2e

CLIENTS = 8
WORKERS = "2"


@pytest.fixture
def root(model_root: Path) -> Path:
    """Two versions, A and B; ``current`` names A."""
    return model_root


class Load:
    """``CLIENTS`` threads, each with a keep-alive connection of its own, posting to both
    routes until stopped; every answer kept (status, model version, when)."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.answers: list[tuple[int, str, float]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(CLIENTS)

    def __enter__(self) -> Load:
        for n in range(CLIENTS):
            self._pool.submit(self._client, n)
        return self

    def _client(self, n: int) -> None:
        with httpx.Client(base_url=self.served.base, headers=self.served.auth, timeout=10) as c:
            i = n
            while not self._stop.is_set():
                try:
                    response = c.post(f"/predict/{('sync', 'async')[i % 2]}/{i % 500}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                version = response.json().get("model_version", "") if response.is_success else ""
                self.answers.append((response.status_code, version, time.monotonic()))
                if not response.is_success:
                    self.failures.append(response.text)
                i += CLIENTS

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)


def workers_serving(
    served: Served, admin: str, want: str, within_s: float = 15.0
) -> dict[int, Any]:
    """Ask ``GET /admin/model`` on fresh connections (each lands on whichever worker accepts
    it) until both workers were seen serving the version ``want``; their answers by pid."""
    seen: dict[int, Any] = {}
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        status = httpx.get(f"{served.base}/admin/model", headers=bearer(admin), timeout=5)
        if status.status_code == 401:  # a new key: not every worker has re-read the keys yet
            time.sleep(0.05)
            continue
        assert status.status_code == 200, status.text
        body = status.json()
        if body["serving"]["version"] == want:
            seen[body["worker_pid"]] = body
        else:
            seen.pop(body["worker_pid"], None)
        if len(seen) == int(WORKERS):
            return seen
        time.sleep(0.02)
    pytest.fail(f"not every worker serves {want} within {within_s} s: {seen}")


def settle(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.fixture
def two_workers(
    root: Path, tiny_model: tuple[Path, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Served]:
    watch_s = request.param
    settings = {"FRAUDSCORE_WORKERS": WORKERS, "FRAUDSCORE_MODEL_WATCH_S": watch_s}
    with serve(tmp_path, tiny_model[0], root, None, settings=settings) as served:
        yield served


@pytest.mark.parametrize("two_workers", ["0.5"], indirect=True)
def test_reloads_under_load_lose_nothing_and_every_worker_converges(
    two_workers: Served, root: Path
) -> None:
    served = two_workers
    a, b = versions.versions(root)
    admin = served.create_key("operator", "admin")
    before = workers_serving(served, admin, a)
    with Load(served) as load:
        time.sleep(0.5)
        reloads = []
        for i in range(6):
            versions.use(root, b if i % 2 == 0 else a)
            reloads.append(httpx.post(f"{served.base}/admin/reload", headers=bearer(admin)))
            time.sleep(0.4)
        versions.use(root, b)
        moved = time.monotonic()
        last = httpx.post(f"{served.base}/admin/reload", headers=bearer(admin))
        after = workers_serving(served, admin, b)
        converged = time.monotonic()
        time.sleep(1.0)
    assert load.failures == []
    assert len(load.answers) > 100
    assert {status for status, _, _ in load.answers} == {200}
    assert {version for _, version, _ in load.answers} == {
        model_version_of(root, a),
        model_version_of(root, b),
    }
    late = [version for _, version, at in load.answers if at > converged + 0.1]
    assert late
    assert set(late) == {model_version_of(root, b)}
    assert [r.status_code for r in [*reloads, last]] == [200] * 7
    assert set(after) == set(before)  # the same two processes: reloaded in place
    assert converged - moved < 0.5 + 5  # the watch interval plus a load, with room
    assert all(s["last_reload"]["outcome"] in ("loaded", "already-serving") for s in after.values())


@pytest.mark.parametrize("two_workers", ["3600"], indirect=True)
def test_sighup_reloads_every_worker_in_place_and_a_bad_model_is_refused(
    two_workers: Served, root: Path
) -> None:
    """The watcher is an hour away: only the SIGHUP can do it. Granian's own SIGHUP would
    respawn the workers (and stop the server when a new one fails to start); here the
    worker processes stay, each reloads, and a broken model is refused while B serves on."""
    served = two_workers
    a, b = versions.versions(root)
    admin = served.create_key("operator", "admin")
    before = workers_serving(served, admin, a)
    with Load(served) as load:
        time.sleep(0.5)
        versions.use(root, b)
        os.kill(served.process.pid, signal.SIGHUP)
        after = workers_serving(served, admin, b)
        assert all(s["last_reload"]["trigger"] == "SIGHUP" for s in after.values())
        broken = tamper(root, a)  # A, its model.pkl a byte longer than its manifest says
        versions.use(root, broken)
        os.kill(served.process.pid, signal.SIGHUP)
        refused: dict[int, Any] = {}

        def both_refused() -> bool:
            body = httpx.get(f"{served.base}/admin/model", headers=bearer(admin)).json()
            if body["last_reload"]["outcome"] == "refused":
                refused[body["worker_pid"]] = body
            return len(refused) == int(WORKERS)

        settle(both_refused)
        time.sleep(0.5)
    assert load.failures == []
    assert {status for status, _, _ in load.answers} == {200}
    assert set(after) == set(before)  # no worker was respawned
    assert served.process.poll() is None  # and the server is up
    for body in refused.values():
        assert body["serving"]["version"] == b
        assert "fails its integrity check" in body["last_reload"]["detail"]
    assert load.answers[-1][1] == model_version_of(root, b)
