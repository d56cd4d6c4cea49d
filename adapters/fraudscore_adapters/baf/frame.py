"""Vectorised validation and cleaning of BAF-shaped polars frames against the core schema.

The rules are the core's (:mod:`fraudscore.schema`): the same ranges, categories and
sentinels, applied to whole columns at once. A problem names the column and how many rows it
affects; rows are never dropped or coerced silently: ``drop_invalid=True`` drops them and says
how many, and why, in the report.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import polars as pl

from fraudscore import FEATURES, Feature, Kind, Missing

__all__ = [
    "ColumnProblem",
    "DatasetError",
    "ValidationReport",
    "clean_frame",
    "enum_dtype",
]

_NUMERIC_TYPES = (pl.Float32, pl.Float64)


def enum_dtype(feature: Feature) -> pl.Enum:
    """The polars Enum of a categorical feature, codes in schema order."""
    return pl.Enum(list(feature.categories))


@dataclass(frozen=True, slots=True)
class ColumnProblem:
    """One problem with one column: what is wrong and how many rows it affects."""

    column: str
    problem: str
    rows: int

    def __str__(self) -> str:
        return f"{self.column}: {self.problem} ({self.rows:,} rows)"


class DatasetError(ValueError):
    """A dataset that does not fit the BAF schema; ``problems`` lists every column at fault."""

    def __init__(self, problems: Collection[ColumnProblem], source: str = "dataset") -> None:
        self.problems = tuple(problems)
        lines = "\n  ".join(str(p) for p in self.problems)
        super().__init__(f"{source} does not fit the BAF schema:\n  {lines}")


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What validation found: rows in, rows kept, and the problems behind dropped rows."""

    rows_in: int
    rows_out: int
    problems: tuple[ColumnProblem, ...] = field(default=())

    @property
    def dropped(self) -> int:
        """Rows removed because ``drop_invalid`` was asked for."""
        return self.rows_in - self.rows_out


def _type_problem(feature: Feature, dtype: pl.DataType) -> str | None:
    if feature.kind is Kind.CATEGORICAL:
        ok = dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
        return None if ok else f"has type {dtype}, expected text categories"
    if dtype.is_numeric() or dtype == pl.Boolean:
        return None
    return f"has type {dtype}, expected numbers"


def _cast(feature: Feature, column: pl.Expr) -> pl.Expr:
    if feature.kind is Kind.CATEGORICAL:
        return column.cast(pl.String)
    return column.cast(pl.Float64)


def _clean(feature: Feature, value: pl.Expr) -> pl.Expr:
    """Sentinels to null (values are already Float64 or String)."""
    if feature.missing is Missing.MINUS_ONE:
        return pl.when(value == -1).then(None).otherwise(value)
    if feature.missing is Missing.NEGATIVE:
        return pl.when(value < 0).then(None).otherwise(value)
    return value


def _checks(feature: Feature, value: pl.Expr) -> list[tuple[str, pl.Expr]]:
    """(problem, expression true on offending rows) for a cleaned column."""
    checks: list[tuple[str, pl.Expr]] = []
    if not feature.nullable:
        checks.append(("is null (the column has no missing-value marker)", value.is_null()))
    if feature.kind is Kind.CATEGORICAL:
        allowed = list(feature.categories)
        checks.append((f"holds categories outside {allowed}", ~value.is_in(allowed)))
        return checks
    checks.append(("is NaN or infinite", ~value.is_finite()))
    low, high = feature.low, feature.high
    checks.append((f"is out of range [{low}, {high}]", (value < low) | (value > high)))
    if feature.kind is not Kind.NUMERIC:
        checks.append(("is not a whole number", value != value.round(0)))
    return checks


def _final_dtype(feature: Feature) -> pl.DataType:
    if feature.kind is Kind.CATEGORICAL:
        return enum_dtype(feature)
    if feature.kind is Kind.NUMERIC:
        return pl.Float64()
    return pl.Int8() if feature.kind is Kind.BINARY else pl.Int32()


def clean_frame(
    frame: pl.DataFrame,
    *,
    keep: Collection[str] = (),
    drop_invalid: bool = False,
    source: str = "dataset",
) -> tuple[pl.DataFrame, ValidationReport]:
    """Validate ``frame`` against the schema and return it cleaned, with a report.

    Cleaned means: the 30 features in schema order (plus the ``keep`` columns, first), sentinels
    turned into nulls, numerics as Float64, counts as Int32, binaries as Int8 and categoricals as
    polars Enums in schema order. Any other column is an error. Raises :class:`DatasetError`
    naming each column at fault and the rows it affects, unless ``drop_invalid`` is set and only
    values (not columns) are at fault: then those rows are dropped and the report says so.
    """
    structural = _structural_problems(frame, keep)
    if structural:
        raise DatasetError(structural, source)
    cleaned = frame.select(
        *keep, *(_clean(f, _cast(f, pl.col(f.name))).alias(f.name) for f in FEATURES)
    )
    named = [
        (f.name, problem, expr) for f in FEATURES for problem, expr in _checks(f, pl.col(f.name))
    ]
    flags = [expr.fill_null(False) for _, _, expr in named]
    counts = cleaned.select(flag.sum().alias(str(i)) for i, flag in enumerate(flags)).row(0)
    problems = tuple(
        ColumnProblem(column, problem, int(n))
        for (column, problem, _), n in zip(named, counts, strict=True)
        if n
    )
    if problems and not drop_invalid:
        raise DatasetError(problems, source)
    if problems:
        cleaned = cleaned.filter(~pl.any_horizontal(flags))
    typed = cleaned.select(*keep, *(pl.col(f.name).cast(_final_dtype(f)) for f in FEATURES))
    return typed, ValidationReport(frame.height, typed.height, problems)


def _structural_problems(frame: pl.DataFrame, keep: Collection[str]) -> list[ColumnProblem]:
    expected = {f.name for f in FEATURES}
    problems = [
        ColumnProblem(name, "is missing", frame.height)
        for name in [*keep, *(f.name for f in FEATURES)]
        if name not in frame.columns
    ]
    problems += [
        ColumnProblem(name, "is not a column of the BAF schema", frame.height)
        for name in frame.columns
        if name not in expected and name not in keep
    ]
    for feature in FEATURES:
        if feature.name in frame.columns:
            problem = _type_problem(feature, frame.schema[feature.name])
            if problem:
                problems.append(ColumnProblem(feature.name, problem, frame.height))
    return problems
