"""The HTTP adapter on in-memory adapters: routes, problem details, OpenAPI, the real model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.testing import TestClient
from litestar.types import ASGIApp, Receive, Scope, Send

from fraudscore import (
    Application,
    AsyncScoringService,
    FraudscoreError,
    InvalidFeatures,
    ModelUnavailable,
    Prediction,
    Scores,
    ScoringService,
    StoreUnavailable,
)
from fraudscore.ports import FeatureRepository, PredictionSink, Scorer
from fraudscore_adapters.batching import ThreadScorer
from fraudscore_adapters.bootstrap import build_app, model_readiness
from fraudscore_adapters.http import Batching, FastPredictRoutes, Runtime, create_app
from fraudscore_adapters.memory import MemoryFeatureStore, MemoryPredictionSink
from fraudscore_adapters.settings import Settings
from tests.support import BrokenScorer, DownSink, RuleScorer, application, raw

pytestmark = pytest.mark.unit

Client = TestClient[Litestar | FastPredictRoutes]


class AsyncFaces:
    """The async faces of any blocking repository and sink (for faults on both routes)."""

    def __init__(self, features: FeatureRepository, sink: PredictionSink) -> None:
        self.features, self.sink = features, sink

    async def latest_many(self, user_ids: Sequence[int]) -> Sequence[Application | FraudscoreError]:
        return self.features.latest_many(user_ids)

    async def record_many(self, predictions: Sequence[Prediction]) -> None:
        self.sink.record_many(predictions)


class World:
    """The in-memory adapters behind a test app, for the tests to look at."""

    def __init__(self) -> None:
        self.store = MemoryFeatureStore()
        self.sink = MemoryPredictionSink()
        self.store.add(1, application(housing_status="BA"))
        self.store.add(2, application(housing_status="BB"))
        self.features: FeatureRepository = self.store
        self.sink_port: PredictionSink = self.sink
        self.scorer: Scorer = RuleScorer()
        self.ready = {"model": "ok", "store": "ok"}

    @asynccontextmanager
    async def runtime(self) -> AsyncIterator[Runtime]:
        scorer = ThreadScorer(self.scorer)
        faces = AsyncFaces(self.features, self.sink_port)

        async def checks() -> dict[str, str]:
            return self.ready

        try:
            yield Runtime(
                service=ScoringService(
                    features=self.features, sink=self.sink_port, scorer=self.scorer
                ),
                async_service=AsyncScoringService(features=faces, sink=faces, scorer=scorer),
                checks=checks,
            )
        finally:
            scorer.close()


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def client(world: World) -> Iterator[Client]:
    with TestClient(create_app(world.runtime, retry_after_s=7)) as client:
        yield client


@pytest.mark.parametrize("route", ["sync", "async"])
def test_predict_answers_and_records(client: Client, world: World, route: str) -> None:
    response = client.post(f"/predict/{route}/1")
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == 1
    assert body["probability"] == 0.9
    assert body["is_fraud"] is True
    assert body["threshold"] == 0.5
    assert body["model_version"] == "rule-1"
    recorded = world.sink.records
    assert len(recorded) == 1
    assert str(recorded[0].prediction_id) == body["prediction_id"]
    assert recorded[0].route == route


def test_both_routes_return_the_same_body_but_id_and_time(client: Client) -> None:
    sync = client.post("/predict/sync/2").json()
    async_ = client.post("/predict/async/2").json()
    for body in (sync, async_):
        del body["prediction_id"], body["created_at"]
    assert sync == async_


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/predict/sync/abc", 400, "invalid-user-id"),
        ("/predict/async/-1", 400, "invalid-user-id"),
        ("/predict/sync/99999999999999999999", 400, "invalid-user-id"),
        ("/predict/sync/3", 404, "unknown-user"),
        ("/predict/async/3", 404, "unknown-user"),
    ],
)
def test_client_errors_are_problem_details(
    client: Client,
    world: World,
    path: str,
    status: int,
    kind: str,
) -> None:
    response = client.post(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{kind}"
    assert body["status"] == status
    assert body["instance"] == path
    if kind == "invalid-user-id":
        assert "decimal digits" in body["rule"] or "between" in body["rule"]
    assert world.sink.records == ()


class Corrupt:
    """A store whose rows fail validation (customer_age 500)."""

    def latest_many(self, user_ids: Sequence[int]) -> list[Application | FraudscoreError]:
        try:
            Application.parse(raw(customer_age=500))
        except InvalidFeatures as exc:
            return [exc.for_user(user_id) for user_id in user_ids]
        raise AssertionError("customer_age 500 passed validation")


class Exploding:
    """A store with a bug."""

    def latest_many(self, user_ids: Sequence[int]) -> list[Application | FraudscoreError]:
        raise KeyError("secret internals")


def test_stored_features_that_fail_validation_name_the_field(world: World) -> None:
    world.features = Corrupt()
    with TestClient(create_app(world.runtime)) as client:
        response = client.post("/predict/sync/1")
    assert response.status_code == 422
    body = response.json()
    assert body["problems"] == [
        {"field": "customer_age", "problem": "500 is out of range [10, 90]"}
    ]


def test_an_unavailable_store_is_503_with_retry_after(world: World) -> None:
    world.sink_port = DownSink()
    with TestClient(create_app(world.runtime, retry_after_s=7)) as client:
        response = client.post("/predict/sync/1")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json()["type"] == "/problems/store-unavailable"
    assert "connection refused" in response.json()["detail"]


def test_unexpected_errors_are_a_plain_500_without_a_traceback(world: World) -> None:
    world.features = Exploding()
    with TestClient(create_app(world.runtime)) as client:
        response = client.post("/predict/sync/1")
    assert response.status_code == 500
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    assert response.json()["type"] == "/problems/internal-error"


def test_framework_errors_are_problems_too(client: Client) -> None:
    assert client.get("/predict/sync/1").status_code == 405
    missing = client.post("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    big = client.post("/predict/sync/1", content=b"x" * 5_000)
    assert big.status_code == 413
    assert big.json()["status"] == 413


def test_health_and_readiness(client: Client, world: World) -> None:
    assert client.get("/healthcheck").text == "ok"
    assert client.get("/readyz").json() == {
        "status": "ready",
        "checks": {"model": "ok", "store": "ok"},
    }
    world.ready = {"model": "ok", "store": str(StoreUnavailable("timeout"))}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["store"] == "store unavailable: timeout"


def test_openapi_documents_what_the_routes_do(client: Client) -> None:
    schema = client.get("/schema/openapi.json").json()
    for route in ("sync", "async"):
        operation = schema["paths"][f"/predict/{route}/{{user_id}}"]["post"]
        assert set(operation["responses"]) >= {"200", "400", "404", "422", "503"}
        assert "application/problem+json" in operation["responses"]["404"]["content"]
    assert "get" not in schema["paths"]["/predict/sync/{user_id}"]
    assert "PredictionOut" in schema["components"]["schemas"]


def test_the_composition_root_serves_the_real_model(
    tiny_model: tuple[Path, Path],
) -> None:
    data, artifacts = tiny_model
    settings = Settings(data_file=data, artifact_dir=artifacts, memory_predictions=10)
    with TestClient(build_app(settings)) as client:
        sync = client.post("/predict/sync/5").json()
        async_ = client.post("/predict/async/5").json()
        assert client.get("/readyz").status_code == 200
    assert sync["model_version"].startswith("xgb-")
    assert sync["probability"] == async_["probability"]
    assert 0 < sync["probability"] < 1
    assert sync["is_fraud"] == (sync["probability"] >= sync["threshold"])


def test_a_missing_model_refuses_to_start(tmp_path: Path, tiny_model: tuple[Path, Path]) -> None:
    settings = Settings(data_file=tiny_model[0], artifact_dir=tmp_path / "none")
    with pytest.raises(BaseExceptionGroup) as caught, TestClient(build_app(settings)):
        pass
    assert caught.group_contains(ModelUnavailable, match="no manifest.json", depth=None)


def test_readiness_scores_a_probe_and_names_a_model_fault() -> None:
    class Model:
        def __init__(self, scores: Scores | None = None, delay_s: float = 0.0) -> None:
            self.scores, self.delay_s = scores, delay_s
            self.seen: list[int] = []

        async def score(self, applications: Sequence[Application]) -> Scores:
            self.seen.append(len(applications))
            await asyncio.sleep(self.delay_s)
            if self.scores is None:
                raise ModelUnavailable("booster gone")
            return self.scores

    async def check(model: Model) -> str:
        return await model_readiness(model, timeout_s=0.05)()

    good = Model(Scores([0.2], 0.5, "v"))
    assert asyncio.run(check(good)) == "ok"
    assert good.seen == [1]
    assert asyncio.run(check(Model())) == "model unavailable: booster gone"
    nan = asyncio.run(check(Model(Scores([float("nan")], 0.5, "v"))))
    assert nan == "model unavailable: scorer returned nan, which is not a probability"
    slow = asyncio.run(check(Model(Scores([0.2], 0.5, "v"), delay_s=1.0)))
    assert slow == "model unavailable: no answer to a probe within 0.05 s"


class Spy:
    """An ASGI app in front of another, counting the HTTP requests that reach it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.paths = app, list[str]()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


