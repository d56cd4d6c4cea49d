-- depends: 0002.predictions
-- API keys: only a SHA-256 of each key is stored (keys are 256-bit random tokens, shown once
-- at creation). A key is never deleted, only revoked, so the audit trail keeps its meaning.
CREATE TABLE api_keys (
    id           text        PRIMARY KEY CHECK (id ~ '^[0-9a-f]{12}$'),
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    key_sha256   text        NOT NULL UNIQUE CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
    scopes       text[]      NOT NULL
        CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['predict', 'admin']::text[]),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- The audit trail: which key asked for each prediction (null for library calls). No foreign
-- key: keys are never deleted, and a check per inserted row would tax the hot path.
ALTER TABLE predictions ADD COLUMN caller text;
