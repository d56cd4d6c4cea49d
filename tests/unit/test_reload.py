"""Model reload without downtime: the swap, the checks a new model must pass (the old one
serving meanwhile), pins and vouches, the watcher, SIGHUP and the admin routes. Real tiny
models throughout (two of them, trained on the same data with other seeds: other trees, other
model versions)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from litestar.testing import TestClient

from fraudscore import Application, ModelUnavailable, Scores
from fraudscore.ports import Scorer
from fraudscore_adapters.access import MemoryKeyStore, mint
from fraudscore_adapters.bootstrap import Parts, Stores, build_app
from fraudscore_adapters.http import FastPredictRoutes
from fraudscore_adapters.memory import MemoryFeatureStore, MemoryPredictionSink
from fraudscore_adapters.reloading import (
    Loaded,
    ModelRefused,
    Reloader,
    SwappableScorer,
    VersionError,
    Vouches,
    load_xgb,
)
from fraudscore_adapters.settings import Settings
from fraudscore_adapters.xgb import XGBScorer, versions
from fraudscore_adapters.xgb.scorer import probe_applications
from fraudscore_adapters.xgb.versions import Located
from tests.support import application, model_version_of, pin_of, tamper, version_names

pytestmark = pytest.mark.unit


@pytest.fixture
def root(model_root: Path) -> Path:
    """Two versions, A then B; ``current`` names A."""
    return model_root


def reloader_of(root: Path, **options: Any) -> Reloader:
    return asyncio.run(Reloader.open(root, pins=options.pop("pins", None), **options))


# --- the swap --------------------------------------------------------------------------------


def test_every_batch_is_scored_by_one_model_while_models_swap(root: Path) -> None:
    """Threads score batches nonstop while the model is swapped 20 times: every batch's
    probabilities are exactly one model's, and carry that model's version."""
    a, b = version_names(root)
    probes = probe_applications(9)
    expected = {
        model.model_version: list(model.score(probes).probabilities)
        for model in (XGBScorer.load(root / "versions" / v) for v in (a, b))
    }
    reloader = reloader_of(root)
    results: list[Scores] = []
    done = threading.Event()

    def score() -> None:
        while not done.is_set():
            results.append(reloader.scorer.score(probes))

    async def swaps() -> list[str]:
        outcomes = []
        for i in range(20):
            versions.use(root, b if i % 2 == 0 else a)
            outcomes.append((await reloader.reload()).outcome)
            await asyncio.sleep(0.005)
        return outcomes

    threads = [threading.Thread(target=score) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        outcomes = asyncio.run(swaps())
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert outcomes == ["loaded"] * 20
    assert {r.model_version for r in results} == set(expected)
    for result in results:
        assert list(result.probabilities) == expected[result.model_version]


def test_explain_is_passed_on_only_when_given() -> None:
    calls: list[object] = []

    class Plain:
        def score(self, applications: Sequence[Application]) -> Scores:
            calls.append("plain")
            return Scores([0.1] * len(applications), 0.5, "plain")

    class Explaining:
        def score(
            self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
        ) -> Scores:
            calls.append(explain)
            return Scores([0.2] * len(applications), 0.5, "explaining")

    apps = [application()]
    plain = cast(Scorer, Plain())  # a scorer written before the port took `explain`
    assert SwappableScorer(Loaded.wired(plain)).score(apps).model_version == "plain"
    swappable = SwappableScorer(Loaded.wired(Explaining()))
    swappable.score(apps)
    swappable.score(apps, explain=[True])
    assert calls == ["plain", None, [True]]


def test_reloading_the_same_model_is_a_no_op(root: Path) -> None:
    reloader = reloader_of(root)
    before = reloader.scorer.loaded
    attempt = asyncio.run(reloader.reload())
    assert attempt.outcome == "already-serving"
    assert "already serving" in attempt.detail
    assert reloader.scorer.loaded is before


def test_the_one_place_a_model_starts_serving_calls_the_hooks(root: Path) -> None:
    _, b = version_names(root)
    reloader = reloader_of(root)
    served: list[tuple[str, str]] = []
    reloader.on_serving.append(
        lambda loaded: served.append((loaded.model_version, reloader.scorer.loaded.model_version))
    )
    attempt = asyncio.run(reloader.reload(version=b))
    assert served == [(model_version_of(root, b),) * 2]  # called after the swap
    assert attempt.replaced is not None
    with pytest.raises(ModelUnavailable, match="replaced"):  # the record keeps no model
        attempt.replaced.scorer.score(probe_applications(1))


# --- what a new model must pass --------------------------------------------------------------


def refused_keeps_serving(reloader: Reloader, call: Callable[[], Any], match: str) -> str:
    """``call()`` raises ModelRefused matching ``match``; the old model still serves; the
    refusal is the last attempt. The refusal's message."""
    before = reloader.scorer.loaded
    probes = probe_applications(3)
    with pytest.raises(ModelRefused, match=match) as refused:
        asyncio.run(call())
    assert reloader.scorer.loaded is before
    assert reloader.scorer.score(probes).model_version == before.model_version
    assert reloader.last is not None
    assert reloader.last.outcome == "refused"
    assert f"still serving {before.model_version}" in str(refused.value)
    return str(refused.value)


