"""The BAF dataset: reading files, validating and cleaning them against the core schema."""

from fraudscore_adapters.baf.frame import (
    ColumnProblem,
    DatasetError,
    ValidationReport,
    clean_frame,
    enum_dtype,
)
from fraudscore_adapters.baf.io import ID_COLUMN, LABEL_COLUMNS, load_features, read_table

__all__ = [
    "ID_COLUMN",
    "LABEL_COLUMNS",
    "ColumnProblem",
    "DatasetError",
    "ValidationReport",
    "clean_frame",
    "enum_dtype",
    "load_features",
    "read_table",
]
