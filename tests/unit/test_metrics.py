"""``GET /metrics`` and score drift: counts that match what was sent, on both serving paths;
the metrics of several processes merged; the PSI by hand; who may read the metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fraudscore import FraudscoreError, StoreUnavailable, UnknownUser
from fraudscore_adapters.access import Gate
from fraudscore_adapters.batching import ClientGone, Overloaded
from fraudscore_adapters.http.frontdoor import FrontDoor
from fraudscore_adapters.http.problems import domain_problem, status_and_type
from fraudscore_adapters.monitoring.drift import (
    MANIFEST_KEY,
    PSI_EPSILON,
    DriftWindow,
    ScoreDistribution,
    psi,
)
from fraudscore_adapters.monitoring.prom import Metrics, render_directory
from fraudscore_adapters.xgb import MANIFEST, XGBScorer
from tests.support import RuleScorer
from tests.unit.test_http import World, bearer

pytestmark = pytest.mark.unit

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def world() -> World:
    return World()


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels, through Prometheus's own parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a counter never incremented has no sample)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def scrape(client: TestClient[Any], **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


# --- through the app: both routes, both serving paths ---------------------------------------

SENT = [
    # route, user, key, how many, status, problem
    ("sync", "1", "valid", 3, 200, None),  # housing BA: scored 0.9, flagged
    ("sync", "2", "valid", 2, 200, None),  # scored 0.1
    ("async", "1", "valid", 2, 200, None),
    ("async", "2", "valid", 1, 200, None),
    ("sync", "3", "valid", 2, 404, "unknown-user"),
    ("async", "3", "valid", 1, 404, "unknown-user"),
    ("sync", "abc", "valid", 1, 400, "invalid-user-id"),
    ("sync", "1", "none", 2, 401, "unauthenticated"),
    ("async", "1", "wrong", 1, 401, "unauthenticated"),
    ("async", "1", "admin", 1, 403, "forbidden"),
]


def totals(route: str, *, status: int | None = None, problem: str | None = None) -> int:
    return sum(
        n
        for r, _, _, n, s, p in SENT
        if r == route and status in (None, s) and problem in (None, p)
    )


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_the_counts_match_the_requests_sent(world: World, fast_path: str) -> None:
    _, admin = world.mint("ops", "admin")
    keys = {"valid": bearer(world.key), "admin": bearer(admin), "wrong": bearer("fsk_nope")}
    with TestClient(world.app(fast_path=fast_path)) as client:
        for route, user, key, times, status, _ in SENT:
            for _ in range(times):
                response = client.post(f"/predict/{route}/{user}", headers=keys.get(key, {}))
                assert response.status_code == status, response.text
        got = scrape(client)

    for route in ("sync", "async"):
        for status in {s for r, _, _, _, s, _ in SENT if r == route}:
            assert value(got, "fraudscore_requests_total", route=route, status=str(status)) == (
                totals(route, status=status)
            ), (route, status)
        for problem in {p for r, _, _, _, _, p in SENT if r == route and p}:
            assert value(
                got, "fraudscore_request_errors_total", route=route, problem=problem
            ) == totals(route, problem=problem), (route, problem)
        sent = totals(route)
        assert value(got, "fraudscore_request_duration_seconds_count", route=route) == sent
        assert value(got, "fraudscore_request_duration_seconds_bucket", route=route, le="+Inf") == (
            sent
        )
        assert value(got, "fraudscore_request_duration_seconds_sum", route=route) > 0
        answered = totals(route, status=200)
        flagged = sum(n for r, u, _, n, s, _ in SENT if r == route and u == "1" and s == 200)
        assert value(got, "fraudscore_flagged_total", route=route) == flagged
        # one request at a time: each that reached the batcher was a batch of one
        batched = answered + totals(route, status=404) + totals(route, status=400)
        assert value(got, "fraudscore_batch_size_count", route=route) == batched
        assert value(got, "fraudscore_batch_size_sum", route=route) == batched
        assert value(got, "fraudscore_queue_depth", route=route) == 0
        # a bad id is refused before the store; an unknown user before the model
        read = answered + totals(route, status=404)
        assert value(got, "fraudscore_store_duration_seconds_count", route=route, op="read") == read
        assert value(got, "fraudscore_store_duration_seconds_count", route=route, op="write") == (
            answered
        )
        assert value(got, "fraudscore_model_duration_seconds_count", route=route) == answered

    answered = totals("sync", status=200) + totals("async", status=200)
    assert value(got, "fraudscore_score_count") == answered
    assert value(got, "fraudscore_score_bucket", le="0.1") == 3  # the users 2
    flagged_sum = 0.9 * (answered - 3) + 0.1 * 3
    assert value(got, "fraudscore_score_sum") == pytest.approx(flagged_sum)
    assert series(got, "fraudscore_model_info") == {frozenset({("model_version", "rule-1")}): 1.0}
    assert math.isnan(value(got, "fraudscore_score_psi"))  # the fake model has no reference
    assert not series(got, "fraudscore_db_pool_connections")  # in memory: no pools


def test_a_scrape_counts_no_request_of_its_own(world: World) -> None:
    with TestClient(world.app()) as client:
        assert client.post("/predict/sync/1", headers=world.auth).status_code == 200
        first, second = scrape(client), scrape(client)
    for got in (first, second):
        assert value(got, "fraudscore_requests_total", route="sync", status="200") == 1
        assert value(got, "fraudscore_request_duration_seconds_count", route="sync") == 1


# --- who may read them ----------------------------------------------------------------------


def test_metrics_are_open_by_default(world: World) -> None:
    with TestClient(world.app()) as client:
        assert client.get("/metrics").status_code == 200


def test_metrics_can_require_an_admin_key(world: World) -> None:
    _, admin = world.mint("prometheus", "admin")
    with TestClient(world.app(metrics_access="admin")) as client:
        missing = client.get("/metrics")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["type"] == "/problems/unauthenticated"
        assert client.get("/metrics", headers=bearer("fsk_nope")).status_code == 401
        forbidden = client.get("/metrics", headers=bearer(world.key))
        assert forbidden.status_code == 403
        assert 'scope="admin"' in forbidden.headers["www-authenticate"]
        assert client.get("/metrics", headers=bearer(admin)).status_code == 200


# --- drift through the app ------------------------------------------------------------------

HALVES = {"edges": [0.5], "shares": [0.5, 0.5], "rows": 1000}
"""A reference: half the validation scores at or below 0.5, half above."""


class DescribedScorer(RuleScorer):
    """The rule model, with a manifest as a trained model's (a validation distribution)."""

    model_version = "rule-2"
    manifest: Mapping[str, object] = {"model_version": "rule-2", MANIFEST_KEY: HALVES}


