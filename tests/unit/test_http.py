"""The HTTP adapter wired by the composition root (:func:`build_app` with :class:`Parts`) on
in-memory adapters and a tiny model: routes, API keys and rate limits on both routes and both
serving paths, problem details, OpenAPI, readiness, the real model."""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.testing import TestClient
from litestar.types import ASGIApp, Receive, Scope, Send

from fraudscore import (
    Application,
    FraudscoreError,
    InvalidFeatures,
    ModelUnavailable,
    Reason,
    Scores,
    StoreUnavailable,
)
from fraudscore.ports import FeatureRepository, PredictionSink, Scorer
from fraudscore_adapters.access import ApiKey, FileKeyStore, KeyStore, MemoryKeyStore, mint
from fraudscore_adapters.bootstrap import (
    KEYS_MAX_STALE_REFRESHES,
    Parts,
    Stores,
    build_app,
    model_readiness,
)
from fraudscore_adapters.http import FastPredictRoutes
from fraudscore_adapters.memory import MemoryFeatureStore, MemoryPredictionSink
from fraudscore_adapters.settings import Settings
from fraudscore_adapters.xgb import XGBScorer
from tests.support import BrokenScorer, DownSink, FlakyKeyStore, RuleScorer, application, raw

pytestmark = pytest.mark.unit

App = Litestar | FastPredictRoutes
Client = TestClient[App]
T = TypeVar("T")

CHALLENGE = 'Bearer realm="fraudscore"'
INSUFFICIENT_SCOPE = 'Bearer realm="fraudscore", error="insufficient_scope", scope="predict"'
REFRESH_S = 0.05
"""The key refresh interval of the tests that change keys while the app runs."""
WITHIN_S = 1.0
"""How long those tests wait for a change to take effect: the bound is one refresh interval
plus one key store call (microseconds in memory); the rest is slack for a loaded machine."""


class World:
    """The parts a test app is wired from (passed to the composition root through
    :class:`Parts`), for the tests to change before building the app and to look at after."""

    def __init__(self) -> None:
        self.store = MemoryFeatureStore()
        self.sink = MemoryPredictionSink()
        self.store.add(1, application(housing_status="BA"))
        self.store.add(2, application(housing_status="BB"))
        self.features: FeatureRepository = self.store
        self.sink_port: PredictionSink = self.sink
        self.scorer: Scorer = RuleScorer()
        self.store_check = "ok"
        """What the store's readiness probe answers."""
        self.memory_keys = MemoryKeyStore()
        self.keys: KeyStore = self.memory_keys
        self.record, self.key = self.mint("tests", "predict")

    def mint(self, name: str, *scopes: str) -> tuple[ApiKey, str]:
        """A new key, stored: its record and the key itself."""
        record, key = mint(name, scopes)
        self.memory_keys.add(record)
        return record, key

    @property
    def auth(self) -> dict[str, str]:
        """The headers of a request with the valid ``predict`` key."""
        return bearer(self.key)

    async def check(self) -> str:
        return self.store_check

    def app(self, **settings: Any) -> App:
        """The app the composition root builds from these parts; ``settings`` override the
        tests' defaults (``Retry-After: 7``)."""
        stores = Stores.in_memory(self.features, self.sink_port, check=self.check)
        parts = Parts(scorer=self.scorer, stores=stores, keys=self.keys)
        return build_app(Settings(**{"retry_after_s": 7, **settings}), parts)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def client(world: World) -> Iterator[Client]:
    """A client of the default app whose every request carries the valid key."""
    with TestClient(world.app()) as client:
        client.headers.update(world.auth)
        yield client


def ready(client: TestClient[Any]) -> None:
    """Wait until ``client``'s app is ready. Tests with a tiny key refresh interval do first:
    the lifespan's ``gc.collect()`` blocks the loop for up to a few tenths of a second after
    the keys were first read, longer than such an interval's staleness bound."""
    answer = poll(lambda: client.get("/readyz"), lambda r: r.status_code == 200)
    assert answer.status_code == 200, answer.text


def poll(call: Callable[[], T], done: Callable[[T], bool], within_s: float = WITHIN_S) -> T:
    """``call()`` until ``done`` says so, or ``within_s`` has passed; the last answer."""
    deadline = time.monotonic() + within_s
    while True:
        got = call()
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.005)


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
    assert recorded[0].caller == world.record.id


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


class Counting:
    """A store counting the users looked up."""

    def __init__(self, store: FeatureRepository) -> None:
        self.store, self.looked_up = store, 0

    def latest_many(self, user_ids: Sequence[int]) -> Sequence[Application | FraudscoreError]:
        self.looked_up += len(user_ids)
        return self.store.latest_many(user_ids)


def test_stored_features_that_fail_validation_name_the_field(world: World) -> None:
    world.features = Corrupt()
    with TestClient(world.app()) as client:
        response = client.post("/predict/sync/1", headers=world.auth)
    assert response.status_code == 422
    body = response.json()
    assert body["problems"] == [
        {"field": "customer_age", "problem": "500 is out of range [10, 90]"}
    ]


