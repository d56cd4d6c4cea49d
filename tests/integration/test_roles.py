"""The API's database role: what the server does in the database, and nothing more.

Migration 0004.app-role grants the NOLOGIN group role ``fraudscore_app``; the API logs in as a
member of it (``CREATE ROLE ... LOGIN IN ROLE fraudscore_app``). These tests log in the same
way, as a login role of their own (with a password, so they pass under trust and password
authentication alike), dropped afterwards whatever happens. The migration owner, here the
test server's superuser, keeps everything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from fraudscore import Application, Prediction, StoreError, UnknownUser
from fraudscore_adapters import postgres
from fraudscore_adapters.access.keys import mint
from fraudscore_adapters.migrate import apply_migrations, rollback_migrations
from fraudscore_adapters.postgres.keys import PostgresKeyStore
from fraudscore_adapters.postgres.rows import INSERT_PREDICTIONS_SQL, predictions_json
from tests.conftest import MIGRATIONS, fresh_database
from tests.pgcluster import ThrowawayCluster, postgres_bin
from tests.support import RAW_APPLICATION

pytestmark = pytest.mark.integration

APP_ROLE = "fraudscore_app"
LATEST = "0005.prediction-reasons"
"""The newest migration."""
KEY_ID = "0123456789ab"
USER = 42
INIT_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "postgres-init" / "10-roles.sh"


def as_user(url: str, user: str, password: str) -> str:
    """``url`` (a ``postgresql://`` URL, as migrations need) logging in as ``user``."""
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def login_role(
    admin_url: str, *, member_of: str | None = APP_ROLE, grants: Sequence[str] = ()
) -> Iterator[str]:
    """A connection string of a new LOGIN role (``IN ROLE member_of``, plus ``grants``, each
    with ``{role}`` for its name); the role is dropped on exit, a failure included."""
    name = f"fraudscore_test_login_{uuid.uuid4().hex[:12]}"
    role = sql.Identifier(name)
    password = secrets.token_hex(16)
    create = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password))
    if member_of:
        create += sql.SQL(" IN ROLE {}").format(sql.Identifier(member_of))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(create)
    try:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for grant in grants:
                admin.execute(sql.SQL(grant).format(role=role))
        yield as_user(admin_url, name, password)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(role))  # anything it managed
            admin.execute(sql.SQL("DROP ROLE {}").format(role))