def test_the_psi_of_the_latest_scores_is_exported(world: World) -> None:
    world.scorer = DescribedScorer()
    with TestClient(world.app(drift_window=4)) as client:
        client.headers.update(world.auth)

        def psi_now() -> float:
            return value(scrape(client), "fraudscore_score_psi")

        for user in (1, 2, 2):
            assert client.post(f"/predict/async/{user}").status_code == 200
        assert math.isnan(psi_now())  # 3 scores: the window of 4 is not full yet
        assert client.post("/predict/sync/2").status_code == 200
        # window: 0.9, 0.1, 0.1, 0.1 -> shares 0.25 (<= 0.5) and 0.75 against 0.5 and 0.5
        by_hand = (0.75 - 0.5) * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5)
        assert psi_now() == pytest.approx(by_hand)
        assert by_hand == pytest.approx(0.2747, abs=1e-4)
        for _ in range(4):
            assert client.post("/predict/sync/1").status_code == 200
        # the four oldest left the window: every score above 0.5, none below (floored)
        emptied = (PSI_EPSILON - 0.5) * math.log(PSI_EPSILON / 0.5) + 0.5 * math.log(2)
        assert psi_now() == pytest.approx(emptied)
        got = scrape(client)
    assert series(got, "fraudscore_model_info") == {frozenset({("model_version", "rule-2")}): 1.0}