def comparable(response: httpx.Response) -> tuple[int, dict[str, str], object]:
    """Status, headers and body, minus what differs per prediction (id, time, their length)."""
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    body = response.json() if response.content else None
    if response.status_code == 200 and isinstance(body, dict):
        for varying in ("prediction_id", "created_at"):
            body[varying] = type(body.pop(varying)).__name__
    else:
        headers["content-length"] = response.headers["content-length"]
    return response.status_code, headers, body


BIG = {"content": b"x" * 2048}
REQUESTS: list[tuple[str, str, dict[str, Any], bool]] = [
    # method, path, request options, answered by the fast path
    ("POST", "/predict/sync/1", {}, True),
    ("POST", "/predict/async/2", {}, True),
    ("POST", "/predict/async/%31", {}, True),
    ("POST", "/predict/sync/3", {}, True),
    ("POST", "/predict/async/abc", {}, True),
    ("POST", "/predict/sync/-1", {}, True),
    ("POST", "/predict/async/99999999999999999999", {}, True),
    ("POST", "/predict/sync/" + "9" * 300, {}, True),
    ("POST", "/predict/async/1", {"content": b""}, True),
    ("POST", "/predict/async/1", {"content": b"{}"}, False),
    ("POST", "/predict/sync/1", BIG, False),
    ("POST", "/predict/async/1/", {}, False),
    ("POST", "/predict/async/", {}, False),
    ("POST", "/predict/other/1", {}, False),
    ("GET", "/predict/sync/1", {}, False),
    ("PUT", "/predict/async/1", {}, False),
]


