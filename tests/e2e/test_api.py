"""End to end over a real socket: both routes, every error path, a row for every 200."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.e2e.conftest import Served, seeded_database, serve

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


@pytest.mark.parametrize("route", ["sync", "async"])
def test_predict_answers_and_records_a_row(served: Served, route: str) -> None:
    response = httpx.post(f"{served.base}/predict/{route}/7")
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == 7
    assert 0 <= body["probability"] <= 1
    assert body["is_fraud"] == (body["probability"] >= body["threshold"])
    assert body["model_version"].startswith("xgb-")
    assert served.recorded([body["prediction_id"]]) in (None, 1)


def test_both_routes_give_the_same_answer(served: Served) -> None:
    sync = httpx.post(f"{served.base}/predict/sync/123").json()
    async_ = httpx.post(f"{served.base}/predict/async/123").json()
    assert sync["prediction_id"] != async_["prediction_id"]
    for body in (sync, async_):
        del body["prediction_id"], body["created_at"]
    assert sync == async_


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/predict/sync/abc", 400),
        ("POST", "/predict/async/12%2034", 400),
        ("POST", "/predict/async/99999999999999999999", 400),
        ("POST", "/predict/sync/9223372036854775808", 400),
        ("POST", "/predict/sync/7999999", 404),
        ("POST", "/predict/async/7999999", 404),
        ("GET", "/predict/sync/7", 405),
        ("POST", "/nowhere", 404),
    ],
)
def test_error_paths_are_problem_details(
    served: Served, method: str, path: str, status: int
) -> None:
    response = httpx.request(method, f"{served.base}{path}")
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert "Traceback" not in response.text


def test_an_oversized_body_is_refused(served: Served) -> None:
    response = httpx.post(f"{served.base}/predict/sync/7", content=b"x" * 100_000)
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM


def test_concurrent_requests_all_answered_and_all_recorded(served: Served) -> None:
    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=served.base, limits=limits, timeout=30) as client:
            calls = [
                client.post(f"/predict/{'async' if i % 3 else 'sync'}/{i % 500}")
                for i in range(300)
            ]
            return await asyncio.gather(*calls)

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 300
    ids = [r.json()["prediction_id"] for r in responses]
    assert len(set(ids)) == 300
    assert [r.json()["user_id"] for r in responses] == [i % 500 for i in range(300)]
    assert served.recorded(ids) in (None, 300)


@pytest.mark.integration
def test_corrupt_stored_features_and_a_lost_database(
    server_url: str, tiny_model: tuple[Path, Path], tmp_path: Path
) -> None:
    data, artifacts = tiny_model
    with seeded_database(server_url, data) as url, serve(tmp_path, data, artifacts, url) as srv:
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO feature_store (user_id, features, feature_version)"
                " VALUES (3, %s, 'hand-written')",
                ('{"customer_age": 500}',),
            )
        broken = httpx.post(f"{srv.base}/predict/sync/3")
        assert broken.status_code == 422
        fields = {p["field"] for p in broken.json()["problems"]}
        assert "customer_age" in fields
        assert "income" in fields  # missing

        with psycopg.connect(server_url, autocommit=True) as admin:
            name = url.rsplit("/", 1)[-1]
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        for route in ("sync", "async"):
            lost = httpx.post(f"{srv.base}/predict/{route}/5", timeout=15)
            assert lost.status_code == 503, lost.text
            assert lost.headers["retry-after"] == "1"
            assert lost.json()["type"] == "/problems/store-unavailable"
            assert "password" not in lost.text
        ready = httpx.get(f"{srv.base}/readyz", timeout=15)
        assert ready.status_code == 503
        assert ready.json()["checks"]["store"].startswith("store unavailable")
