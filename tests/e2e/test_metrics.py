"""``GET /metrics`` of a real server with two worker processes: whichever worker answers the
scrape, the counts are those of every request sent, to either worker."""

from __future__ import annotations

import math
import re
import stat
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Served, serve

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str) -> Samples:
    response = httpx.get(f"{base}/metrics", timeout=10)  # a new connection each time
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_two_workers_count_every_request_once(
    tiny_model: tuple[Path, Path], tmp_path: Path
) -> None:
    data, artifacts = tiny_model
    settings = {"FRAUDSCORE_WORKERS": "2", "FRAUDSCORE_DRIFT_WINDOW": "2"}
    with serve(tmp_path, data, artifacts, None, settings=settings) as served:
        log = (tmp_path / f"server-{served.base.rsplit(':', 1)[1]}.log").read_text()
        found = re.search(r"metrics: the workers share (\S+)", log)
        assert found, log
        shared = Path(found.group(1))
        assert stat.S_IMODE(shared.stat().st_mode) == 0o700

        flagged = {"sync": 0, "async": 0}
        sent = {("sync", 200): 30, ("async", 200): 20, ("sync", 404): 3, ("async", 401): 4}
        for (route, status), times in sent.items():
            for i in range(times):
                user = 7_999_999 if status == 404 else i
                headers = {} if status == 401 else served.auth
                # no client object: a new connection per request, spread over both workers
                answer = httpx.post(f"{served.base}/predict/{route}/{user}", headers=headers)
                assert answer.status_code == status, answer.text
                if status == 200:
                    flagged[route] += answer.json()["is_fraud"]

        for _ in range(6):  # each scrape answered by either worker: all the same counts
            got = scrape(served.base)
            for (route, status), times in sent.items():
                requests = value(got, "fraudscore_requests_total", route=route, status=str(status))
                assert requests == times, (route, status)
                assert value(got, "fraudscore_flagged_total", route=route) == flagged[route]
            for route in ("sync", "async"):
                answered = sum(n for (r, s), n in sent.items() if r == route)
                latency = value(got, "fraudscore_request_duration_seconds_count", route=route)
                assert latency == answered
            errors = "fraudscore_request_errors_total"
            assert value(got, errors, route="sync", problem="unknown-user") == 3
            assert value(got, errors, route="async", problem="unauthenticated") == 4
            assert value(got, "fraudscore_score_count") == 50
            assert value(got, "fraudscore_model_duration_seconds_count", route="sync") == 30
            versions = [
                labels for (name, labels), v in got.items() if name == "fraudscore_model_info"
            ]
            assert len(versions) == 1
            assert dict(versions[0])["model_version"].startswith("xgb-")
            # one PSI per live worker (liveall, by pid); finite once a worker served 2 scores:
            # both did, so the counts above summed two processes' files
            psi = {
                dict(labels)["pid"]: v
                for (n, labels), v in got.items()
                if n == "fraudscore_score_psi"
            }
            assert len(psi) == 2, psi
            assert not any(math.isnan(v) for v in psi.values()), psi
    assert not shared.exists()  # removed when the server stopped


def test_the_database_pools_are_reported(served: Served) -> None:
    """On PostgreSQL, both pools' connections (the test server's defaults: 2 to 8 each); in
    memory, no pool at all."""
    for route in ("sync", "async"):
        answer = httpx.post(f"{served.base}/predict/{route}/7", headers=served.auth)
        assert answer.status_code == 200
    got = scrape(served.base)
    for route in ("sync", "async"):
        assert value(got, "fraudscore_requests_total", route=route, status="200") == 1
        assert value(got, "fraudscore_store_duration_seconds_count", route=route, op="write") == 1
    pools = {dict(labels)["pool"] for (n, labels) in got if n.startswith("fraudscore_db_pool_")}
    if served.database_url is None:
        assert pools == set()
        return
    assert pools == {"sync", "async"}
    for pool in pools:
        assert value(got, "fraudscore_db_pool_max_connections", pool=pool) == 8
        in_use = value(got, "fraudscore_db_pool_connections", pool=pool, state="in_use")
        idle = value(got, "fraudscore_db_pool_connections", pool=pool, state="idle")
        assert 0 <= in_use <= 8
        assert 2 <= in_use + idle <= 8
        assert value(got, "fraudscore_db_pool_waiting", pool=pool) == 0
