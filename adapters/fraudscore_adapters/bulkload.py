"""Bulk loading of cleaned features into ``feature_store`` with ``COPY``.

One load is one transaction: readers see the previous version of every user until the load
commits, then the new one (the store is append-only; the newest row wins). The frame is
streamed to ``COPY ... FROM STDIN (FORMAT csv)`` in batches, each row a JSON array in schema
order (layout ``baf-v1``; shortest round-trip floats, null for missing) built by polars, with
progress after every batch.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import polars as pl
import psycopg
from psycopg.copy import QueuedLibpqWriter

from fraudscore import FEATURES, Feature, Kind
from fraudscore_adapters.postgres import FEATURE_VERSION, store_errors

__all__ = ["Progress", "copy_features", "encode_batch", "insert_features_executemany"]

Progress = Callable[[int, int, float], None]
"""Called with (rows done, rows in all, seconds since the start) after each batch."""

COPY_SQL = "COPY feature_store (user_id, features, feature_version) FROM STDIN (FORMAT csv)"
INSERT_SQL = "INSERT INTO feature_store (user_id, features, feature_version) VALUES (%s, %s, %s)"


def _json(feature: Feature) -> pl.Expr:
    """One value as JSON text (polars prints floats in shortest round-trip form)."""
    text = pl.col(feature.name).cast(pl.String)
    if feature.kind is Kind.CATEGORICAL:  # categories are plain ASCII codes: nothing to escape
        text = pl.concat_str(pl.lit('"'), text, pl.lit('"'))
    return text.fill_null("null")


def encode_batch(frame: pl.DataFrame, id_column: str = "user_id") -> pl.DataFrame:
    """``(user_id, features JSON array text, feature_version)`` for each row of a cleaned frame."""
    values = pl.concat_str([_json(f) for f in FEATURES], separator=",")
    return frame.select(
        pl.col(id_column).cast(pl.Int64),
        pl.concat_str(pl.lit("["), values, pl.lit("]")).alias("features"),
        pl.lit(FEATURE_VERSION).alias("feature_version"),
    )


def copy_features(
    conn: psycopg.Connection[Any],
    frame: pl.DataFrame,
    *,
    id_column: str = "user_id",
    batch_rows: int = 50_000,
    progress: Progress | None = None,
) -> int:
    """Append every row of a cleaned ``frame`` as a new version, in one transaction."""
    started = time.perf_counter()
    with store_errors("loading features"), conn.transaction(), conn.cursor() as cur:
        # The queued writer sends from a thread, so polars encodes the next batch meanwhile.
        with cur.copy(COPY_SQL, writer=QueuedLibpqWriter(cur)) as copy:
            for offset in range(0, frame.height, batch_rows):
                buffer = io.BytesIO()
                batch = frame.slice(offset, batch_rows)
                encode_batch(batch, id_column).write_csv(buffer, include_header=False)
                copy.write(buffer.getbuffer())
                if progress:
                    progress(offset + batch.height, frame.height, time.perf_counter() - started)
        cur.execute("ANALYZE feature_store")
    return frame.height


def insert_features_executemany(
    conn: psycopg.Connection[Any], frame: pl.DataFrame, *, id_column: str = "user_id"
) -> int:
    """The plain way, for comparison in the benchmark: ``executemany`` INSERTs, one transaction."""
    rows = encode_batch(frame, id_column).rows()
    with store_errors("loading features"), conn.transaction(), conn.cursor() as cur:
        cur.executemany(INSERT_SQL, rows)
    return frame.height
