-- Revokes what 0004.app-role granted in this database. The role fraudscore_app itself stays:
-- roles are cluster-wide, so other databases on the server may still grant it their tables
-- (DROP ROLE would fail there anyway), and login roles are its members. Drop it by hand once
-- no database uses it: DROP ROLE fraudscore_app (after REVOKE ... in every database).
REVOKE UPDATE (last_used_at) ON api_keys FROM fraudscore_app;
REVOKE SELECT ON api_keys FROM fraudscore_app;
REVOKE SELECT (id) ON predictions FROM fraudscore_app;
REVOKE INSERT ON predictions FROM fraudscore_app;
REVOKE SELECT ON feature_store FROM fraudscore_app;
REVOKE USAGE ON SCHEMA public FROM fraudscore_app;
