"""Reading BAF files (CSV in the Kaggle layout, or Parquet) into cleaned polars frames."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from fraudscore import FEATURES, Kind
from fraudscore_adapters.baf.frame import (
    ColumnProblem,
    DatasetError,
    ValidationReport,
    clean_frame,
)

__all__ = ["ID_COLUMN", "LABEL_COLUMNS", "find_real_dataset", "load_features", "read_table"]

ID_COLUMN = "user_id"
"""BAF rows carry no id: a file without this column gets its row number (0, 1, ...) as id."""

LABEL_COLUMNS = ("fraud_bool", "month")
"""The Kaggle files' label and time columns, kept beside the features when present."""

CSV_FIRST_LINE = 2
"""The file line of a CSV's first row: line 1 is the header."""

_CSV_TYPES: dict[str, pl.DataType] = {
    f.name: pl.String() if f.kind is Kind.CATEGORICAL else pl.Float64() for f in FEATURES
}
_CSV_TEXT: dict[str, pl.DataType] = {f.name: pl.String() for f in FEATURES}
_READER_MESSAGE_CHARS = 200


def read_table(path: Path, *, numbers_as_text: bool = False) -> pl.DataFrame:
    """Read a ``.csv`` or ``.parquet`` file as it is (no validation).

    A CSV's numeric features are read as numbers, so a cell that is not one makes the file
    unreadable; with ``numbers_as_text`` they stay text, for :func:`clean_frame` to say which
    cells are not numbers (``load_features`` does that). Parquet keeps its own types.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no dataset at {path}")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        if path.suffix == ".csv":
            types = _CSV_TEXT if numbers_as_text else _CSV_TYPES
            return pl.read_csv(path, schema_overrides=types, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError) as exc:
        problem = ColumnProblem("(file)", f"cannot be read: {_first_line(exc)}", 0)
        raise DatasetError([problem], str(path)) from exc
    raise DatasetError([ColumnProblem("(file)", "is neither .csv nor .parquet", 0)], str(path))


def _first_line(exc: Exception) -> str:
    """The first non-blank line of a reader's message, cut short (polars' run to pages)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0]
    return first if len(first) <= _READER_MESSAGE_CHARS else first[:_READER_MESSAGE_CHARS] + "..."


def load_features(
    path: Path, *, drop_invalid: bool = False
) -> tuple[pl.DataFrame, ValidationReport]:
    """Read and clean a BAF file: ``user_id`` first, then any label columns, then features.

    Problems name CSV lines as an editor numbers them (the header is line 1), or 0-based row
    indices of a Parquet file. In a CSV an empty cell is a missing value, accepted only where
    the column has a missing-value marker, like a null in Parquet.
    """
    csv = path.suffix == ".csv"
    frame = read_table(path, numbers_as_text=csv)
    if ID_COLUMN not in frame.columns:
        frame = frame.with_row_index(ID_COLUMN).with_columns(pl.col(ID_COLUMN).cast(pl.Int64))
    keep = [ID_COLUMN, *(c for c in LABEL_COLUMNS if c in frame.columns)]
    return clean_frame(
        frame,
        keep=keep,
        drop_invalid=drop_invalid,
        source=str(path),
        numbers_as_text=csv,
        first_line=CSV_FIRST_LINE if csv else None,
    )


def find_real_dataset(raw_dir: Path) -> Path | None:
    """The real BAF file in ``raw_dir``: ``Base`` first, else the first other .csv/.parquet."""
    if not raw_dir.is_dir():
        return None
    found = sorted(p for p in raw_dir.iterdir() if p.suffix in {".csv", ".parquet"})
    return next((p for p in found if p.stem == "Base"), found[0] if found else None)