def test_a_tampered_pickle_is_refused_and_the_old_model_keeps_serving(root: Path) -> None:
    _, b = version_names(root)
    bad = tamper(root, b)
    reloader = reloader_of(root)
    refused_keeps_serving(
        reloader, lambda: reloader.reload(version=bad), "model.pkl fails its integrity check"
    )
    assert versions.pointer(root, "current") != bad  # refused: the pointer did not move
    versions.use(root, bad)  # moved by hand: the same refusal
    refused_keeps_serving(reloader, reloader.reload, "fails its integrity check")


def test_a_failing_self_check_is_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, b = version_names(root)
    reloader = reloader_of(root)

    def disagree(self: XGBScorer) -> None:
        raise ModelUnavailable("in-place prediction disagrees with predict_proba")

    monkeypatch.setattr(XGBScorer, "self_check", disagree)
    refused_keeps_serving(reloader, lambda: reloader.reload(version=b), "disagrees")


def test_a_pinned_server_loads_only_a_pinned_or_vouched_for_model(
    root: Path, tmp_path: Path
) -> None:
    a, b = version_names(root)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    pinned = frozenset({pin_of(root, a)})
    worker1 = reloader_of(root, pins=pinned, vouches=Vouches(run_dir))
    worker2 = reloader_of(root, pins=pinned, vouches=Vouches(run_dir))
    versions.use(root, b)
    message = refused_keeps_serving(worker1, worker1.reload, "is not the pinned model")
    assert 'POST /admin/reload {"sha256"' in message
    wrong = hashlib.sha256(b"another model").hexdigest()
    refused_keeps_serving(
        worker1, lambda: worker1.reload(sha256=wrong), f"not the {wrong[:16]}... asked for"
    )
    assert asyncio.run(worker2.follow()) is None  # not pinned, not vouched: refused, logged
    assert worker2.last is not None
    assert worker2.last.outcome == "refused"

    attempt = asyncio.run(worker1.reload(sha256=pin_of(root, b).upper()))
    assert attempt.outcome == "loaded"
    assert worker1.scorer.loaded.model_version == model_version_of(root, b)
    # the vouch reached the other worker through the run folder: its watcher loads B
    followed = asyncio.run(worker2.follow())
    assert followed is not None
    assert followed.outcome == "loaded"
    assert worker2.scorer.loaded.sha256 == pin_of(root, b)


def test_a_run_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    shared.chmod(0o777)
    with pytest.raises(ModelUnavailable, match="mode 0700"):
        Vouches(shared)


def test_a_model_handed_in_cannot_be_reloaded() -> None:
    reloader = Reloader.wired(XGBScorerStub())
    with pytest.raises(VersionError, match="nothing to reload"):
        asyncio.run(reloader.reload())
    with pytest.raises(VersionError, match="nothing to reload"):
        asyncio.run(reloader.rollback())


class XGBScorerStub:
    model_version = "stub-1"
    threshold = 0.5

    def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        return Scores([0.5] * len(applications), self.threshold, self.model_version)


# --- the watcher and SIGHUP ------------------------------------------------------------------


def counting_loads(calls: list[str]) -> Callable[[Located, str], Loaded]:
    def load(located: Located, sha256: str) -> Loaded:
        calls.append(located.version or "")
        return load_xgb(located, sha256)

    return load


