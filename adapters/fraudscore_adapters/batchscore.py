"""Offline batch scoring of a BAF file: validate, score in chunks, write Parquet or CSV.

``python -m fraudscore_adapters score INPUT --out OUTPUT`` is built from these functions:

* :func:`read_applications` reads and validates the file as ``load-features`` does
  (:func:`~fraudscore_adapters.baf.load_features`): invalid rows raise ``DatasetError`` with the
  report, or are dropped and counted with ``drop_invalid``; never scored silently. A file
  without ``user_id`` gets its row numbers (0, 1, ... counted before any row is dropped) as
  ids, the embedded store's rule.
* :func:`score_frame` scores it chunk by chunk through the scorer's own exact path (the
  compiled transform, then the booster in place): the probabilities equal
  :meth:`XGBScorer.score` on the same rows, bit for bit.
* :func:`write_output` writes the result as Parquet or CSV, chosen by the suffix, through a
  temporary file renamed into place: a reader never sees half a file, a failure leaves none.
* :func:`copy_predictions` records the result into ``predictions`` with ``COPY``, in one
  transaction, route ``batch``, a fresh UUID per row.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl
import psycopg
import xgboost
from psycopg.copy import QueuedLibpqWriter

from fraudscore import FEATURE_NAMES, Application, ModelUnavailable
from fraudscore_adapters.baf import (
    ID_COLUMN,
    ColumnProblem,
    DatasetError,
    ValidationReport,
    load_features,
)
from fraudscore_adapters.postgres import store_errors
from fraudscore_adapters.xgb import XGBScorer

__all__ = [
    "OUTPUT_COLUMNS",
    "ROUTE",
    "OutputFormatError",
    "Progress",
    "copy_predictions",
    "output_format",
    "read_applications",
    "score_frame",
    "write_output",
]

Progress = Callable[[int, int, float], None]
"""Called with (rows done, rows in all, seconds since the start) after each chunk."""

ROUTE = "batch"
"""The ``route`` of predictions recorded by a batch run."""

OUTPUT_COLUMNS: dict[str, pl.DataType] = {
    ID_COLUMN: pl.Int64(),
    "probability": pl.Float64(),
    "is_fraud": pl.Boolean(),
    "threshold": pl.Float64(),
    "model_version": pl.String(),
}
"""The columns of a scored file, in order, with their types."""

OutputFormat = Literal["parquet", "csv"]
_FORMATS: dict[str, OutputFormat] = {".parquet": "parquet", ".csv": "csv"}

REASONS_COLUMN = "reasons"
"""With ``--explain``: each row's reasons, a JSON array of ``{feature, value, contribution}``
(as the HTTP routes return them), largest contribution first."""

COPY_PREDICTIONS_SQL = """
    COPY predictions
        (id, user_id, probability, is_fraud, threshold, model_version, route, created_at, caller,
         reasons)
    FROM STDIN (FORMAT csv)
"""
_REASONS_JSON = msgspec.json.Encoder()


class OutputFormatError(ValueError):
    """An output path whose suffix names no format this command writes."""


def output_format(path: Path) -> OutputFormat:
    """``parquet`` or ``csv`` by the suffix of ``path``; raise OutputFormatError otherwise."""
    found = _FORMATS.get(path.suffix.lower())
    if found is None:
        raise OutputFormatError(
            f"cannot write {path}: the output must end in .parquet or .csv"
            f" (not {path.suffix or 'no suffix'!r})"
        )
    return found


def read_applications(
    path: Path, *, drop_invalid: bool = False
) -> tuple[pl.DataFrame, ValidationReport]:
    """The cleaned frame to score (``user_id``, any label columns, the 30 features) and its
    validation report; raise ``DatasetError`` naming every problem (invalid rows included,
    unless ``drop_invalid``: then they are dropped and the report counts them).

    A ``user_id`` column of the file must hold whole numbers from 0 (the predictions table's
    rule): a bad id is a problem of the column, reported even with ``drop_invalid``.
    """
    frame, report = load_features(path, drop_invalid=drop_invalid)
    ids = frame[ID_COLUMN]
    problem = _id_problem(ids)
    if problem is not None:
        raise DatasetError([problem], str(path))
    return frame.with_columns(ids.cast(pl.Int64)), report


def _id_problem(ids: pl.Series) -> ColumnProblem | None:
    if not ids.dtype.is_integer():
        return ColumnProblem(ID_COLUMN, f"has type {ids.dtype}, expected whole numbers", ids.len())
    bad = ids.is_null() | (ids < 0)
    count = int(bad.sum())
    if not count:
        return None
    first = tuple(int(i) for i in bad.arg_true().head(5))
    return ColumnProblem(ID_COLUMN, "is null or negative", count, first)


def score_frame(
    scorer: XGBScorer,
    frame: pl.DataFrame,
    *,
    chunk_rows: int = 100_000,
    progress: Progress | None = None,
    explain: bool = False,
) -> pl.DataFrame:
    """Score every row of a cleaned frame, ``chunk_rows`` at a time: :data:`OUTPUT_COLUMNS`,
    and with ``explain`` each row's reasons (:data:`REASONS_COLUMN`, by the scorer's method).

    Each chunk goes through :meth:`XGBScorer.matrix` and :meth:`XGBScorer.predict`, the path
    of :meth:`XGBScorer.score`, so the probabilities are the service's. ``is_fraud`` is the
    domain's rule (:func:`fraudscore.is_fraud`: probability >= threshold), applied per column.
    Raise ModelUnavailable if the model fails or returns a value that is not a probability.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    reasons: list[str] | None = [] if explain else None
    features = frame.select(FEATURE_NAMES)
    probabilities = _probabilities(scorer, features, chunk_rows, progress, reasons)
    threshold = scorer.threshold
    columns: list[str | pl.Expr] = [
        ID_COLUMN,
        "probability",
        (pl.col("probability") >= threshold).alias("is_fraud"),
        pl.lit(threshold, pl.Float64).alias("threshold"),
        pl.lit(scorer.model_version, pl.String).alias("model_version"),
    ]
    data: dict[str, Any] = {
        ID_COLUMN: frame[ID_COLUMN].cast(pl.Int64),
        "probability": probabilities,
    }
    if reasons is not None:
        data[REASONS_COLUMN] = pl.Series(REASONS_COLUMN, reasons, dtype=pl.String)
        columns.append(REASONS_COLUMN)
    return pl.DataFrame(data).select(columns)


