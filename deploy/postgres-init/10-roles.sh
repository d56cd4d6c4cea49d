#!/usr/bin/env bash
# The compose `db` service runs this once, at its first start (an empty pgdata volume), as the
# superuser POSTGRES_USER in POSTGRES_DB: the postgres image runs /docker-entrypoint-initdb.d/.
#
# Two login roles, so the API never holds the rights of the jobs:
#   fraudscore_owner  owns the database, hence the public schema and every table migrations
#                     create: `migrate`, `load-features` and `keys ...` connect as it. Not a
#                     superuser; no CREATEROLE, no CREATEDB.
#   fraudscore_web    the API (`web`): a member of fraudscore_app, the NOLOGIN group role that
#                     migration 0004.app-role grants exactly what the server does (read
#                     features and keys, insert predictions, stamp a key's last use).
# fraudscore_app is created here, as the superuser, because the owner may not create roles
# (the migration creates it only where it is missing).
#
# Passwords come from DB_OWNER_PASSWORD and DB_APP_PASSWORD (compose.yaml; they go into
# URLs, so keep to letters, digits, '-', '.', '_' and '~'). Idempotent: running it again
# resets the passwords and changes nothing else.
set -Eeo pipefail

: "${DB_OWNER_PASSWORD:?DB_OWNER_PASSWORD must be set}"
: "${DB_APP_PASSWORD:?DB_APP_PASSWORD must be set}"
database="${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"

psql --no-psqlrc --no-password --set ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" --dbname "$database" \
    --set database="$database" \
    --set owner_password="$DB_OWNER_PASSWORD" \
    --set app_password="$DB_APP_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE fraudscore_app NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'fraudscore_app') \gexec
SELECT 'CREATE ROLE fraudscore_owner LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'fraudscore_owner') \gexec
SELECT 'CREATE ROLE fraudscore_web LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'fraudscore_web') \gexec

ALTER ROLE fraudscore_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS PASSWORD :'owner_password';
ALTER ROLE fraudscore_web LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS PASSWORD :'app_password';
GRANT fraudscore_app TO fraudscore_web;

-- PostgreSQL 15: the public schema belongs to pg_database_owner, so the database's owner
-- may create tables in it and grant its USAGE; nobody else may create anything there.
ALTER DATABASE :"database" OWNER TO fraudscore_owner;
SQL