def test_an_unavailable_store_is_503_with_retry_after(world: World) -> None:
    world.sink_port = DownSink()
    with TestClient(world.app()) as client:
        response = client.post("/predict/sync/1", headers=world.auth)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json()["type"] == "/problems/store-unavailable"
    assert "connection refused" in response.json()["detail"]


def test_unexpected_errors_are_a_plain_500_without_a_traceback(world: World) -> None:
    world.features = Exploding()
    with TestClient(world.app()) as client:
        response = client.post("/predict/sync/1", headers=world.auth)
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
        "checks": {"model": "ok", "store": "ok", "keys": "ok"},
    }
    world.store_check = str(StoreUnavailable("timeout"))  # what the store's probe now says
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not ready"
    assert response.json()["checks"] == {
        "model": "ok",
        "store": "store unavailable: timeout",
        "keys": "ok",
    }


def test_readiness_names_a_broken_model(world: World) -> None:
    world.scorer = BrokenScorer()
    with TestClient(world.app()) as client:
        ready = client.get("/readyz")
        predicted = client.post("/predict/async/1", headers=world.auth)
    assert ready.status_code == 503
    assert ready.json()["checks"] == {
        "model": "model unavailable: model file is gone",
        "store": "ok",
        "keys": "ok",
    }
    assert predicted.status_code == 503
    assert predicted.json()["type"] == "/problems/model-unavailable"


def test_health_readiness_and_the_schema_need_no_key(world: World) -> None:
    with TestClient(world.app()) as client:
        assert client.get("/healthcheck").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/schema").status_code == 200
        assert client.get("/schema/openapi.json").status_code == 200
        assert client.post("/predict/sync/1").status_code == 401


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_flagged_predictions_and_asked_ones_carry_their_reasons(
    world: World, fast_path: str
) -> None:
    """User 1 is flagged (BA): reasons by default. User 2 is not: reasons only when asked.
    What is returned is what is recorded."""
    with TestClient(world.app(fast_path=fast_path)) as client:
        client.headers.update(world.auth)
        flagged = client.post("/predict/sync/1").json()
        asked = client.post("/predict/async/2?explain=true").json()
        plain = client.post("/predict/async/2").json()
        declined = client.post("/predict/sync/2?explain=false").json()
        wrong = client.post("/predict/sync/2?explain=maybe")
        typo = client.post("/predict/sync/2?explian=true")
    assert flagged["is_fraud"]
    assert flagged["reasons"] == [{"feature": "housing_status", "value": "BA", "contribution": 2.0}]
    assert not asked["is_fraud"]
    assert asked["reasons"] == [{"feature": "housing_status", "value": "BB", "contribution": 0.5}]
    assert plain["reasons"] is None
    assert declined["reasons"] is None
    assert wrong.status_code == 400
    assert wrong.headers["content-type"] == "application/problem+json"
    assert typo.status_code == 400
    assert "unknown query parameter 'explian'" in typo.json()["detail"]
    records = {str(p.prediction_id): p for p in world.sink.records}
    assert len(records) == 4  # the refused one is not scored
    for body in (flagged, asked, plain, declined):
        stored = records[body["prediction_id"]].reasons
        expected = body["reasons"]
        assert (stored is None) == (expected is None)
        assert [vars_of(r) for r in stored or ()] == (expected or [])


def vars_of(reason: Reason) -> dict[str, object]:
    return {"feature": reason.feature, "value": reason.value, "contribution": reason.contribution}


