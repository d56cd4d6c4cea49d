-- depends: 0001.feature-store
-- One row for every answered scoring request; a request is answered only after its row is
-- committed.
CREATE TABLE predictions (
    id            uuid             PRIMARY KEY,
    user_id       bigint           NOT NULL CHECK (user_id >= 0),
    probability   double precision NOT NULL CHECK (probability BETWEEN 0 AND 1),
    is_fraud      boolean          NOT NULL,
    threshold     double precision NOT NULL CHECK (threshold BETWEEN 0 AND 1),
    model_version text             NOT NULL,
    route         text             NOT NULL,
    created_at    timestamptz      NOT NULL
);

CREATE INDEX predictions_user_created ON predictions (user_id, created_at DESC);