def test_the_watcher_follows_current_and_retries_a_refused_model_only_on_a_change(
    root: Path,
) -> None:
    a, b = version_names(root)
    bad = tamper(root, a)  # A's manifest, A's path no more: tried, and refused
    loads: list[str] = []
    reloader = reloader_of(root, load=counting_loads(loads))

    async def scenario() -> None:
        async with reloader.running(0.02):
            versions.use(root, b)
            await until(lambda: reloader.scorer.loaded.version == b)
            versions.use(root, bad)
            await until(lambda: reloader.last is not None and reloader.last.outcome == "refused")
            await asyncio.sleep(0.3)  # 15 more checks: the same refused model, not retried
            assert loads.count(bad) == 1
            assert reloader.scorer.loaded.version == b
            await reloader.follow("SIGHUP", force=True)  # forced: tried again
            assert loads.count(bad) == 2
            versions.use(root, a)
            await until(lambda: reloader.scorer.loaded.version == a)

    asyncio.run(scenario())
    assert loads == [a, b, bad, bad, a]


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "not within the bound"
        await asyncio.sleep(0.01)


def test_sighup_makes_the_worker_load_current_now(root: Path) -> None:
    """In a worker's main thread a SIGHUP reloads at once (the watcher an hour away)."""
    _, b = version_names(root)
    reloader = reloader_of(root)

    async def scenario() -> None:
        async with reloader.running(3600):
            assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN)
            versions.use(root, b)
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: reloader.scorer.loaded.version == b)

    before = signal.getsignal(signal.SIGHUP)
    asyncio.run(scenario())
    assert reloader.last is not None
    assert reloader.last.trigger == "SIGHUP"
    assert signal.getsignal(signal.SIGHUP) == before  # restored at exit


# --- the admin routes ------------------------------------------------------------------------


class Service:
    """An app from the composition root: the model from an artifact root, memory stores,
    one key per scope."""

    def __init__(self, root: Path, users: int = 40, **settings: Any) -> None:
        self.store = MemoryFeatureStore()
        self.applications = {}
        for user in range(users):
            found = application(
                customer_age=20 + user % 60, housing_status=("BA", "BB", "BC")[user % 3]
            )
            self.applications[user] = found
            self.store.add(user, found)
        self.sink = MemoryPredictionSink()
        keys = MemoryKeyStore()
        record, self.predict_key = mint("predictor", ["predict"])
        keys.add(record)
        record, self.admin_key = mint("operator", ["admin"])
        keys.add(record)
        parts = Parts(stores=Stores.in_memory(self.store, self.sink), keys=keys)
        self.app: Any = build_app(Settings(artifact_dir=root, **settings), parts)

    def client(self) -> TestClient[Any]:
        return TestClient(self.app)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/admin/reload"), ("POST", "/admin/rollback"), ("GET", "/admin/model")],
)
def test_the_admin_routes_need_the_admin_scope(root: Path, method: str, path: str) -> None:
    service = Service(root)
    with service.client() as client:
        missing = client.request(method, path)
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.headers["www-authenticate"] == 'Bearer realm="fraudscore"'
        predict_only = client.request(method, path, headers=auth(service.predict_key))
        assert predict_only.status_code == 403
        assert predict_only.json()["type"] == "/problems/forbidden"
        assert 'scope="admin"' in predict_only.headers["www-authenticate"]
        admin = client.request(method, path, headers=auth(service.admin_key))
        assert admin.status_code == 200, admin.text
        # and the admin key is no predict key
        denied = client.post("/predict/sync/1", headers=auth(service.admin_key))
        assert denied.status_code == 403
    assert versions.pointer(root, "current") in versions.versions(root)


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_reload_under_load_loses_nothing_and_each_answer_names_its_model(
    root: Path, fast_path: str
) -> None:
    """Clients keep both routes busy while `current` moves and POST /admin/reload is sent 6
    times: every request gets a 200, its model_version is A or B, its probability is that
    model's own, its prediction is recorded as answered; both models answered."""
    a, b = version_names(root)
    models = {
        model.model_version: model
        for model in (XGBScorer.load(root / "versions" / v) for v in (a, b))
    }
    service = Service(root, fast_path=fast_path, model_watch_s=3600)
    answers: list[tuple[int, dict[str, Any]]] = []
    done = threading.Event()

    with service.client() as client:

        def load(worker: int) -> None:
            i = worker
            while not done.is_set():
                route = ("sync", "async")[i % 2]
                response = client.post(
                    f"/predict/{route}/{i % 40}", headers=auth(service.predict_key)
                )
                answers.append((response.status_code, response.json()))
                i += 4

        threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        reloads = []
        try:
            for i in range(6):
                time.sleep(0.15)
                versions.use(root, b if i % 2 == 0 else a)
                reloads.append(client.post("/admin/reload", headers=auth(service.admin_key)))
            time.sleep(0.15)
        finally:
            done.set()
            for thread in threads:
                thread.join()
    assert [r.status_code for r in reloads] == [200] * 6, [r.text for r in reloads]
    assert [r.json()["outcome"] for r in reloads] == ["loaded"] * 6
    assert [r.json()["serving"]["version"] for r in reloads] == [b, a] * 3
    assert {status for status, _ in answers} == {200}
    assert {body["model_version"] for _, body in answers} == set(models)
    for _, body in answers:
        scored = models[body["model_version"]].score([service.applications[body["user_id"]]])
        assert body["probability"] == scored.probabilities[0]
        assert body["threshold"] == scored.threshold
    recorded = {str(p.prediction_id): p.model_version for p in service.sink.records}
    assert {body["prediction_id"]: body["model_version"] for _, body in answers} == recorded