def test_a_real_model_is_compared_with_its_validation_scores(
    world: World, tiny_model: tuple[Path, Path]
) -> None:
    scorer = XGBScorer.load(tiny_model[1])
    reference = ScoreDistribution.from_manifest(scorer.manifest)
    assert reference is not None
    world.scorer = scorer
    served = []
    with TestClient(world.app(drift_window=6)) as client:
        client.headers.update(world.auth)
        for user in (1, 2, 1, 2, 2, 2):
            served.append(client.post(f"/predict/async/{user}").json()["probability"])
        got = scrape(client)
    window = DriftWindow(reference, size=6)
    window.add(served)
    assert math.isfinite(window.psi())
    assert value(got, "fraudscore_score_psi") == pytest.approx(window.psi())
    assert value(got, "fraudscore_model_info", model_version=scorer.model_version) == 1


def test_a_model_trained_before_drift_monitoring_still_serves(
    world: World, tiny_model: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An older manifest, without the validation distribution: the model loads and serves,
    the PSI is NaN and a warning says why."""
    old = Path(shutil.copytree(tiny_model[1], tmp_path / "old"))
    manifest = json.loads((old / MANIFEST).read_text())
    del manifest[MANIFEST_KEY]
    (old / MANIFEST).write_text(json.dumps(manifest))
    world.scorer = XGBScorer.load(old)
    with caplog.at_level(logging.WARNING), TestClient(world.app(drift_window=1)) as client:
        assert client.post("/predict/sync/1", headers=world.auth).status_code == 200
        got = scrape(client)
    assert math.isnan(value(got, "fraudscore_score_psi"))
    assert value(got, "fraudscore_score_count") == 1
    assert "no validation score distribution" in caplog.text


# --- the metrics object ---------------------------------------------------------------------


def test_a_model_swapped_at_run_time_changes_the_version_and_the_reference() -> None:
    metrics = Metrics(drift_window=2)
    metrics.model_loaded({"model_version": "v1", MANIFEST_KEY: HALVES})
    metrics.scored([0.9, 0.9])
    assert value(parse(metrics.render().decode()), "fraudscore_score_psi") > 1
    metrics.model_loaded({"model_version": "v2", MANIFEST_KEY: HALVES})
    got = parse(metrics.render().decode())
    assert series(got, "fraudscore_model_info") == {
        frozenset({("model_version", "v1")}): 0.0,
        frozenset({("model_version", "v2")}): 1.0,
    }
    assert math.isnan(value(got, "fraudscore_score_psi"))  # a new window for the new model
    metrics.scored([0.1, 0.9])
    assert value(parse(metrics.render().decode()), "fraudscore_score_psi") == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("saved", "why"),
    [(None, "no validation score distribution"), ({"edges": [0.5]}, "unusable")],
)
def test_a_manifest_without_a_usable_reference_leaves_the_psi_nan_and_says_so(
    caplog: pytest.LogCaptureFixture, saved: object, why: str
) -> None:
    metrics = Metrics(drift_window=1)
    manifest = {"model_version": "old"} | ({} if saved is None else {MANIFEST_KEY: saved})
    with caplog.at_level(logging.WARNING, logger="fraudscore.metrics"):
        metrics.model_loaded(manifest)
    assert why in caplog.text
    assert "fraudscore_score_psi stays NaN" in caplog.text
    metrics.scored([0.3])
    got = parse(metrics.render().decode())
    assert math.isnan(value(got, "fraudscore_score_psi"))
    assert value(got, "fraudscore_score_count") == 1  # the scores are still counted
    assert value(got, "fraudscore_model_info", model_version="old") == 1


class OpenGate(Gate):
    def __init__(self) -> None:
        super().__init__(rate=1.0, burst=1, max_stale_s=1.0)

    def admit(self, authorization: bytes | None, scope: str) -> str:
        return "caller"


class Failing:
    """A route's batcher whose every request ends with ``exc``."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def predict(
        self,
        user_id: str,
        caller: str | None = None,
        watch: object = None,
        *,
        explain: bool = False,
    ) -> Any:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "status", "problem"),
    [
        (ClientGone(), 499, "client-gone"),
        (UnknownUser(5), 404, "unknown-user"),
        (StoreUnavailable("down"), 503, "store-unavailable"),
        (Overloaded(512), 503, "overloaded"),
        (RuntimeError("a bug"), 500, "internal-error"),
    ],
)
def test_an_error_counts_as_the_problem_table_answers_it(
    exc: BaseException, status: int, problem: str
) -> None:
    """Status and type come from the table the answers come from; a client gone before its
    batch, answered by nobody, counts as the table's 499 ``client-gone``."""
    door = FrontDoor()
    door.gate, door.metrics = OpenGate(), Metrics()
    door.routes["async"] = Failing(exc)  # type: ignore[assignment]  # quacks alike

    async def receive() -> Any:
        raise AssertionError("not watched")

    with pytest.raises(type(exc)):
        asyncio.run(door.predict("async", "5", [], receive))
    assert status_and_type(exc) == (status, problem)
    if isinstance(exc, FraudscoreError):  # what both paths answer
        answered = domain_problem(exc, "POST", "/predict/async/5")
        assert (answered.status, answered.type) == (status, f"/problems/{problem}")
    got = parse(door.metrics.render().decode())
    assert value(got, "fraudscore_requests_total", route="async", status=str(status)) == 1
    assert value(got, "fraudscore_request_errors_total", route="async", problem=problem) == 1
    assert value(got, "fraudscore_request_duration_seconds_count", route="async") == 1