def test_openapi_documents_what_the_routes_do(client: Client) -> None:
    schema = client.get("/schema/openapi.json").json()
    for route in ("sync", "async"):
        operation = schema["paths"][f"/predict/{route}/{{user_id}}"]["post"]
        assert set(operation["responses"]) >= {
            "200", "400", "401", "403", "404", "422", "429", "503",
        }  # fmt: skip
        for status in ("401", "403", "404", "429"):
            assert "application/problem+json" in operation["responses"][status]["content"]
        assert operation["security"] == [{"apiKey": []}]
    assert "get" not in schema["paths"]["/predict/sync/{user_id}"]
    assert "PredictionOut" in schema["components"]["schemas"]
    for route in ("sync", "async"):
        parameters = schema["paths"][f"/predict/{route}/{{user_id}}"]["post"]["parameters"]
        explain = next(p for p in parameters if p["name"] == "explain")
        assert (explain["in"], explain["schema"]["type"]) == ("query", "boolean")
    out = schema["components"]["schemas"]["PredictionOut"]["properties"]["reasons"]
    assert "ReasonOut" in str(out)
    reason = schema["components"]["schemas"]["ReasonOut"]["properties"]
    assert set(reason) == {"feature", "value", "contribution"}
    scheme = schema["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert "security" not in schema  # no key asked for by default: health, readiness, docs
    for path in ("/healthcheck", "/readyz"):
        assert "security" not in schema["paths"][path]["get"]


def test_the_composition_root_serves_the_real_model(
    tmp_path: Path, tiny_model: tuple[Path, Path]
) -> None:
    """Nothing passed in: the model, the data and the keys file all from settings."""
    data, artifacts = tiny_model
    record, key = mint("tests", ["predict"])
    FileKeyStore(tmp_path / "keys.json").add(record)
    settings = Settings(
        data_file=data,
        artifact_dir=artifacts,
        memory_predictions=10,
        keys_file=tmp_path / "keys.json",
    )
    with TestClient(build_app(settings)) as client:
        client.headers.update(bearer(key))
        assert_the_model_answers(client, 5)


def assert_the_model_answers(client: Client, user_id: int) -> None:
    """Both routes give a real XGBoost model's probability (the same one), and readiness."""
    sync = client.post(f"/predict/sync/{user_id}").json()
    async_ = client.post(f"/predict/async/{user_id}").json()
    assert client.get("/readyz").status_code == 200
    assert sync["model_version"].startswith("xgb-")
    assert sync["probability"] == async_["probability"]
    assert 0 < sync["probability"] < 1
    assert sync["is_fraud"] == (sync["probability"] >= sync["threshold"])


def test_the_seam_serves_a_tiny_real_model_on_memory_stores(
    world: World, tiny_model: tuple[Path, Path]
) -> None:
    world.scorer = XGBScorer.load(tiny_model[1])
    with TestClient(world.app()) as client:
        client.headers.update(world.auth)
        assert_the_model_answers(client, 1)
    assert [p.caller for p in world.sink.records] == [world.record.id] * 2


def test_a_missing_model_refuses_to_start(
    tmp_path: Path, tiny_model: tuple[Path, Path], world: World
) -> None:
    settings = Settings(data_file=tiny_model[0], artifact_dir=tmp_path / "none")
    parts = Parts(keys=world.keys)
    with pytest.raises(BaseExceptionGroup) as caught, TestClient(build_app(settings, parts)):
        pass
    assert caught.group_contains(ModelUnavailable, match="no manifest.json", depth=None)


def test_readiness_scores_a_probe_and_names_a_model_fault() -> None:
    class Model:
        def __init__(self, scores: Scores | None = None, delay_s: float = 0.0) -> None:
            self.scores, self.delay_s = scores, delay_s
            self.seen: list[int] = []

        async def score(
            self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
        ) -> Scores:
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


# --- The two serving paths: every outcome, byte for byte ---------------------------------


class Spy:
    """An ASGI app in front of another, counting the HTTP requests that reach it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.paths = app, list[str]()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


Seen = tuple[int, dict[str, str], object]


GENERATED_ID = re.compile(r"[0-9a-f]{16}-[0-9]+")
"""A request id the app made up (``fraudscore_adapters.logs.new_request_id``)."""


def comparable(response: httpx.Response) -> Seen:
    """Status, headers and body, minus what differs per prediction (id, time, their length)
    and per request (a request id the app made up)."""
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    if GENERATED_ID.fullmatch(headers.get("x-request-id", "")):
        headers["x-request-id"] = "<generated>"
    body = response.json() if response.content else None
    if response.status_code == 200 and isinstance(body, dict):
        for varying in ("prediction_id", "created_at"):
            body[varying] = type(body.pop(varying)).__name__
    else:
        headers["content-length"] = response.headers["content-length"]
    return response.status_code, headers, body


Request = tuple[str, str, dict[str, Any], bool]
"""Method, path, request options, answered by the fast path."""

BIG = {"content": b"x" * 2048}
REQUESTS: list[Request] = [
    ("POST", "/predict/sync/1", {}, True),
    ("POST", "/predict/async/2", {}, True),
    ("POST", "/predict/async/%31", {}, True),
    ("POST", "/predict/sync/3", {}, True),
    ("POST", "/predict/async/abc", {}, True),
    ("POST", "/predict/sync/-1", {}, True),
    ("POST", "/predict/async/99999999999999999999", {}, True),
    ("POST", "/predict/sync/" + "9" * 300, {}, True),
    ("POST", "/predict/async/1", {"content": b""}, True),
    ("POST", "/predict/sync/2?explain=true", {}, True),
    ("POST", "/predict/async/2?explain=false", {}, True),
    ("POST", "/predict/async/2?explain=1", {}, False),
    ("POST", "/predict/sync/2?explain=maybe", {}, False),
    ("POST", "/predict/sync/2?other=1", {}, False),
    ("POST", "/predict/async/1", {"content": b"{}"}, False),
    ("POST", "/predict/sync/1", BIG, False),
    ("POST", "/predict/async/1/", {}, False),
    ("POST", "/predict/async/", {}, False),
    ("POST", "/predict/other/1", {}, False),
    ("GET", "/predict/sync/1", {}, False),
    ("PUT", "/predict/async/1", {}, False),
]


def exchange(
    world: World,
    fast_path: bool,
    requests: Sequence[Request] = REQUESTS,
    headers: Mapping[str, str] | httpx.Headers | None = None,
    settle: Callable[[TestClient[Any]], None] | None = None,
    **settings: Any,
) -> tuple[list[Seen], list[str]]:
    """Every request of ``requests`` through an app with ``headers`` (default: the valid
    key), once ``settle`` is done; the responses, and which requests reached Litestar."""
    app = world.app(fast_path="on" if fast_path else "off", **settings)
    if isinstance(app, FastPredictRoutes):
        spy = Spy(app.litestar)
        app.litestar = spy  # type: ignore[assignment]  # an ASGI app in Litestar's place
        served: ASGIApp = app
    else:
        spy = served = Spy(app)
    sent = world.auth if headers is None else headers
    with TestClient(served) as client:
        if settle is not None:
            settle(client)
            spy.paths.clear()
        got = [comparable(client.request(m, p, headers=sent, **o)) for m, p, o, _ in requests]
    return got, spy.paths


def path(target: str) -> str:
    """The path of a request target (what ASGI's scope calls ``path``)."""
    return target.partition("?")[0]


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
    assert to_litestar == [path(p) for _, p, _, fast in REQUESTS if not fast]  # the rest: fast
    assert len(everything) == len(REQUESTS)
    statuses = {status for status, _, _ in fast}
    assert statuses >= ({200, 400, 404, 405, 413} if fault == "none" else {405, 413})
    if fault == "none":
        assert {p.caller for p in world.sink.records} == {world.record.id}


AUTH_REQUESTS: list[Request] = [
    ("POST", "/predict/sync/1", {}, True),
    ("POST", "/predict/async/2", {}, True),
    ("POST", "/predict/sync/abc", {}, True),  # a 400 with a valid key
    ("POST", "/predict/async/-1", {}, True),
    ("POST", "/predict/sync/3", {}, True),  # a 404 with a valid key
    ("POST", "/predict/async/3", {}, True),
    ("POST", "/predict/async/1", {"content": b"{}"}, False),  # Litestar's own handler
]

NO_VALID_KEY = [
    "no header",
    "unknown key",
    "Basic xyz",
    "Basic with the key",
    "Bearer alone",
    "Bearer and a space",
    "the key without a scheme",
    "truncated key",
    "garbage bytes",
    "revoked key",
]
"""Every way of calling without a valid key: one answer for all (no oracle)."""


def credentials(world: World, cause: str) -> httpx.Headers:
    """The headers of a request without a valid key, for ``cause``."""
    if cause == "no header":
        return httpx.Headers()
    if cause == "garbage bytes":
        return httpx.Headers([(b"authorization", b"\xff\xfe\x80 garbage \x01 \x7f")])
    if cause == "revoked key":
        record, key = world.mint("revoked", "predict")
        assert world.memory_keys.revoke(record.id, datetime.now(UTC)) is not None
        return httpx.Headers(bearer(key))
    value = {
        "unknown key": f"Bearer {mint('unknown', ['predict'])[1]}",
        "Basic xyz": "Basic xyz",
        "Basic with the key": f"Basic {world.key}",
        "Bearer alone": "Bearer",
        "Bearer and a space": "Bearer ",
        "the key without a scheme": world.key,
        "truncated key": f"Bearer {world.key[:-1]}",
    }[cause]
    return httpx.Headers({"Authorization": value})


def stale_keys(client: TestClient[Any], keys: FlakyKeyStore) -> None:
    """Take the keys' store down once the app is ready; wait until the app says its keys are
    too old."""
    keys.down.clear()
    ready(client)
    keys.down.set()
    stale = poll(lambda: client.get("/readyz"), lambda r: r.json()["checks"]["keys"] != "ok")
    assert "reading the API keys failed: store unavailable" in stale.json()["checks"]["keys"]


REFUSALS = [*NO_VALID_KEY, "admin scope only", "rate limited", "keys stale"]


def refusal(case: str, n: int) -> tuple[list[int], list[str | None], list[str | None], list[Any]]:
    """What ``n`` requests refused for ``case`` are answered with: statuses, problem types,
    ``WWW-Authenticate`` and ``Retry-After`` headers."""
    if case in NO_VALID_KEY:
        return [401] * n, ["/problems/unauthenticated"] * n, [CHALLENGE] * n, [None] * n
    if case == "admin scope only":
        return [403] * n, ["/problems/forbidden"] * n, [INSUFFICIENT_SCOPE] * n, [None] * n
    if case == "rate limited":  # the first passes (the bucket held one token)
        limited = ["/problems/rate-limited"] * (n - 1)
        return [200] + [429] * (n - 1), [None, *limited], [None] * n, [None] + ["1"] * (n - 1)
    assert case == "keys stale"
    return [503] * n, ["/problems/keys-unavailable"] * n, [None] * n, ["7"] * n


@pytest.mark.parametrize("case", REFUSALS)
def test_the_fast_path_refuses_exactly_as_litestar_does(world: World, case: str) -> None:
    """Each refusal of the gate on both routes and both paths, before the user id is even
    parsed (401/403/429/503 where the user id would give 400 or 404): same status, headers
    and body; nothing looked up, nothing recorded."""
    counting = Counting(world.store)
    world.features = counting

    def run(fast_path: bool) -> tuple[list[Seen], list[str]]:
        settings: dict[str, Any] = {}
        settle = None
        headers: Mapping[str, str] | httpx.Headers = world.auth
        if case in NO_VALID_KEY:
            headers = credentials(world, case)
        elif case == "admin scope only":
            headers = bearer(world.mint("ops", "admin")[1])
        elif case == "rate limited":
            settings = {"rate_limit_rps": 1.0, "rate_limit_burst": 1}  # the 2nd request: 429
        elif case == "keys stale":
            world.keys = flaky = FlakyKeyStore(world.memory_keys)
            settings = {"keys_refresh_s": 0.01}  # stale after 10 x 0.01 s
            settle = functools.partial(stale_keys, keys=flaky)
        return exchange(world, fast_path, AUTH_REQUESTS, headers, settle, **settings)

    fast, to_litestar = run(fast_path=True)
    slow, everything = run(fast_path=False)
    assert fast == slow
    assert to_litestar == [p for _, p, _, fast in AUTH_REQUESTS if not fast]
    assert len(everything) == len(AUTH_REQUESTS)

    seen = (
        [status for status, _, _ in fast],
        [body.get("type") if isinstance(body, dict) else None for _, _, body in fast],
        [headers.get("www-authenticate") for _, headers, _ in fast],
        [headers.get("retry-after") for _, headers, _ in fast],
    )
    assert seen == refusal(case, len(AUTH_REQUESTS))
    assert all(
        headers["content-type"] == "application/problem+json"
        for status, headers, _ in fast
        if status != 200
    )
    answered = 2 * seen[0].count(200)  # on both paths
    assert counting.looked_up == answered
    assert len(world.sink.records) == answered
    assert all(p.caller == world.record.id for p in world.sink.records)


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_every_request_without_a_valid_key_gets_the_same_401(world: World, fast_path: str) -> None:
    """No oracle: missing, malformed, unknown and revoked keys are answered alike, byte for
    byte, whatever the route and the user id."""
    causes = {cause: credentials(world, cause) for cause in NO_VALID_KEY}
    with TestClient(world.app(fast_path=fast_path)) as client:
        for path in ("/predict/sync/1", "/predict/async/1", "/predict/sync/x", "/predict/async/3"):
            answers = {
                cause: comparable(client.post(path, headers=h)) for cause, h in causes.items()
            }
            assert len(set(map(repr, answers.values()))) == 1, answers
            status, headers, body = answers["no header"]
            assert status == 401
            assert headers["www-authenticate"] == CHALLENGE
            assert "retry-after" not in headers
            assert body == {
                "type": "/problems/unauthenticated",
                "title": "Unauthenticated",
                "status": 401,
                "detail": "a valid API key is required: send `Authorization: Bearer <key>`",
                "instance": path,
            }
    assert world.sink.records == ()


@pytest.mark.parametrize("fast_path", ["on", "off"])
@pytest.mark.parametrize(
    "authorization",
    ["Bearer {key}", "bearer {key}", "BEARER {key}", "Bearer   {key}  ", "Bearer {both}"],
)
def test_a_valid_key_is_admitted_however_the_scheme_is_spelled(
    world: World, fast_path: str, authorization: str
) -> None:
    """The scheme is case-insensitive (RFC 7235); a key may hold more scopes than needed."""
    both, both_key = world.mint("both", "predict", "admin")
    value = authorization.format(key=world.key, both=both_key)
    with TestClient(world.app(fast_path=fast_path)) as client:
        headers = {"Authorization": value}
        responses = [client.post(f"/predict/{r}/1", headers=headers) for r in ("sync", "async")]
    assert [r.status_code for r in responses] == [200, 200]
    caller = both.id if "both" in authorization else world.record.id
    assert [p.caller for p in world.sink.records] == [caller, caller]


# --- Keys change while the app runs ------------------------------------------------------


@pytest.mark.parametrize("fast_path", ["on", "off"])
@pytest.mark.parametrize("route", ["sync", "async"])
def test_a_revoked_key_is_refused_without_a_restart(
    world: World, fast_path: str, route: str
) -> None:
    """A key revoked in the store is refused by the running app within one refresh interval
    plus one key store call (here 0.05 s plus microseconds; waited for up to 1 s), with the
    same 401 as a key that never existed."""
    path = f"/predict/{route}/1"
    with TestClient(world.app(fast_path=fast_path, keys_refresh_s=REFRESH_S)) as client:
        ready(client)
        assert client.post(path, headers=world.auth).status_code == 200
        unknown = comparable(client.post(path, headers=credentials(world, "unknown key")))
        world.memory_keys.revoke(world.record.id, datetime.now(UTC))
        revoked = time.monotonic()
        refused = poll(
            lambda: client.post(path, headers=world.auth), lambda r: r.status_code != 200
        )
        took = time.monotonic() - revoked
        assert refused.status_code == 401, f"still {refused.status_code} after {took:.2f} s"
        assert comparable(refused) == unknown
        assert client.post(path, headers=world.auth).status_code == 401  # and stays refused
    assert {p.caller for p in world.sink.records} == {world.record.id}


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_a_new_key_is_admitted_without_a_restart(world: World, fast_path: str) -> None:
    """A key added to the store works in the running app within one refresh interval plus
    one key store call (here 0.05 s plus microseconds; waited for up to 1 s)."""
    record, key = mint("late", ["predict"])
    with TestClient(world.app(fast_path=fast_path, keys_refresh_s=REFRESH_S)) as client:
        ready(client)
        assert client.post("/predict/async/1", headers=bearer(key)).status_code == 401
        world.memory_keys.add(record)
        admitted = poll(
            lambda: client.post("/predict/async/1", headers=bearer(key)),
            lambda r: r.status_code != 401,
        )
        assert admitted.status_code == 200
        assert client.post("/predict/sync/1", headers=bearer(key)).status_code == 200
    assert [p.caller for p in world.sink.records] == [record.id, record.id]


def last_used(world: World) -> datetime | None:
    (record,) = (k for k in world.memory_keys.all() if k.id == world.record.id)
    return record.last_used_at


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_last_use_is_written_back_to_the_store_within_a_refresh(
    world: World, fast_path: str
) -> None:
    """When a key was last used reaches its store within one refresh interval plus one store
    call (here 0.05 s; waited for up to 1 s)."""
    slack = timedelta(milliseconds=10)  # the wall clock, read at a refresh, not at the request
    with TestClient(world.app(fast_path=fast_path, keys_refresh_s=REFRESH_S)) as client:
        ready(client)
        assert last_used(world) is None
        before = datetime.now(UTC)
        assert client.post("/predict/sync/1", headers=world.auth).status_code == 200
        after = datetime.now(UTC)
        used = poll(lambda: last_used(world), lambda at: at is not None)
        assert used is not None, "no last use written back"
        assert before - slack <= used <= after + slack


def test_last_use_is_written_back_at_shutdown(world: World) -> None:
    """The final seconds' last uses are not lost when the app stops before a refresh."""
    with TestClient(world.app(keys_refresh_s=60)) as client:
        assert client.post("/predict/async/1", headers=world.auth).status_code == 200
        assert last_used(world) is None  # no refresh for a minute
    assert last_used(world) is not None


def test_last_use_survives_a_key_store_blip(world: World) -> None:
    """A last use that could not be written back (the store was down for two refreshes,
    well within the staleness bound) is written at the next refresh that succeeds."""
    flaky = FlakyKeyStore(world.memory_keys)
    world.keys = flaky
    refresh_s = 0.1  # stale after 1 s: far from it here
    with TestClient(world.app(keys_refresh_s=refresh_s)) as client:
        ready(client)
        flaky.down.set()
        assert client.post("/predict/sync/1", headers=world.auth).status_code == 200
        failed = flaky.failures
        # a second failure: a refresh that began after the request, so holding its use
        assert poll(lambda: flaky.failures, lambda n: n >= failed + 2) >= failed + 2
        flaky.down.clear()
        used = poll(lambda: last_used(world), lambda at: at is not None, within_s=3 * refresh_s)
    assert used is not None, "the last use was lost"


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_unreadable_keys_fail_closed_then_recover(world: World, fast_path: str) -> None:
    """Keys not read for KEYS_MAX_STALE_REFRESHES intervals (here 10 x 0.01 s): every predict
    request gets 503 keys-unavailable and readiness fails; once the store answers again, the
    next refresh (0.01 s) lets requests in again."""
    flaky = FlakyKeyStore(world.memory_keys)
    world.keys = flaky
    refresh_s = 0.01
    assert KEYS_MAX_STALE_REFRESHES * refresh_s < WITHIN_S
    with TestClient(world.app(fast_path=fast_path, keys_refresh_s=refresh_s)) as client:
        ready(client)
        first = client.post("/predict/sync/1", headers=world.auth)
        assert first.status_code == 200, first.text
        flaky.down.set()
        closed = poll(
            lambda: client.post("/predict/async/1", headers=world.auth),
            lambda r: r.status_code != 200,
        )
        recorded = len(world.sink.records)
        assert closed.status_code == 503
        assert closed.headers["retry-after"] == "7"
        assert closed.json()["type"] == "/problems/keys-unavailable"
        readiness = client.get("/readyz")
        assert readiness.status_code == 503
        assert readiness.json()["checks"]["keys"].startswith("reading the API keys failed")
        assert client.post("/predict/sync/1").status_code == 503  # even without a key
        assert len(world.sink.records) == recorded
        flaky.down.clear()
        reopened = poll(
            lambda: client.post("/predict/async/1", headers=world.auth),
            lambda r: r.status_code != 503,
        )
        assert reopened.status_code == 200
        assert client.get("/readyz").status_code == 200
    assert len(world.sink.records) == recorded + 1
    assert {p.caller for p in world.sink.records} == {world.record.id}


# --- Rate limits -------------------------------------------------------------------------


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_the_rate_limit_refills(world: World, fast_path: str) -> None:
    """At 2 requests a second with a burst of 1: the second request at once is refused, one
    after 1/2 s passes; the bucket is the key's, whichever route."""
    rate = 2.0
    app = world.app(fast_path=fast_path, rate_limit_rps=rate, rate_limit_burst=1)
    with TestClient(app) as client:
        client.headers.update(world.auth)
        assert client.post("/predict/sync/1").status_code == 200
        limited = client.post("/predict/async/1")
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "1"
        assert limited.headers["content-type"] == "application/problem+json"
        assert limited.json()["type"] == "/problems/rate-limited"
        assert "www-authenticate" not in limited.headers
        time.sleep(1 / rate)
        assert client.post("/predict/async/1").status_code == 200
    assert [p.route for p in world.sink.records] == ["sync", "async"]


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_the_rate_limit_is_per_key(world: World, fast_path: str) -> None:
    _, other = world.mint("other", "predict")
    app = world.app(fast_path=fast_path, rate_limit_rps=1.0, rate_limit_burst=1)
    with TestClient(app) as client:
        assert client.post("/predict/sync/1", headers=world.auth).status_code == 200
        assert client.post("/predict/sync/1", headers=world.auth).status_code == 429
        assert client.post("/predict/sync/1", headers=bearer(other)).status_code == 200
        assert client.post("/predict/async/1", headers=bearer(other)).status_code == 429
        assert client.post("/predict/async/1", headers=world.auth).status_code == 429
    assert len(world.sink.records) == 2


# --- Hung batches, shutdown, clients that leave ------------------------------------------


class Hanging:
    """A store whose reads hang until released (a frozen database without client deadlines)."""

    def __init__(self, store: FeatureRepository) -> None:
        self.store, self.release, self.entered = store, threading.Event(), threading.Event()

    def latest_many(self, user_ids: Sequence[int]) -> Sequence[Application | FraudscoreError]:
        self.entered.set()
        self.release.wait(10)
        return self.store.latest_many(user_ids)


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_a_hung_batch_answers_503_in_time_and_fails_liveness(world: World, fast_path: str) -> None:
    hanging = Hanging(world.store)
    world.features = hanging
    app = world.app(request_timeout_s=0.3, fast_path=fast_path)
    try:
        with TestClient(app) as client:
            client.headers.update(world.auth)
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


class Watched(MemoryKeyStore):
    """A key store calling ``on_touch`` with every write-back of last-use times."""

    def __init__(self, keys: Sequence[ApiKey], on_touch: Callable[[Mapping[str, Any]], None]):
        super().__init__(keys)
        self.on_touch = on_touch

    def touch(self, used: Mapping[str, datetime]) -> None:
        self.on_touch(used)
        super().touch(used)


def test_shutdown_answers_the_requests_in_flight_before_closing(world: World) -> None:
    """The runtime closes (seen as the gate's final write-back of last uses: with a refresh a
    minute away, the only one carrying a use) only after the request in flight is answered
    and recorded."""
    hanging = Hanging(world.store)
    world.features = hanging
    events: list[str] = []

    def on_touch(used: Mapping[str, Any]) -> None:
        if used:
            events.append(f"runtime closing, {len(world.sink.records)} recorded")

    world.keys = Watched(world.memory_keys.all(), on_touch)
    answers: list[int] = []
    client = TestClient(world.app(keys_refresh_s=60))
    with client:
        worker = threading.Thread(
            target=lambda: answers.append(
                client.post("/predict/sync/1", headers=world.auth).status_code
            )
        )
        worker.start()
        assert hanging.entered.wait(5)
        threading.Timer(0.2, hanging.release.set).start()
    events.append("client closed")
    worker.join(5)
    assert answers == [200]
    assert events == ["runtime closing, 1 recorded", "client closed"]
    assert [p.user_id for p in world.sink.records] == [1]


def asgi_request(path: str, key: str) -> Scope:
    """What a server sends for a bodiless POST with ``key``."""
    return {  # type: ignore[return-value]
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"t"), (b"authorization", f"Bearer {key}".encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_a_request_whose_client_left_while_queued_is_not_scored_or_recorded(
    world: World, fast_path: str
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

        await app(asgi_request("/predict/sync/2", world.key), receive, send)

    app = world.app(fast_path=fast_path)
    try:
        with TestClient(app) as client:
            first = threading.Thread(
                target=client.post, args=("/predict/sync/1",), kwargs={"headers": world.auth}
            )
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


# --- Request ids: X-Request-ID on every predict response, alike on both paths -------------

SANE_ID = "caller-42_A.b:c"
BAD_IDS = {
    "empty": b"",
    "a space": b"two words",
    "a slash": b"a/b",
    "too long": b"x" * 129,
    "not ASCII": "café".encode(),
    "a forged log line": b'x", "level": "CRITICAL',
}
"""X-Request-ID values that are replaced by a new id, never echoed."""
OUTCOMES = ["200", "401", "429", "503", "500"]


def request_id_world(
    world: World, outcome: str
) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    """Settings and headers (without X-Request-ID) for ``outcome`` on ``/predict/*/1``."""
    if outcome == "503":
        world.sink_port = DownSink()
    elif outcome == "500":
        world.features = Exploding()
    settings = {"rate_limit_rps": 1.0, "rate_limit_burst": 1} if outcome == "429" else {}
    auth = [] if outcome == "401" else [(b"authorization", f"Bearer {world.key}".encode())]
    return settings, auth


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("sent", ["sane", "missing", *BAD_IDS])
def test_the_request_id_is_answered_alike_on_both_paths(
    world: World, sent: str, outcome: str
) -> None:
    """A sane X-Request-ID comes back as sent; a missing or bad one is replaced by a new id;
    on both routes, both paths, answered or refused; byte for byte alike."""
    settings, auth = request_id_world(world, outcome)
    given = {"sane": [(b"x-request-id", SANE_ID.encode())], "missing": []}.get(sent)
    if given is None:
        given = [(b"x-request-id", BAD_IDS[sent])]
    headers = httpx.Headers(auth + given)
    fast, _ = exchange(world, True, REQUESTS, headers, **settings)
    slow, _ = exchange(world, False, REQUESTS, headers, **settings)
    assert fast == slow
    expected = SANE_ID if sent == "sane" else "<generated>"
    for (method, path, options, by_fast_path), (status, answered, _) in zip(
        REQUESTS, fast, strict=True
    ):
        if by_fast_path or (method == "POST" and options == {"content": b"{}"}):
            assert answered.get("x-request-id") == expected, (path, status)
    statuses = {status for status, _, _ in fast}
    assert int(outcome) in statuses or outcome == "429"  # the 1st passes, later ones do not
    if outcome == "429":
        assert 429 in statuses


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_new_request_ids_are_unique_and_never_echo_a_bad_one(world: World, fast_path: str) -> None:
    auth = [(b"authorization", f"Bearer {world.key}".encode())]
    with TestClient(world.app(fast_path=fast_path)) as client:
        answers = [
            client.post(f"/predict/{route}/{user}", headers=httpx.Headers([*auth, *extra]))
            for route in ("sync", "async")
            for user in ("1", "3", "x")  # 200, 404, 400
            for extra in ([], [(b"x-request-id", b"bad id")], [(b"x-request-id", "é".encode())])
        ]
        ids = [answer.headers["x-request-id"] for answer in answers]
        assert all(GENERATED_ID.fullmatch(i) for i in ids), ids
        assert len(set(ids)) == len(ids)
        # Other routes carry none, even after predict requests (nothing leaks between them).
        for other in (client.get("/healthcheck"), client.get("/readyz"), client.post("/x")):
            assert "x-request-id" not in other.headers


def test_the_documented_user_id_pattern_is_exactly_the_id_rule() -> None:
    """A fuzzer takes the OpenAPI pattern at its word: every id it allows must be accepted
    (a 19-digit id above 2**63-1 matched the old ``[0-9]{1,19}`` and got a 400)."""
    import random  # noqa: PLC0415
    import re  # noqa: PLC0415

    from fraudscore import parse_user_id  # noqa: PLC0415
    from fraudscore_adapters.http.app import USER_ID_PATTERN  # noqa: PLC0415

    def accepted(text: str) -> bool:
        try:
            parse_user_id(text)
        except FraudscoreError:
            return False
        return True

    pattern = re.compile(USER_ID_PATTERN)
    top = str(2**63 - 1)
    near = [top, str(2**63), str(2**63 - 2), "9" * 19, "0" * 19, "0" * 20, "1" * 18, "", "x1"]
    near += [top[:i] + d + top[i + 1 :] for i in range(19) for d in "0123456789"]
    rng = random.Random(7)
    sampled = ["".join(rng.choices("0123456789", k=rng.randint(1, 20))) for _ in range(20_000)]
    for text in near + sampled:
        assert bool(pattern.match(text)) == accepted(text), text