Seen = tuple[int, dict[str, str], object]


def exchange(world: World, fast_path: bool) -> tuple[list[Seen], list[str]]:
    """Every request of REQUESTS through an app; the responses, and what reached Litestar."""
    app = create_app(world.runtime, retry_after_s=7, fast_path=fast_path)
    if isinstance(app, FastPredictRoutes):
        spy = Spy(app.litestar)
        app.litestar = spy  # type: ignore[assignment]  # an ASGI app in Litestar's place
        served: ASGIApp = app
    else:
        spy = served = Spy(app)
    with TestClient(served) as client:
        got = [comparable(client.request(m, p, **o)) for m, p, o, _ in REQUESTS]
    return got, spy.paths


@pytest.mark.parametrize("fault", ["none", "store down", "corrupt features", "model down", "bug"])
def test_the_fast_path_answers_exactly_as_litestar_does(world: World, fault: str) -> None:
    if fault == "store down":
        world.sink_port = DownSink()
    elif fault == "corrupt features":
        world.features = Corrupt()
    elif fault == "model down":
        world.scorer = BrokenScorer()
    elif fault == "bug":
        world.features = Exploding()
    fast, to_litestar = exchange(world, fast_path=True)
    slow, everything = exchange(world, fast_path=False)
    assert fast == slow
    assert to_litestar == [p for _, p, _, fast in REQUESTS if not fast]  # the rest: fast path
    assert len(everything) == len(REQUESTS)
    statuses = {status for status, _, _ in fast}
    assert statuses >= ({200, 400, 404, 405, 413} if fault == "none" else {405, 413})