# --- PSI by hand ----------------------------------------------------------------------------


def test_the_psi_of_identical_distributions_is_zero() -> None:
    shares = [0.1] * 10
    assert psi(shares, shares) == 0.0
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_the_psi_of_a_known_shift() -> None:
    # by hand: (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    #        = 0.25 * 0.693147 + 0.25 * 0.405465 = 0.274653
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.274653, abs=1e-6)
    # deciles, the last giving half its mass to the one before:
    # (0.15 - 0.1) ln(0.15 / 0.1) + (0.05 - 0.1) ln(0.05 / 0.1) = 0.05 (ln 1.5 + ln 2)
    moved = [0.1] * 8 + [0.15, 0.05]
    assert psi([0.1] * 10, moved) == pytest.approx(0.05 * (math.log(1.5) + math.log(2)))
    assert psi([0.1] * 10, moved) == pytest.approx(0.054931, abs=1e-6)


def test_an_empty_bin_is_floored_at_epsilon() -> None:
    got = psi([0.5, 0.5], [0.0, 1.0])
    by_hand = (PSI_EPSILON - 0.5) * math.log(PSI_EPSILON / 0.5) + 0.5 * math.log(2)
    assert got == pytest.approx(by_hand)
    assert got == pytest.approx(4.6043, abs=1e-4)
    with pytest.raises(ValueError, match="2 expected shares, 3 actual"):
        psi([0.5, 0.5], [0.2, 0.3, 0.5])


def test_deciles_of_known_scores() -> None:
    scores = [i / 100 for i in range(1, 101)]  # 0.01 .. 1.00
    deciles = ScoreDistribution.of_scores(reversed(scores))
    assert deciles.edges == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    assert deciles.shares == pytest.approx([0.1] * 10)
    assert deciles.rows == 100
    assert [deciles.bin_of(s) for s in (0.0, 0.1, 0.1000001, 0.95, 2.0)] == [0, 0, 1, 9, 9]
    # ties merge bins: 60% of the scores are 0
    tied = ScoreDistribution.of_scores([0.0] * 6 + [0.2, 0.4, 0.6, 0.8])
    assert tied.edges == (0.0, 0.2, 0.4, 0.6)
    assert tied.shares == pytest.approx([0.6, 0.1, 0.1, 0.1, 0.1])
    assert ScoreDistribution.from_manifest({MANIFEST_KEY: tied.as_dict()}) == tied
    assert ScoreDistribution.from_manifest({}) is None
    with pytest.raises(ValueError, match="add up to 1"):
        ScoreDistribution((0.5,), (0.5, 0.6), 10)


def test_the_window_keeps_the_latest_scores_only() -> None:
    window = DriftWindow(ScoreDistribution((0.5,), (0.5, 0.5), 100), size=4)
    window.add([0.9, 0.9, 0.9])
    assert math.isnan(window.psi())
    assert window.shares() == [0.0, 1.0]
    window.add([0.1, 0.1, 0.1, 0.9])  # evicts the three 0.9s
    assert window.filled == 4
    assert window.shares() == [0.75, 0.25]
    assert window.psi() == pytest.approx(psi([0.5, 0.5], [0.75, 0.25]))
    window.add([0.2, 0.8])
    assert window.shares() == [0.5, 0.5]
    assert window.psi() == 0.0