def _probabilities(
    scorer: XGBScorer,
    features: pl.DataFrame,
    chunk_rows: int,
    progress: Progress | None,
    reasons: list[str] | None,
) -> npt.NDArray[np.float64]:
    """Each row's probability; with ``reasons``, each row's reasons as JSON appended to it."""
    started = time.perf_counter()
    out = np.empty(features.height, dtype=np.float64)
    for offset in range(0, features.height, chunk_rows):
        chunk = features.slice(offset, chunk_rows)
        applications = [Application(values) for values in chunk.iter_rows()]
        try:
            matrix = scorer.matrix(applications)
            out[offset : offset + chunk.height] = scorer.predict(matrix)
            if reasons is not None:
                found = scorer.explain(applications, matrix)
                reasons.extend(_REASONS_JSON.encode(r).decode() for r in found)
        except (KeyError, TypeError, ValueError, xgboost.core.XGBoostError) as exc:
            raise ModelUnavailable(f"scoring failed: {exc!r}") from exc
        if progress:
            progress(offset + chunk.height, features.height, time.perf_counter() - started)
    bad = ~(np.isfinite(out) & (out >= 0.0) & (out <= 1.0))
    if bad.any():
        first = int(np.argmax(bad))
        raise ModelUnavailable(f"scorer returned {out[first]}, which is not a probability")
    return out


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it when the block succeeds, else removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def write_output(
    scored: pl.DataFrame, path: Path, *, before_rename: Callable[[], Any] = lambda: None
) -> None:
    """Write ``scored`` to ``path`` as Parquet or CSV (by its suffix), atomically.

    ``before_rename`` runs once the file is complete but not yet in place (``--record``
    commits there: when recording fails, no output appears).
    """
    fmt = output_format(path)
    with _replacing(path) as partial:
        if fmt == "parquet":
            scored.write_parquet(partial)
        else:
            scored.write_csv(partial)
        before_rename()


def _uuid4_hex(n: int) -> pl.Series:
    """``n`` random (version 4) UUIDs as 32 hex digits, a form PostgreSQL's uuid accepts."""
    raw = np.frombuffer(secrets.token_bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.tobytes().hex().encode("ascii")
    return pl.Series("id", np.frombuffer(text, dtype="S32")).cast(pl.String)


def encode_predictions(scored: pl.DataFrame, created_at: datetime) -> pl.DataFrame:
    """The ``predictions`` rows of a scored frame, columns in COPY order; caller NULL."""
    return scored.select(
        _uuid4_hex(scored.height),
        ID_COLUMN,
        "probability",
        "is_fraud",
        "threshold",
        "model_version",
        pl.lit(ROUTE).alias("route"),
        pl.lit(created_at.astimezone(UTC).isoformat()).alias("created_at"),
        pl.lit(None, pl.String).alias("caller"),
        pl.col(REASONS_COLUMN)
        if REASONS_COLUMN in scored.columns
        else pl.lit(None, pl.String).alias(REASONS_COLUMN),
    )


def copy_predictions(
    conn: psycopg.Connection[Any],
    scored: pl.DataFrame,
    *,
    created_at: datetime | None = None,
    batch_rows: int = 100_000,
    progress: Progress | None = None,
) -> int:
    """COPY every scored row into ``predictions``, in one transaction; return the row count.

    Each row gets a fresh UUID, route ``batch``, ``created_at`` (default: now; one instant for
    the whole run) and no caller. Driver faults become StoreUnavailable or StoreError.
    """
    when = created_at or datetime.now(UTC)
    started = time.perf_counter()
    with (
        store_errors("recording predictions"),
        conn.transaction(),
        conn.cursor() as cur,
        # the queued writer sends from a thread while polars encodes the next batch
        cur.copy(COPY_PREDICTIONS_SQL, writer=QueuedLibpqWriter(cur)) as copy,
    ):
        for offset in range(0, scored.height, batch_rows):
            batch = scored.slice(offset, batch_rows)
            buffer = io.BytesIO()
            encode_predictions(batch, when).write_csv(buffer, include_header=False)
            copy.write(buffer.getbuffer())
            if progress:
                progress(offset + batch.height, scored.height, time.perf_counter() - started)
    return scored.height
