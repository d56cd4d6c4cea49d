"""The Bank Account Fraud (BAF) feature schema, in one place.

Thirty features of an account-opening application, as published with the Feedzai BAF dataset
(Jesus et al., *Turning the Tables*, NeurIPS 2022; dataset licence CC BY-NC-SA 4.0). Ranges are
the datasheet's, except ``proposed_credit_limit``: real Base rows hold 190 and 2100, outside the
documented 200-2000, so its bounds are widened to what the data holds.

Missing values: BAF writes ``-1`` for a missing value in five count/duration columns and any
negative number for a missing ``intended_balcon_amount``. The schema turns both into ``None``
("cleaned"), so nothing downstream mistakes a sentinel for a measurement.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "FEATURES",
    "FEATURE_INDEX",
    "FEATURE_NAMES",
    "Feature",
    "FieldProblem",
    "Kind",
    "Missing",
    "Value",
    "parse_features",
    "shown",
    "shown_name",
]

Value = float | int | str | None
"""A cleaned feature value: float, int (counts, binaries), str (categories) or None (missing)."""


class Kind(enum.Enum):
    """How a feature's values are typed."""

    NUMERIC = "numeric"
    INTEGER = "integer"
    BINARY = "binary"
    CATEGORICAL = "categorical"


class Missing(enum.Enum):
    """How BAF marks a missing value in a column."""

    NEVER = "never"
    MINUS_ONE = "-1"
    NEGATIVE = "<0"


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """Why one field of an application was rejected."""

    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


SHOWN_CHARS = 40
"""Longest value a problem message quotes: a stored 100 kB string must not become a 200 kB
answer. Longer values are cut, saying how long they were."""
MAX_UNKNOWN_FIELDS = 5
"""Unknown field names a validation names one by one; the rest are counted in one problem."""


def shown(value: object) -> str:
    """``value`` as a problem message quotes it: its repr, cut to ``SHOWN_CHARS``."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    size = len(value) if isinstance(value, str) else len(text)
    return f"{text[: SHOWN_CHARS - 5]}... ({size:,} characters)"


def shown_name(name: object) -> str:
    """A field name as a problem names it: as it is, unless it is long (or not text)."""
    return name if isinstance(name, str) and len(name) <= SHOWN_CHARS else shown(name)


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature: its name, kind, valid range or categories, and missing-value rule."""

    name: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()
    missing: Missing = Missing.NEVER
    doc: str = ""

    @property
    def nullable(self) -> bool:
        """Whether BAF can mark this feature as missing."""
        return self.missing is not Missing.NEVER

    def is_sentinel(self, number: float) -> bool:
        """Whether ``number`` is this feature's missing-value sentinel."""
        if self.missing is Missing.MINUS_ONE:
            return number == -1
        return self.missing is Missing.NEGATIVE and number < 0

    def parse(self, raw: object) -> Value:
        """Validate and clean one raw value; raise ``ValueError`` saying what is wrong."""
        if raw is None:
            if self.nullable:
                return None
            raise ValueError("must not be null")
        if self.kind is Kind.CATEGORICAL:
            return self._parse_category(raw)
        number = self._parse_number(raw)
        if self.is_sentinel(number):
            return None
        self._check_range(number)
        return number

    def _parse_category(self, raw: object) -> str:
        if not isinstance(raw, str):
            raise ValueError(f"must be a string, got {type(raw).__name__}")
        if raw not in self.categories:
            raise ValueError(
                f"unknown category {shown(raw)}; expected one of {list(self.categories)}"
            )
        return raw

    def _parse_number(self, raw: object) -> float | int:
        if isinstance(raw, bool) and self.kind is Kind.BINARY:
            return int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"must be a number, got {type(raw).__name__}")
        if isinstance(raw, float):
            if not math.isfinite(raw):
                raise ValueError(f"must be finite, got {raw}")
            if self.kind is Kind.NUMERIC:
                return raw
            if not raw.is_integer():
                raise ValueError(f"must be a whole number, got {raw}")
            return int(raw)
        if self.kind is not Kind.NUMERIC:
            return raw
        try:
            return float(raw)
        except OverflowError:
            raise ValueError(f"{shown(raw)} is out of range [{self.low}, {self.high}]") from None

    def _check_range(self, number: float) -> None:
        low, high = self.low, self.high
        if (low is not None and number < low) or (high is not None and number > high):
            missing = self._sentinel_hint()
            raise ValueError(f"{shown(number)} is out of range [{low}, {high}]{missing}")

    def _sentinel_hint(self) -> str:
        if self.missing is Missing.MINUS_ONE:
            return " (-1 or null means missing)"
        if self.missing is Missing.NEGATIVE:
            return " (a negative value or null means missing)"
        return ""