class Hanging:
    """A store whose reads hang until released (a frozen database without client deadlines)."""

    def __init__(self, store: FeatureRepository) -> None:
        self.store, self.release, self.entered = store, threading.Event(), threading.Event()

    def latest_many(self, user_ids: Sequence[int]) -> Sequence[Application | FraudscoreError]:
        self.entered.set()
        self.release.wait(10)
        return self.store.latest_many(user_ids)


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_hung_batch_answers_503_in_time_and_fails_liveness(world: World, fast_path: bool) -> None:
    hanging = Hanging(world.store)
    world.features = hanging
    app = create_app(
        world.runtime, retry_after_s=7, batching=Batching(timeout_s=0.3), fast_path=fast_path
    )
    try:
        with TestClient(app) as client:
            assert client.get("/healthcheck").status_code == 200
            began = time.perf_counter()
            response = client.post("/predict/sync/1")
            took = time.perf_counter() - began
            assert response.status_code == 503
            assert response.headers["retry-after"] == "7"
            assert response.json()["type"] == "/problems/timeout"
            assert 0.25 < took < 1.0
            queued = client.post("/predict/sync/2")  # behind the hung batch
            assert queued.json()["type"] == "/problems/timeout"
            assert "(queued)" in queued.json()["detail"]
            time.sleep(0.4)  # the hung batch is now a whole timeout past its deadline
            liveness = client.get("/healthcheck")
            assert liveness.status_code == 503
            assert "route sync: a batch is" in liveness.text
            hanging.release.set()
            time.sleep(0.05)
            assert client.get("/healthcheck").text == "ok"
    finally:
        hanging.release.set()
    assert [p.user_id for p in world.sink.records] == [1]  # the hung batch, late: no 2xx had it


def test_shutdown_answers_the_requests_in_flight_before_closing(world: World) -> None:
    hanging = Hanging(world.store)
    world.features = hanging
    events: list[str] = []
    inner = world.runtime

    @asynccontextmanager
    async def runtime() -> AsyncIterator[Runtime]:
        async with inner() as rt:
            yield rt
            events.append("runtime closing")

    answers: list[int] = []
    client = TestClient(create_app(runtime))
    with client:
        worker = threading.Thread(
            target=lambda: answers.append(client.post("/predict/sync/1").status_code)
        )
        worker.start()
        assert hanging.entered.wait(5)
        threading.Timer(0.2, hanging.release.set).start()
    events.append("client closed")
    worker.join(5)
    assert answers == [200]
    assert events == ["runtime closing", "client closed"]
    assert [p.user_id for p in world.sink.records] == [1]


def asgi_request(path: str) -> Scope:
    """What a server sends for a bodiless POST."""
    return {  # type: ignore[return-value]
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [(b"host", b"t")], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_request_whose_client_left_while_queued_is_not_scored_or_recorded(
    world: World, fast_path: bool
) -> None:
    """Granian's receive answers http.disconnect once the client has gone; a request queued
    behind a batch in flight whose client left costs nothing."""
    hanging = Hanging(world.store)
    world.features = hanging
    sent: list[Any] = []

    async def call(app: ASGIApp) -> None:
        messages = iter([{"type": "http.request", "body": b"", "more_body": False}])

        async def receive() -> Any:
            return next(messages, {"type": "http.disconnect"})

        async def send(message: Any) -> None:
            sent.append(message)

        await app(asgi_request("/predict/sync/2"), receive, send)

    app = create_app(world.runtime, fast_path=fast_path)
    try:
        with TestClient(app) as client:
            first = threading.Thread(target=client.post, args=("/predict/sync/1",))
            first.start()
            assert hanging.entered.wait(5)
            threading.Timer(0.4, hanging.release.set).start()
            with client.portal() as portal:
                portal.call(call, client.app)  # queued behind user 1's batch, then gone
            first.join(5)
    finally:
        hanging.release.set()
    assert [p.user_id for p in world.sink.records] == [1]  # user 2 was never scored
    assert all(m.get("status") != 200 for m in sent)
