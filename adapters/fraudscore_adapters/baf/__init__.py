"""The BAF dataset: reading files, validating and cleaning them against the core schema."""

from fraudscore_adapters.baf.frame import (
    ColumnProblem,
    DatasetError,
    Numbering,
    ValidationReport,
    clean_frame,
    enum_dtype,
)
from fraudscore_adapters.baf.io import (
    ID_COLUMN,
    LABEL_COLUMNS,
    find_real_dataset,
    load_features,
    read_table,
)

__all__ = [
    "ID_COLUMN",
    "LABEL_COLUMNS",
    "ColumnProblem",
    "DatasetError",
    "Numbering",
    "ValidationReport",
    "clean_frame",
    "enum_dtype",
    "find_real_dataset",
    "load_features",
    "read_table",
]
