"""PostgreSQL adapters (psycopg 3): the feature store and the prediction sink.

One concern a module, so a reader finds each in one place:

- :mod:`~fraudscore_adapters.postgres.conninfo`: connection strings (parsing, redaction,
  pooler detection) and the settings of every connection;
- :mod:`~fraudscore_adapters.postgres.rows`: the SQL, and stored rows mapped to domain values;
- :mod:`~fraudscore_adapters.postgres.faults`: the fault policy (deadlines, driver errors to
  domain errors, retry of a dead connection);
- :mod:`~fraudscore_adapters.postgres.pools`: pool factories;
- :mod:`~fraudscore_adapters.postgres.stores`: the four adapters and the readiness probes.
"""

from fraudscore_adapters.postgres.conninfo import (
    connection_kwargs,
    pooled_endpoint,
    redact,
    startup_statement_timeout_ms,
    use_prepared_statements,
)
from fraudscore_adapters.postgres.faults import arun, run, store_errors
from fraudscore_adapters.postgres.pools import open_async_pool, open_pool
from fraudscore_adapters.postgres.rows import FEATURE_LAYOUTS, FEATURE_VERSION
from fraudscore_adapters.postgres.stores import (
    AsyncPostgresFeatureStore,
    AsyncPostgresPredictionSink,
    PostgresFeatureStore,
    PostgresPredictionSink,
    aprobe,
    probe,
)

__all__ = [
    "FEATURE_LAYOUTS",
    "FEATURE_VERSION",
    "AsyncPostgresFeatureStore",
    "AsyncPostgresPredictionSink",
    "PostgresFeatureStore",
    "PostgresPredictionSink",
    "aprobe",
    "arun",
    "connection_kwargs",
    "open_async_pool",
    "open_pool",
    "pooled_endpoint",
    "probe",
    "redact",
    "run",
    "startup_statement_timeout_ms",
    "store_errors",
    "use_prepared_statements",
]
