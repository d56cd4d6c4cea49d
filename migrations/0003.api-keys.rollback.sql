ALTER TABLE predictions DROP COLUMN caller;
DROP TABLE api_keys;