def seed(url: str) -> None:
    """As the owner: one user's features, one API key, one prediction."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO feature_store (user_id, features, feature_version) VALUES (%s, %s, %s)",
            (USER, json.dumps(RAW_APPLICATION), postgres.FEATURE_VERSION),
        )
        conn.execute(
            "INSERT INTO api_keys (id, name, key_sha256, scopes) VALUES (%s, 'test', %s, %s)",
            (KEY_ID, "ab" * 32, ["predict"]),
        )
        conn.execute(INSERT_PREDICTIONS_SQL, (predictions_json([prediction()]),))


def prediction(prediction_id: uuid.UUID | None = None) -> Prediction:
    return Prediction(
        prediction_id or uuid.uuid4(), USER, 0.2, False, 0.5, "t", "sync", datetime.now(UTC)
    )


@pytest.fixture(scope="module")
def owner_url(server_url: str) -> Iterator[str]:
    """A migrated, seeded database of this module's own (its URL is the owner's)."""
    with fresh_database(server_url) as url:
        apply_migrations(url, MIGRATIONS)
        seed(url)
        yield url


@pytest.fixture(scope="module")
def app_url(owner_url: str) -> Iterator[str]:
    """The database as a login role that is a member of fraudscore_app."""
    with login_role(owner_url) as url:
        yield url


@contextlib.contextmanager
def pool(url: str) -> Iterator[Any]:
    with postgres.open_pool(
        url, min_size=1, max_size=1, timeout_s=3.0, statement_timeout_ms=3_000
    ) as opened:
        yield opened


def count_predictions(url: str, prediction_id: uuid.UUID) -> int:
    with psycopg.connect(url) as conn:
        cursor = conn.execute("SELECT count(*) FROM predictions WHERE id = %s", (prediction_id,))
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


# --- what the API does --------------------------------------------------------------------------


def test_the_app_role_reads_features_through_the_store(app_url: str) -> None:
    with pool(app_url) as opened:
        found, missing = postgres.PostgresFeatureStore(opened).latest_many([USER, 7])
    assert isinstance(found, Application)
    assert isinstance(missing, UnknownUser)


def test_the_app_role_records_a_prediction_once(app_url: str, owner_url: str) -> None:
    first, second = prediction(), prediction()
    with pool(app_url) as opened:
        sink = postgres.PostgresPredictionSink(opened)
        assert sink.record_many([first]) is None
        assert sink.record_many([first, second]) is None  # ON CONFLICT (id) DO NOTHING
    assert count_predictions(owner_url, first.prediction_id) == 1
    assert count_predictions(owner_url, second.prediction_id) == 1


def test_the_app_role_reads_keys_and_stamps_their_last_use(app_url: str, owner_url: str) -> None:
    with psycopg.connect(app_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id, key_sha256, scopes, revoked_at FROM api_keys").fetchall()
        assert rows == [(KEY_ID, "ab" * 32, ["predict"], None)]
        stamp = datetime.now(UTC)
        done = conn.execute("UPDATE api_keys SET last_used_at = %s WHERE id = %s", (stamp, KEY_ID))
        assert done.rowcount == 1
    with psycopg.connect(owner_url) as conn:
        row = conn.execute("SELECT last_used_at FROM api_keys WHERE id = %s", (KEY_ID,))
        assert row.fetchone() == (stamp,)


def test_the_key_store_of_the_server_works_as_the_app_role_and_the_cli_one_does_not(
    app_url: str,
) -> None:
    used = datetime.now(UTC)
    with pool(app_url) as opened:
        store = PostgresKeyStore.on_pool(opened, timeout_s=3.0)
        store.touch({KEY_ID: used})
        (key,) = store.all()
        assert (key.id, key.last_used_at, key.revoked_at) == (KEY_ID, used, None)
        with pytest.raises(StoreError) as adding:  # creating and revoking keys is the owner's
            store.add(mint("mine", ["admin"])[0])
        with pytest.raises(StoreError) as revoking:
            store.revoke(KEY_ID, used)
    for refused in (adding, revoking):
        assert isinstance(refused.value.__cause__, psycopg.errors.InsufficientPrivilege)


def test_the_readiness_probe_of_the_app_role_says_ok(app_url: str) -> None:
    with pool(app_url) as opened:
        assert postgres.probe(opened, timeout_s=3.0) == "ok"


# --- and nothing else ---------------------------------------------------------------------------

TABLES = ("feature_store", "predictions", "api_keys")
DENIED: dict[str, str] = {
    "update predictions": "UPDATE predictions SET probability = 0",
    "delete predictions": "DELETE FROM predictions",
    "truncate predictions": "TRUNCATE predictions",
    "read predictions": "SELECT user_id, probability, is_fraud FROM predictions",
    "update feature_store": "UPDATE feature_store SET user_id = 1",
    "insert feature_store": (
        "INSERT INTO feature_store (user_id, features, feature_version) VALUES (1, '{}', 'x')"
    ),
    "delete feature_store": "DELETE FROM feature_store",
    "truncate feature_store": "TRUNCATE feature_store",
    "insert api_keys": (
        "INSERT INTO api_keys (id, name, key_sha256, scopes)"
        " VALUES ('ba9876543210', 'mine', repeat('0', 64), '{admin}')"
    ),
    "delete api_keys": "DELETE FROM api_keys",
    "truncate api_keys": "TRUNCATE api_keys",
    "unrevoke a key": "UPDATE api_keys SET revoked_at = NULL",
    "widen a key's scopes": "UPDATE api_keys SET scopes = '{predict,admin}'",
    "replace a key's hash": "UPDATE api_keys SET key_sha256 = repeat('0', 64)",
    "stamp and unrevoke at once": "UPDATE api_keys SET last_used_at = now(), revoked_at = NULL",
    **{f"drop {t}": f"DROP TABLE {t}" for t in TABLES},
    **{f"alter {t}": f"ALTER TABLE {t} ADD COLUMN sneaky int" for t in TABLES},
    "create a table in public": "CREATE TABLE public.sneaky (a int)",
    "create a schema": "CREATE SCHEMA sneaky",
    "rewrite the migration log": "DELETE FROM _yoyo_migration",
}


@pytest.mark.parametrize("statement", list(DENIED.values()), ids=list(DENIED))
def test_the_app_role_may_not(app_url: str, statement: str) -> None:
    with (
        psycopg.connect(app_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


def grants(url: str) -> dict[str, set[tuple[str, ...]]]:
    """Every privilege fraudscore_app holds in the database at ``url``, by kind of object."""
    holder = "a.grantee = %(role)s::regrole"
    queries = {
        "database": "SELECT d.datname, a.privilege_type FROM pg_database d, aclexplode(d.datacl)"
        f" a WHERE d.datname = current_database() AND {holder}",
        "schema": f"SELECT n.nspname, a.privilege_type FROM pg_namespace n, aclexplode(n.nspacl)"
        f" a WHERE {holder}",
        "table": f"SELECT c.relname, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a"
        f" WHERE {holder}",
        "column": "SELECT c.relname, t.attname, a.privilege_type FROM pg_attribute t"
        f" JOIN pg_class c ON c.oid = t.attrelid, aclexplode(t.attacl) a WHERE {holder}",
    }
    with psycopg.connect(url) as conn:
        return {
            kind: set(conn.execute(query, {"role": APP_ROLE}).fetchall())
            for kind, query in queries.items()
        }


EXACT_GRANTS = {
    "database": set(),
    "schema": {("public", "USAGE")},
    "table": {("feature_store", "SELECT"), ("predictions", "INSERT"), ("api_keys", "SELECT")},
    "column": {("predictions", "id", "SELECT"), ("api_keys", "last_used_at", "UPDATE")},
}
NO_GRANTS: dict[str, set[tuple[str, ...]]] = {kind: set() for kind in EXACT_GRANTS}


def test_fraudscore_app_holds_exactly_these_grants(owner_url: str) -> None:
    assert grants(owner_url) == EXACT_GRANTS
    with psycopg.connect(owner_url) as conn:
        row = conn.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication,"
            " rolbypassrls FROM pg_roles WHERE rolname = %s",
            (APP_ROLE,),
        ).fetchone()
    assert row == (False,) * 6


def test_on_conflict_id_needs_select_on_id(owner_url: str) -> None:
    """Why predictions grants SELECT (id): the recording INSERT's conflict target is read."""
    rows = (predictions_json([prediction()]),)
    insert_only = [
        "GRANT USAGE ON SCHEMA public TO {role}",
        "GRANT INSERT ON predictions TO {role}",
    ]
    with (
        login_role(owner_url, member_of=None, grants=insert_only) as url,
        psycopg.connect(url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(INSERT_PREDICTIONS_SQL, rows)
    select_id = [*insert_only, "GRANT SELECT (id) ON predictions TO {role}"]
    with (
        login_role(owner_url, member_of=None, grants=select_id) as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        assert conn.execute(INSERT_PREDICTIONS_SQL, rows).rowcount == 1
        assert conn.execute(INSERT_PREDICTIONS_SQL, rows).rowcount == 0


# --- rollback, and a role shared by several databases ------------------------------------------


def test_rollback_revokes_in_its_database_only_and_keeps_the_shared_role(
    empty_database_url: str, server_url: str
) -> None:
    with fresh_database(server_url) as other:
        assert apply_migrations(other, MIGRATIONS)[-1] == LATEST
        assert apply_migrations(empty_database_url, MIGRATIONS)[-1] == LATEST
        since_roles = [LATEST, "0004.app-role"]
        assert rollback_migrations(empty_database_url, MIGRATIONS, count=2) == since_roles
        assert grants(empty_database_url) == NO_GRANTS
        assert grants(other) == EXACT_GRANTS  # the other database is untouched
        with psycopg.connect(empty_database_url) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,))
            assert exists.fetchone() == (1,)
        assert apply_migrations(empty_database_url, MIGRATIONS) == since_roles[::-1]
        assert grants(empty_database_url) == EXACT_GRANTS


# --- the compose stack's roles (deploy/postgres-init/10-roles.sh) -------------------------------


@pytest.mark.skipif(postgres_bin() is None, reason="no initdb on this machine")
def test_the_compose_init_script_gives_the_jobs_an_owner_and_the_api_a_member() -> None:
    """As the postgres image runs it at a first start: then `migrate` as the owner (who may
    not create roles), and the API's role is ready and confined."""
    with ThrowawayCluster() as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE fraudscore")  # POSTGRES_DB, made by the image
        environment = {
            **os.environ,
            "PATH": f"{cluster.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(cluster.port),
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": "fraudscore",
            "DB_OWNER_PASSWORD": "owner-pw",
            "DB_APP_PASSWORD": "web-pw",
        }
        for _ in range(2):  # idempotent
            subprocess.run(
                ["bash", str(INIT_SCRIPT)], env=environment, check=True, capture_output=True
            )
        base = cluster.url("fraudscore")
        owner = as_user(base, "fraudscore_owner", "owner-pw")
        web = as_user(base, "fraudscore_web", "web-pw")
        assert apply_migrations(owner, MIGRATIONS)[-1] == LATEST
        seed(owner)  # the jobs' writes: features, a key
        with psycopg.connect(owner) as conn:
            owned = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                " AND tableowner <> 'fraudscore_owner'"
            ).fetchone()
            attributes = conn.execute(
                "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles"
                " WHERE rolname IN ('fraudscore_owner', 'fraudscore_web')"
            ).fetchall()
        assert owned == (0,)
        assert attributes == [(False, False, False)] * 2
        assert grants(owner) == EXACT_GRANTS
        with pool(web) as opened:
            assert postgres.probe(opened, timeout_s=3.0) == "ok"
            assert postgres.PostgresPredictionSink(opened).record_many([prediction()]) is None
        with (
            psycopg.connect(web, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(DENIED["unrevoke a key"])


@pytest.mark.skipif(postgres_bin() is None, reason="no initdb on this machine")
def test_the_migration_creates_the_role_only_where_it_may_and_checks_an_existing_one() -> None:
    """On a server of its own (fraudscore_app is cluster-wide, shared on the test server)."""
    with ThrowawayCluster() as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE ROLE plain_owner LOGIN")
            admin.execute("CREATE DATABASE fraudscore OWNER plain_owner")
        owner = as_user(cluster.url("fraudscore"), "plain_owner", "unused")
        with pytest.raises(StoreError, match="may not create it") as refused:
            apply_migrations(owner, MIGRATIONS)
        assert "CREATE ROLE fraudscore_app NOLOGIN" in str(refused.value.__cause__)
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE ROLE fraudscore_app LOGIN")  # not what members should get
        with pytest.raises(StoreError, match="not a plain group role"):
            apply_migrations(owner, MIGRATIONS)
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("ALTER ROLE fraudscore_app NOLOGIN")
        assert apply_migrations(owner, MIGRATIONS)[-1] == LATEST
        assert grants(owner) == EXACT_GRANTS
