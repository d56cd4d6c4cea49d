"""Vectorised validation and cleaning of BAF-shaped polars frames against the core schema.

The rules are the core's (:mod:`fraudscore.schema`): the same ranges, categories and
sentinels, applied to whole columns at once. A problem names the column, the rule broken, how
many rows break it and where the first of them are; rows are never dropped or coerced
silently: ``drop_invalid=True`` drops them and says how many, and why, in the report.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from fraudscore import FEATURES, Feature, Kind, Missing
from fraudscore.schema import shown

__all__ = [
    "SHOWN_POSITIONS",
    "ColumnProblem",
    "DatasetError",
    "Numbering",
    "ValidationReport",
    "clean_frame",
    "enum_dtype",
]

SHOWN_POSITIONS = 5
"""How many offending lines (or rows) a problem names: the first ones."""

Numbering = Literal["line", "row index"]
"""What a problem's positions are: 1-based file lines, or 0-based row indices of a frame."""

_NOT_A_NUMBER = "holds values that are not numbers"
_NULL = "is null (the column has no missing-value marker)"


def enum_dtype(feature: Feature) -> pl.Enum:
    """The polars Enum of a categorical feature, codes in schema order."""
    return pl.Enum(list(feature.categories))


@dataclass(frozen=True, slots=True)
class ColumnProblem:
    """One problem with one column: the rule broken, how many rows break it, and where.

    ``lines`` holds the first few offending positions (none for a problem of the whole
    column, such as a missing column): 1-based line numbers of the file as an editor shows
    them when ``numbering`` is ``"line"``, 0-based row indices when it is ``"row index"``.
    """

    column: str
    problem: str
    rows: int
    lines: tuple[int, ...] = ()
    numbering: Numbering = "row index"

    def __str__(self) -> str:
        count = f"{self.rows:,} row{'' if self.rows == 1 else 's'}" if self.rows else ""
        detail = "; ".join(part for part in (count, self._where()) if part)
        return f"{self.column}: {self.problem}" + (f" ({detail})" if detail else "")

    def _where(self) -> str:
        if not self.lines:
            return ""
        label = _POSITION_LABELS[self.numbering][len(self.lines) > 1]
        more = ", ..." if self.rows > len(self.lines) else ""
        return f"{label} {', '.join(map(str, self.lines))}{more}"


_POSITION_LABELS: dict[Numbering, tuple[str, str]] = {
    "line": ("line", "lines"),
    "row index": ("0-based row index", "0-based row indices"),
}
"""How positions are named: (one, several)."""


class DatasetError(ValueError):
    """A dataset that does not fit the BAF schema; ``problems`` lists every column at fault.

    With no problems, ``source`` is the whole message (a dataset that cannot be used for a
    reason no column explains).
    """

    def __init__(self, problems: Collection[ColumnProblem], source: str = "dataset") -> None:
        self.problems = tuple(problems)
        if not self.problems:
            super().__init__(source)
            return
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


def _type_problem(feature: Feature, dtype: pl.DataType, *, numbers_as_text: bool) -> str | None:
    if feature.kind is Kind.CATEGORICAL:
        ok = dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
        return None if ok else f"has type {dtype}, expected text categories"
    if dtype.is_numeric() or dtype == pl.Boolean or (numbers_as_text and dtype == pl.String):
        return None
    return f"has type {dtype}, expected numbers"


def _cast(feature: Feature, column: pl.Expr) -> pl.Expr:
    if feature.kind is Kind.CATEGORICAL:
        return column.cast(pl.String)
    return column.cast(pl.Float64)


def _parse_text(frame: pl.DataFrame, text: Collection[str]) -> pl.DataFrame:
    """``text`` columns parsed as numbers, each beside a hidden flag: was the cell non-empty?

    The parse cannot fail: a cell holding anything but a number (spaces included) becomes
    null, and its flag tells it from an empty cell.
    """
    if not text:
        return frame
    return frame.with_columns(
        *(pl.col(name).is_not_null().alias(_unparsed_name(name)) for name in text),
        *(pl.col(name).cast(pl.Float64, strict=False) for name in text),
    )


def _clean(feature: Feature, value: pl.Expr) -> pl.Expr:
    """Sentinels to null (values are already Float64 or String)."""
    if feature.missing is Missing.MINUS_ONE:
        return pl.when(value == -1).then(None).otherwise(value)
    if feature.missing is Missing.NEGATIVE:
        return pl.when(value < 0).then(None).otherwise(value)
    return value


def _checks(
    feature: Feature, value: pl.Expr, unparsed: pl.Expr | None
) -> list[tuple[str, pl.Expr]]:
    """(problem, expression true on offending rows) for a cleaned column.

    ``unparsed`` flags text cells that are not numbers (their value is null): they are that
    problem only, not also a null.
    """
    checks: list[tuple[str, pl.Expr]] = []
    if unparsed is not None:
        checks.append((_NOT_A_NUMBER, unparsed))
    if not feature.nullable:
        null = value.is_null() if unparsed is None else value.is_null() & ~unparsed
        checks.append((_NULL, null))
    if feature.kind is Kind.CATEGORICAL:
        allowed = list(feature.categories)
        checks.append((f"holds categories outside {allowed}", ~value.is_in(allowed)))
        return checks
    finite = value.is_finite()
    checks.append(("is NaN or infinite", ~finite))
    low, high = feature.low, feature.high  # NaN sorts above all: not a range problem too
    checks.append((f"is out of range [{low}, {high}]", finite & ((value < low) | (value > high))))
    if feature.kind is not Kind.NUMERIC:
        checks.append(("is not a whole number", value != value.round(0)))
    return checks