def test_a_refused_reload_answers_422_saying_why_and_the_old_model_serves(root: Path) -> None:
    a, b = version_names(root)
    bad = tamper(root, b)
    service = Service(root)
    with service.client() as client:
        admin = auth(service.admin_key)
        refused = client.post("/admin/reload", json={"version": bad}, headers=admin)
        assert refused.status_code == 422
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["type"] == "/problems/model-refused"
        assert "fails its integrity check" in problem["detail"]
        assert f"still serving {model_version_of(root, a)}" in problem["detail"]
        served = client.post("/predict/async/3", headers=auth(service.predict_key))
        assert served.json()["model_version"] == model_version_of(root, a)
        status = client.get("/admin/model", headers=admin).json()
        assert status["serving"]["version"] == a
        assert status["last_reload"]["outcome"] == "refused"
        assert "integrity" in status["last_reload"]["detail"]
        assert status["current"] == a  # refused: the pointer did not move


def test_reload_to_a_version_and_rollback_move_the_pointers(root: Path) -> None:
    a, b = version_names(root)
    service = Service(root)
    with service.client() as client:
        admin = auth(service.admin_key)
        moved = client.post("/admin/reload", json={"version": b}, headers=admin).json()
        assert (moved["outcome"], moved["serving"]["version"]) == ("loaded", b)
        assert moved["replaced"]["version"] == a
        assert moved["serving"]["sha256"] == pin_of(root, b)
        assert (versions.pointer(root, "current"), versions.pointer(root, "previous")) == (b, a)
        back = client.post("/admin/rollback", headers=admin).json()
        assert (back["outcome"], back["serving"]["version"]) == ("loaded", a)
        assert (versions.pointer(root, "current"), versions.pointer(root, "previous")) == (a, b)
        status = client.get("/admin/model", headers=admin).json()
        assert (status["current"], status["previous"]) == (a, b)
        assert status["current_sha256"] == pin_of(root, a)
        assert status["serving"]["model_version"] == model_version_of(root, a)
        assert status["last_reload"]["trigger"] == "rollback"
        assert status["worker_pid"] == os.getpid()
        assert status["watch_s"] == 1.0
        assert status["pinned"] is False
        again = client.post("/admin/reload", headers=admin).json()
        assert again["outcome"] == "already-serving"


