"""Reading BAF files (CSV in the Kaggle layout, or Parquet) into cleaned polars frames."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from fraudscore import FEATURES, Kind
from fraudscore_adapters.baf.frame import ColumnProblem, DatasetError, ValidationReport, clean_frame

__all__ = ["ID_COLUMN", "LABEL_COLUMNS", "find_real_dataset", "load_features", "read_table"]

ID_COLUMN = "user_id"
"""BAF rows carry no id: a file without this column gets its row number (0, 1, ...) as id."""

LABEL_COLUMNS = ("fraud_bool", "month")
"""The Kaggle files' label and time columns, kept beside the features when present."""

_CSV_TYPES: dict[str, pl.DataType] = {
    f.name: pl.String() if f.kind is Kind.CATEGORICAL else pl.Float64() for f in FEATURES
}


def read_table(path: Path) -> pl.DataFrame:
    """Read a ``.csv`` or ``.parquet`` file as it is (no validation)."""
    if not path.is_file():
        raise FileNotFoundError(f"no dataset at {path}")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        if path.suffix == ".csv":
            return pl.read_csv(path, schema_overrides=_CSV_TYPES, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError) as exc:
        problem = ColumnProblem("(file)", f"cannot be read: {exc}", 0)
        raise DatasetError([problem], str(path)) from exc
    raise DatasetError([ColumnProblem("(file)", "is neither .csv nor .parquet", 0)], str(path))


def load_features(
    path: Path, *, drop_invalid: bool = False
) -> tuple[pl.DataFrame, ValidationReport]:
    """Read and clean a BAF file: ``user_id`` first, then any label columns, then features."""
    frame = read_table(path)
    if ID_COLUMN not in frame.columns:
        frame = frame.with_row_index(ID_COLUMN).with_columns(pl.col(ID_COLUMN).cast(pl.Int64))
    keep = [ID_COLUMN, *(c for c in LABEL_COLUMNS if c in frame.columns)]
    return clean_frame(frame, keep=keep, drop_invalid=drop_invalid, source=str(path))


def find_real_dataset(raw_dir: Path) -> Path | None:
    """The real BAF file in ``raw_dir``: ``Base`` first, else the first other .csv/.parquet."""
    if not raw_dir.is_dir():
        return None
    found = sorted(p for p in raw_dir.iterdir() if p.suffix in {".csv", ".parquet"})
    return next((p for p in found if p.stem == "Base"), found[0] if found else None)