# --- several processes ----------------------------------------------------------------------

RECORDER = textwrap.dedent(
    """
    import sys, time
    from fraudscore_adapters.monitoring.prom import Metrics

    directory, answered, then = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    metrics = Metrics(drift_window=2, multiprocess_dir=directory)
    halves = {"edges": [0.5], "shares": [0.5, 0.5], "rows": 2}
    metrics.model_loaded({"model_version": "v1", "validation_scores": halves})
    for _ in range(answered):
        metrics.answered("sync", True, time.perf_counter())
    metrics.failed("async", 404, "unknown-user", time.perf_counter())
    metrics.route("sync").batch(answered, 3)
    metrics.scored([0.9] * answered)
    print("recorded", flush=True)
    if then == "stay":
        sys.stdin.readline()
    """
)


def recorder(directory: Path, answered: int, then: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    process = subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(directory), str(answered), then],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "recorded"
    return process


def test_a_scrape_adds_up_every_process(tmp_path: Path) -> None:
    """Two processes record into one directory (as two server workers do); the scrape sums
    counters and histograms over both, dead or alive, and shows only live processes' gauges."""
    staying = recorder(tmp_path, 3, "stay")
    try:
        gone = recorder(tmp_path, 2, "exit")  # dies without saying so
        gone.communicate(timeout=10)
        assert gone.returncode == 0
        got = parse(render_directory(str(tmp_path)).decode())
        assert value(got, "fraudscore_requests_total", route="sync", status="200") == 5
        assert value(got, "fraudscore_flagged_total", route="sync") == 5
        errors = "fraudscore_request_errors_total"
        assert value(got, errors, route="async", problem="unknown-user") == 2
        assert value(got, "fraudscore_request_duration_seconds_count", route="sync") == 5
        assert value(got, "fraudscore_batch_size_sum", route="sync") == 5
        assert value(got, "fraudscore_score_count") == 5
        # gauges: the dead process's were dropped at the scrape
        assert value(got, "fraudscore_queue_depth", route="sync") == 3  # livesum: only one left
        assert series(got, "fraudscore_model_info") == {frozenset({("model_version", "v1")}): 1}
        psi_series = series(got, "fraudscore_score_psi")  # liveall: one series per process
        assert list(psi_series) == [frozenset({("pid", str(staying.pid))})]
        assert next(iter(psi_series.values())) > 1  # 0.9, 0.9 against halves
    finally:
        staying.communicate(timeout=10)  # its stdin closed: it exits, without saying so either
    got = parse(render_directory(str(tmp_path)).decode())
    assert value(got, "fraudscore_requests_total", route="sync", status="200") == 5  # kept
    assert not series(got, "fraudscore_model_info")  # no live process serves a model
    assert not series(got, "fraudscore_score_psi")
    assert not series(got, "fraudscore_queue_depth")


def test_multiprocess_mode_must_be_chosen_before_prometheus_client_is_imported(
    tmp_path: Path,
) -> None:
    """A worker forked from a process that imported prometheus-client without the variable
    would keep its counts to itself: it refuses to start instead."""
    assert "prometheus_client" in sys.modules  # imported by this module, without the variable
    with pytest.raises(RuntimeError, match="set after prometheus_client was imported"):
        Metrics(multiprocess_dir=str(tmp_path))


SERVE_DIR = textwrap.dedent(
    """
    import os, stat, sys
    from fraudscore_adapters.monitoring.procdir import shared_metrics_dir

    with shared_metrics_dir() as path:
        import prometheus_client.values as values
        assert values.ValueClass is not values.MutexValue, "not in multiprocess mode"
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(path)
        print(path, oct(stat.S_IMODE(path.stat().st_mode)), flush=True)
    print("PROMETHEUS_MULTIPROC_DIR" in os.environ, path.exists())
    """
)


def test_the_servers_metrics_directory_is_private_and_removed_after() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", SERVE_DIR], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    inside, after = done.stdout.splitlines()
    path, mode = inside.split()
    assert Path(path).name.startswith("fraudscore-metrics-")
    assert mode == oct(stat.S_IRWXU)  # 0o700
    assert after == "False False"
    assert not Path(path).exists()