def _final_dtype(feature: Feature) -> pl.DataType:
    if feature.kind is Kind.CATEGORICAL:
        return enum_dtype(feature)
    if feature.kind is Kind.NUMERIC:
        return pl.Float64()
    return pl.Int8() if feature.kind is Kind.BINARY else pl.Int32()


def _unparsed_name(column: str) -> str:
    """The hidden flag column of a text column's non-numbers (never returned)."""
    return f"\x00{column} is not a number"


@dataclass(frozen=True, slots=True)
class _Rule:
    """One check of one column: the rule's wording and the flag of its offending rows."""

    column: str
    problem: str
    flag: pl.Expr


def clean_frame(
    frame: pl.DataFrame,
    *,
    keep: Collection[str] = (),
    drop_invalid: bool = False,
    source: str = "dataset",
    numbers_as_text: bool = False,
    first_line: int | None = None,
) -> tuple[pl.DataFrame, ValidationReport]:
    """Validate ``frame`` against the schema and return it cleaned, with a report.

    Cleaned means: the 30 features in schema order (plus the ``keep`` columns, first), sentinels
    turned into nulls, numerics as Float64, counts as Int32, binaries as Int8 and categoricals as
    polars Enums in schema order. Any other column is an error. Raises :class:`DatasetError`
    naming each column at fault, the rule, the rows affected and the first of them, unless
    ``drop_invalid`` is set and only values (not columns) are at fault: then those rows are
    dropped and the report says so.

    ``numbers_as_text``: numeric columns may be text (a CSV read as text); a cell there holding
    anything but a number (spaces included) is then a value problem (``holds values that are
    not numbers``), and an empty cell (null) is a missing value. ``first_line``: the file line
    of the frame's first row (2 for a CSV with a header line): problems then name file lines;
    without it, 0-based row indices.
    """
    structural = _structural_problems(frame, keep, numbers_as_text=numbers_as_text)
    if structural:
        raise DatasetError(structural, source)
    text = {
        f.name
        for f in FEATURES
        if numbers_as_text and f.kind is not Kind.CATEGORICAL and frame.schema[f.name] == pl.String
    }
    cleaned = _parse_text(frame, text).select(
        *keep,
        *(_clean(f, _cast(f, pl.col(f.name))).alias(f.name) for f in FEATURES),
        *(
            (pl.col(_unparsed_name(name)) & pl.col(name).is_null()).alias(_unparsed_name(name))
            for name in text
        ),
    )
    rules = [
        _Rule(f.name, problem, flag.fill_null(False))
        for f in FEATURES
        for problem, flag in _checks(
            f, pl.col(f.name), pl.col(_unparsed_name(f.name)) if f.name in text else None
        )
    ]
    problems = _problems(frame, cleaned, rules, first_line)
    if problems and not drop_invalid:
        raise DatasetError(problems, source)
    if problems:
        cleaned = cleaned.filter(~pl.any_horizontal([rule.flag for rule in rules]))
    typed = cleaned.select(*keep, *(pl.col(f.name).cast(_final_dtype(f)) for f in FEATURES))
    return typed, ValidationReport(frame.height, typed.height, problems)


def _problems(
    frame: pl.DataFrame, cleaned: pl.DataFrame, rules: Sequence[_Rule], first_line: int | None
) -> tuple[ColumnProblem, ...]:
    """Count every rule's offending rows in one pass; locate the broken rules' in a second."""
    counts = cleaned.select(rule.flag.sum().alias(str(i)) for i, rule in enumerate(rules)).row(0)
    broken = [(rule, int(n)) for rule, n in zip(rules, counts, strict=True) if n]
    if not broken:
        return ()
    firsts = cleaned.select(
        rule.flag.arg_true().head(SHOWN_POSITIONS).implode().alias(str(i))
        for i, (rule, _) in enumerate(broken)
    ).row(0)
    offset = 0 if first_line is None else first_line
    numbering: Numbering = "row index" if first_line is None else "line"
    return tuple(
        ColumnProblem(
            rule.column,
            _wording(frame, rule, rows[0]),
            n,
            tuple(offset + i for i in rows),
            numbering,
        )
        for (rule, n), rows in zip(broken, firsts, strict=True)
    )


def _wording(frame: pl.DataFrame, rule: _Rule, first_row: int) -> str:
    """The rule's wording; a value that is not a number is shown (cut short), quoted."""
    if rule.problem != _NOT_A_NUMBER:
        return rule.problem
    return f"{_NOT_A_NUMBER}, e.g. {shown(str(frame[first_row, rule.column]))}"


def _structural_problems(
    frame: pl.DataFrame, keep: Collection[str], *, numbers_as_text: bool
) -> list[ColumnProblem]:
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
            dtype = frame.schema[feature.name]
            problem = _type_problem(feature, dtype, numbers_as_text=numbers_as_text)
            if problem:
                problems.append(ColumnProblem(feature.name, problem, frame.height))
    return problems
