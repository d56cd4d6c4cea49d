"""End to end over a real socket: both routes, every error path, a row for every 200, and
the API key in front of the predict routes (refused without one, revoked within the refresh
interval, recorded as the caller, its last use written back)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import polars as pl
import psycopg
import pytest
from psycopg import sql

from tests.e2e.conftest import KEYS_REFRESH_S, Served, bearer, key_id_of, seeded_database, serve

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
MARGIN_S = 2.0
"""On top of FRAUDSCORE_KEYS_REFRESH_S: how late a key change may take effect (a re-read in
flight, a busy machine)."""


@pytest.mark.parametrize("route", ["sync", "async"])
def test_predict_answers_and_records_a_row(served: Served, route: str) -> None:
    response = httpx.post(f"{served.base}/predict/{route}/7", headers=served.auth)
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == 7
    assert 0 <= body["probability"] <= 1
    assert body["is_fraud"] == (body["probability"] >= body["threshold"])
    assert body["model_version"].startswith("xgb-")
    assert served.recorded([body["prediction_id"]]) in (None, 1)
    if served.database_url:  # the audit trail: which key asked
        assert served.callers([body["prediction_id"]]) == [served.key_id]


def test_both_routes_give_the_same_answer(served: Served) -> None:
    sync = httpx.post(f"{served.base}/predict/sync/123", headers=served.auth).json()
    async_ = httpx.post(f"{served.base}/predict/async/123", headers=served.auth).json()
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
    response = httpx.request(method, f"{served.base}{path}", headers=served.auth)
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert "Traceback" not in response.text


def test_an_oversized_body_is_refused(served: Served) -> None:
    response = httpx.post(
        f"{served.base}/predict/sync/7", content=b"x" * 100_000, headers=served.auth
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM


def test_concurrent_requests_all_answered_and_all_recorded(served: Served) -> None:
    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(
            base_url=served.base, limits=limits, timeout=30, headers=served.auth
        ) as client:
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
    # Keys re-read every 2 s, so they stay fresh (10 refreshes) for the whole test: what is
    # checked here is the store's failure, not the gate's failing closed afterwards.
    with (
        seeded_database(server_url, data) as url,
        serve(tmp_path, data, artifacts, url, keys_refresh_s=2.0) as srv,
    ):
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO feature_store (user_id, features, feature_version)"
                " VALUES (3, %s, 'hand-written')",
                ('{"customer_age": 500}',),
            )
        broken = httpx.post(f"{srv.base}/predict/sync/3", headers=srv.auth)
        assert broken.status_code == 422
        fields = {p["field"] for p in broken.json()["problems"]}
        assert "customer_age" in fields
        assert "income" in fields  # missing

        with psycopg.connect(server_url, autocommit=True) as admin:
            name = url.rsplit("/", 1)[-1]
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        for route in ("sync", "async"):
            lost = httpx.post(f"{srv.base}/predict/{route}/5", timeout=15, headers=srv.auth)
            assert lost.status_code == 503, lost.text
            assert lost.headers["retry-after"] == "1"
            assert lost.json()["type"] == "/problems/store-unavailable"
            assert "password" not in lost.text
        ready = httpx.get(f"{srv.base}/readyz", timeout=15)
        assert ready.status_code == 503
        assert ready.json()["checks"]["store"].startswith("store unavailable")


def _within(seconds: float, what: str, done: Callable[[], bool]) -> float:
    """Poll ``done`` until it holds; how long that took (fail after ``seconds``)."""
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > seconds:
            pytest.fail(f"{what}: not within {seconds:g} s")
        time.sleep(0.02)
    return time.monotonic() - started


def _status(served: Served, headers: dict[str, str], route: str = "sync") -> int:
    return httpx.post(f"{served.base}/predict/{route}/7", headers=headers).status_code


@pytest.mark.parametrize("route", ["sync", "async"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer fsk_0123456789ab_not-a-key-of-this-server"},
        {"Authorization": "Basic ZTJlOmUyZQ=="},
    ],
    ids=["no-key", "empty", "unknown-key", "basic"],
)
def test_a_request_without_a_valid_key_gets_401(
    served: Served, route: str, headers: dict[str, str]
) -> None:
    before = served.predictions()
    response = httpx.post(f"{served.base}/predict/{route}/7", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["status"] == 401
    assert body["type"] == "/problems/unauthenticated"
    assert "probability" not in body
    assert served.predictions() == before  # nothing looked up, nothing recorded


def test_a_key_without_the_predict_scope_gets_403(served: Served) -> None:
    admin = served.create_key("e2e-admin-only", "admin")
    _within(
        KEYS_REFRESH_S + MARGIN_S,
        "the new key taken",
        lambda: _status(served, bearer(admin)) != 401,
    )
    response = httpx.post(f"{served.base}/predict/async/7", headers=bearer(admin))
    assert response.status_code == 403
    assert 'scope="predict"' in response.headers["www-authenticate"]
    assert response.json()["type"] == "/problems/forbidden"


def test_a_new_key_is_taken_its_use_recorded_and_once_revoked_refused(served: Served) -> None:
    key = served.create_key("e2e-to-revoke")
    key_id = key_id_of(key)
    assert served.stored(key_id).last_used_at is None
    _within(KEYS_REFRESH_S + MARGIN_S, "the new key taken", lambda: _ok(served, key))
    used = _within(
        KEYS_REFRESH_S + MARGIN_S,
        "last_used_at written back",
        lambda: served.stored(key_id).last_used_at is not None,
    )
    assert used <= KEYS_REFRESH_S + MARGIN_S
    body = httpx.post(f"{served.base}/predict/async/11", headers=bearer(key)).json()
    if served.database_url:  # the audit trail names this key, not the server's other one
        assert served.callers([body["prediction_id"]]) == [key_id]

    revoked = served.cli("keys", "revoke", key_id)  # the real command line, a process of its own
    assert f"revoked API key {key_id}" in revoked.stderr
    assert key not in revoked.stdout + revoked.stderr
    took = _within(
        KEYS_REFRESH_S + MARGIN_S,
        "the revoked key refused",
        lambda: _status(served, bearer(key), "async") == 401,
    )
    assert took <= KEYS_REFRESH_S + MARGIN_S
    assert _status(served, bearer(key), "sync") == 401
    assert _status(served, served.auth) == 200  # the server's own key is untouched
    assert served.stored(key_id).revoked_at is not None


def test_the_last_use_of_a_key_moves_forward(served: Served) -> None:
    assert _ok(served, served.key)
    _within(
        KEYS_REFRESH_S + MARGIN_S,
        "last_used_at written back",
        lambda: served.stored(served.key_id).last_used_at is not None,
    )
    first = served.stored(served.key_id).last_used_at
    assert first is not None
    time.sleep(0.05)
    assert _ok(served, served.key)
    _within(
        KEYS_REFRESH_S + MARGIN_S,
        "a later last_used_at written back",
        lambda: (served.stored(served.key_id).last_used_at or first) > first,
    )


def _ok(served: Served, key: str) -> bool:
    return _status(served, bearer(key)) == 200


def test_offline_scoring_matches_the_routes_row_for_row(
    served: Served, tiny_model: tuple[Path, Path], tmp_path: Path
) -> None:
    """`score --explain` on a Kaggle-layout CSV of the served rows gives each row the
    probability, flag and reasons the HTTP routes give its user (rows are numbered as the
    stores number them)."""
    rows = 40
    pl.read_parquet(tiny_model[0]).head(rows).write_csv(tmp_path / "base.csv")
    out = tmp_path / "scored.csv"
    served.cli("score", str(tmp_path / "base.csv"), "--out", str(out), "--explain")
    offline = pl.read_csv(out)
    assert offline["user_id"].to_list() == list(range(rows))
    for row in offline.iter_rows(named=True):
        route = "sync" if row["user_id"] % 2 else "async"
        answer = httpx.post(
            f"{served.base}/predict/{route}/{row['user_id']}?explain=true", headers=served.auth
        ).json()
        assert answer["probability"] == pytest.approx(row["probability"], abs=1e-12, rel=0)
        assert answer["is_fraud"] == row["is_fraud"]
        assert answer["model_version"] == row["model_version"]
        reasons = json.loads(row["reasons"])
        assert [r["feature"] for r in answer["reasons"]] == [r["feature"] for r in reasons]
        assert [r["value"] for r in answer["reasons"]] == [r["value"] for r in reasons]
        assert [r["contribution"] for r in answer["reasons"]] == pytest.approx(
            [r["contribution"] for r in reasons], abs=1e-6
        )
