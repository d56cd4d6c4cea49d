-- depends: 0003.api-keys
-- Least privilege for the API: the group role fraudscore_app holds exactly what the server
-- does in the database, and the API's login roles are made its members, e.g.
--   CREATE ROLE fraudscore_web LOGIN PASSWORD '...' IN ROLE fraudscore_app;
--   GRANT fraudscore_app TO some_existing_role;
-- The role that runs migrations owns the tables (and so keeps DDL, COPY in load-features and
-- the `keys` commands); the API cannot change the schema, the features or the keys.
--
-- Roles are cluster-wide: several databases on one server may share fraudscore_app, each
-- migration granting it its own database's tables. So the role is created only if absent,
-- and a concurrent creation by a migration of another database (advisory locks are per
-- database) counts as success. Creating it needs CREATEROLE; a migration owner without it
-- works once someone with it has created the role.
--
-- Grants are per table: a table added by a later migration is the API's only if that
-- migration grants it (no ALTER DEFAULT PRIVILEGES).
DO $$
DECLARE
    existing pg_catalog.pg_roles%ROWTYPE;
BEGIN
    SELECT * INTO existing FROM pg_catalog.pg_roles WHERE rolname = 'fraudscore_app';
    IF NOT FOUND THEN
        BEGIN
            CREATE ROLE fraudscore_app
                NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by the migration of another database
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role fraudscore_app does not exist and role % may not create it',
                    current_user
                    USING HINT = 'As a role with CREATEROLE, run: CREATE ROLE fraudscore_app '
                        'NOLOGIN; then migrate again.';
        END;
    ELSIF existing.rolcanlogin OR existing.rolsuper OR existing.rolcreaterole
        OR existing.rolcreatedb OR existing.rolreplication OR existing.rolbypassrls THEN
        -- Its members would get more than these grants (a login, or privileges that bypass
        -- them): refuse rather than pretend the API is confined.
        RAISE EXCEPTION 'role fraudscore_app exists but is not a plain group role'
            USING HINT = 'ALTER ROLE fraudscore_app NOLOGIN NOSUPERUSER NOCREATEDB '
                'NOCREATEROLE NOREPLICATION NOBYPASSRLS; then migrate again.';
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO fraudscore_app;

-- Reading features (LATEST_MANY_SQL).
GRANT SELECT ON feature_store TO fraudscore_app;

-- Recording predictions. `INSERT ... ON CONFLICT (id) DO NOTHING` needs SELECT on the
-- conflict target's column (PostgreSQL checks the arbiter columns; tests/integration/
-- test_roles.py shows the insert refused without it), so SELECT on `id` alone: the API
-- cannot read back what was predicted for whom.
GRANT INSERT ON predictions TO fraudscore_app;
GRANT SELECT (id) ON predictions TO fraudscore_app;

-- API keys: read them every few seconds, and record when each was last used. Creating and
-- revoking keys (`keys create|revoke`) runs as the owner.
GRANT SELECT ON api_keys TO fraudscore_app;
GRANT UPDATE (last_used_at) ON api_keys TO fraudscore_app;