def test_the_metrics_follow_the_model_that_serves(root: Path) -> None:
    """The metrics' "a model now serves" call runs at start and at every swap: the model
    version gauge moves to the new model (and its drift window restarts)."""
    a, b = version_names(root)
    service = Service(root)
    with service.client() as client:
        admin = auth(service.admin_key)

        def info() -> dict[str, str]:
            text = client.get("/metrics").text
            found = re.findall(
                r'^fraudscore_model_info\{model_version="([^"]+)"\} (\S+)$', text, re.M
            )
            return dict(found)

        assert info() == {model_version_of(root, a): "1.0"}
        client.post("/admin/reload", json={"version": b}, headers=admin)
        assert info() == {model_version_of(root, a): "0.0", model_version_of(root, b): "1.0"}
        client.post("/admin/rollback", headers=admin)
        assert info() == {model_version_of(root, a): "1.0", model_version_of(root, b): "0.0"}


@pytest.mark.parametrize("seen", ["by access()", "at the rename"])
def test_a_read_only_artifact_folder_answers_409_and_serves_on(
    root: Path, monkeypatch: pytest.MonkeyPatch, seen: str
) -> None:
    """Least privilege: a server that may only read its artifact folder cannot move the
    pointer; it says so and what to do, and keeps serving what it served. Seen up front
    (access(2): no model is loaded for nothing), or only when the link is renamed."""
    a, b = version_names(root)
    loads: list[Path] = []
    real_load = XGBScorer.load

    def counted(path: Path, **options: Any) -> XGBScorer:
        loads.append(path)
        return real_load(path, **options)

    def read_only(*_: object) -> None:
        raise PermissionError(30, "Read-only file system")

    service = Service(root)
    with service.client() as client:
        monkeypatch.setattr(XGBScorer, "load", counted)
        if seen == "by access()":
            monkeypatch.setattr("fraudscore_adapters.reloading.os.access", lambda *_: False)
        else:
            monkeypatch.setattr(versions, "_point", read_only)
        admin = auth(service.admin_key)
        for response in (
            client.post("/admin/rollback", headers=admin),
            client.post("/admin/reload", json={"version": b}, headers=admin),
        ):
            assert response.status_code == 409
            assert response.json()["type"] == "/problems/model-switch-refused"
            assert "model use VERSION" in response.json()["detail"]
        served = client.post("/predict/sync/3", headers=auth(service.predict_key)).json()
        assert served["model_version"] == model_version_of(root, a)
        assert client.post("/admin/reload", headers=admin).json()["outcome"] == "already-serving"
    assert len(loads) == (0 if seen == "by access()" else 2)
    assert versions.pointer(root, "current") == a


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"sha256": "abc"}, 400),
        ({"version": "../../etc"}, 400),
        ({"versoin": "x"}, 400),
        ({"version": "20990101T000000Z-xgb-000000000000"}, 409),
    ],
)
def test_a_bad_reload_body_is_refused(root: Path, body: dict[str, str], status: int) -> None:
    service = Service(root)
    with service.client() as client:
        answer = client.post("/admin/reload", json=body, headers=auth(service.admin_key))
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"


def test_a_pinned_server_answers_why_and_takes_a_vouch(root: Path) -> None:
    a, b = version_names(root)
    service = Service(root, model_sha256=pin_of(root, a))
    with service.client() as client:
        admin = auth(service.admin_key)
        versions.use(root, b)
        refused = client.post("/admin/reload", headers=admin)
        assert refused.status_code == 422
        assert "is not the pinned model" in refused.json()["detail"]
        vouched = client.post("/admin/reload", json={"sha256": pin_of(root, b)}, headers=admin)
        assert vouched.json()["outcome"] == "loaded"
        status = client.get("/admin/model", headers=admin).json()
        assert (status["pinned"], status["pins"]) == (True, 2)


def test_the_schema_documents_the_admin_routes(root: Path) -> None:
    with Service(root).client() as client:
        schema = client.get("/schema/openapi.json").json()
    for path, method in (("/admin/reload", "post"), ("/admin/rollback", "post")):
        operation = schema["paths"][path][method]
        assert set(operation["responses"]) >= {"200", "401", "403", "409", "422", "429"}
        assert operation["security"] == [{"apiKey": []}]
    assert schema["paths"]["/admin/model"]["get"]["security"] == [{"apiKey": []}]
    assert "ReloadIn" in json.dumps(schema["paths"]["/admin/reload"]["post"]["requestBody"])


def test_a_fast_path_app_still_sends_admin_routes_to_litestar(root: Path) -> None:
    assert isinstance(Service(root).app, FastPredictRoutes)