def _num(name: str, low: float, high: float, doc: str, missing: Missing = Missing.NEVER) -> Feature:
    return Feature(name, Kind.NUMERIC, low, high, missing=missing, doc=doc)


def _int(name: str, low: int, high: int, doc: str, missing: Missing = Missing.NEVER) -> Feature:
    return Feature(name, Kind.INTEGER, low, high, missing=missing, doc=doc)


def _bin(name: str, doc: str) -> Feature:
    return Feature(name, Kind.BINARY, 0, 1, doc=doc)


def _cat(name: str, categories: tuple[str, ...], doc: str) -> Feature:
    return Feature(name, Kind.CATEGORICAL, categories=categories, doc=doc)


_M1 = Missing.MINUS_ONE

FEATURES: tuple[Feature, ...] = (
    _num("income", 0.1, 0.9, "Annual income of the applicant, in deciles (0.1-0.9)."),
    _num("name_email_similarity", 0, 1, "Similarity between e-mail address and name."),
    _int("prev_address_months_count", 0, 380, "Months at the previous address.", _M1),
    _int("current_address_months_count", 0, 429, "Months at the current address.", _M1),
    _int("customer_age", 10, 90, "Applicant's age in years, rounded down to the decade."),
    _num("days_since_request", 0, 79, "Days between the application and now."),
    _num("intended_balcon_amount", 0, 114, "Initial transfer amount.", Missing.NEGATIVE),
    _cat("payment_type", ("AA", "AB", "AC", "AD", "AE"), "Credit payment plan (anonymised)."),
    _int("zip_count_4w", 1, 6830, "Applications from the same zip code in 4 weeks."),
    _num("velocity_6h", -175, 16818, "Average applications per hour over the last 6 hours."),
    _num("velocity_24h", 1297, 9586, "Average applications per hour over the last 24 hours."),
    _num("velocity_4w", 2825, 7020, "Average applications per hour over the last 4 weeks."),
    _int("bank_branch_count_8w", 0, 2404, "Applications at the selected branch in 8 weeks."),
    _int(
        "date_of_birth_distinct_emails_4w",
        0,
        39,
        "E-mails of applicants with the same date of birth in 4 weeks.",
    ),
    _cat(
        "employment_status",
        ("CA", "CB", "CC", "CD", "CE", "CF", "CG"),
        "Employment status (anonymised).",
    ),
    _int("credit_risk_score", -191, 389, "Internal score of application risk."),
    _bin("email_is_free", "Domain of the application e-mail is free (1) or paid (0)."),
    _cat(
        "housing_status",
        ("BA", "BB", "BC", "BD", "BE", "BF", "BG"),
        "Current residential status (anonymised).",
    ),
    _bin("phone_home_valid", "The home phone number is valid."),
    _bin("phone_mobile_valid", "The mobile phone number is valid."),
    _int("bank_months_count", 0, 32, "Age of the previous account in months.", _M1),
    _bin("has_other_cards", "The applicant has other cards at the same bank."),
    _num("proposed_credit_limit", 190, 2100, "Proposed credit limit."),
    _bin("foreign_request", "The request came from a country other than the bank's."),
    _cat("source", ("INTERNET", "TELEAPP"), "Online source of the application."),
    _num("session_length_in_minutes", 0, 107, "Length of the session on the bank site.", _M1),
    _cat(
        "device_os",
        ("linux", "macintosh", "other", "windows", "x11"),
        "Operating system of the device that made the request.",
    ),
    _bin("keep_alive_session", "The user chose to stay logged in."),
    _int("device_distinct_emails_8w", 0, 2, "Distinct e-mails from the device in 8 weeks.", _M1),
    _int("device_fraud_count", 0, 1, "Fraudulent applications from the device (0 in Base)."),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_INDEX: Mapping[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}


_SLOW: Final = object()
"""What a fast parser returns when the value needs the full rules (and maybe an error)."""


def _fast_parser(feature: Feature) -> Callable[[object], object]:
    """A parser for the common, valid case; anything else returns ``_SLOW``.

    Validating stored features is on every request's path: the general :meth:`Feature.parse`
    costs ~2 µs a field, this ~0.3 µs. The fast path only accepts what the general rules accept
    and returns the same value, so errors and edge cases (None, bools, whole floats for counts,
    NaN, infinities) all go through :meth:`Feature.parse`.
    """
    low, high = feature.low, feature.high
    if feature.kind is Kind.CATEGORICAL:
        allowed = frozenset(feature.categories)
        return lambda raw: raw if type(raw) is str and raw in allowed else _SLOW
    if feature.kind is Kind.NUMERIC:
        sentinel = feature.is_sentinel

        def numeric(raw: object) -> object:
            if type(raw) is float or (type(raw) is int and -_BIG < raw < _BIG):
                number = float(raw)
                if low <= number <= high:  # type: ignore[operator]  # NaN fails: slow path
                    return number
                if sentinel(number) and number != -math.inf:
                    return None
            return _SLOW

        return numeric
    minus_one = feature.missing is Missing.MINUS_ONE

    def whole(raw: object) -> object:
        if type(raw) is int:
            if low <= raw <= high:  # type: ignore[operator]
                return raw
            if minus_one and raw == -1:
                return None
        return _SLOW

    return whole


_BIG: Final = 2**64  # an int beyond it may not fit a float: the slow path says so

_FAST = tuple((f.name, _fast_parser(f), f) for f in FEATURES)


def parse_features(raw: Mapping[str, object]) -> tuple[tuple[Value, ...], tuple[FieldProblem, ...]]:
    """Validate a raw mapping against the schema.

    Returns the cleaned values in schema order and every problem found (all of them, not just the
    first): missing fields, unknown fields, wrong types, out-of-range values, unknown categories.
    The values are only meaningful when there are no problems.
    """
    values: list[Value] = []
    problems: list[FieldProblem] = []
    present = 0
    for name, fast, feature in _FAST:
        value = raw.get(name, _SLOW)
        if value is _SLOW and name not in raw:
            problems.append(FieldProblem(name, "is required"))
            values.append(None)
            continue
        present += 1
        parsed = fast(value)
        if parsed is not _SLOW:
            values.append(parsed)  # type: ignore[arg-type]
            continue
        try:
            values.append(feature.parse(value))
        except ValueError as exc:
            problems.append(FieldProblem(name, str(exc)))
            values.append(None)
    if len(raw) > present:
        problems.extend(_unknown_fields([name for name in raw if name not in FEATURE_INDEX]))
    return tuple(values), tuple(problems)


def _unknown_fields(names: list[object]) -> list[FieldProblem]:
    """Problems for names that are not features: the first few by name, the rest counted."""
    problems = [
        FieldProblem(shown_name(n), "is not a feature of the schema")
        for n in names[:MAX_UNKNOWN_FIELDS]
    ]  # fmt: skip
    if len(names) > MAX_UNKNOWN_FIELDS:
        more = len(names) - MAX_UNKNOWN_FIELDS
        problems.append(FieldProblem("(more fields)", f"{more:,} more are not features"))
    return problems
