"""Value objects of the domain: a validated application, model scores, a prediction."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from fraudscore.errors import InvalidFeatures, InvalidUserId, ModelUnavailable
from fraudscore.schema import FEATURE_INDEX, FEATURE_NAMES, FEATURES, Missing, Value, parse_features

__all__ = [
    "MAX_USER_ID",
    "Application",
    "Prediction",
    "Reason",
    "Reasons",
    "Scores",
    "is_fraud",
    "parse_user_id",
]

MAX_USER_ID = 2**63 - 1
"""User ids are whole numbers that fit a PostgreSQL ``bigint``."""

_MAX_ID_DIGITS = len(str(MAX_USER_ID))


def parse_user_id(raw: object) -> int:
    """Check a user id (an int, or a string of decimal digits) and return it as an int."""
    if isinstance(raw, str):
        if not raw or len(raw) > _MAX_ID_DIGITS or not (raw.isascii() and raw.isdigit()):
            raise InvalidUserId(raw, f"must be 1 to {_MAX_ID_DIGITS} decimal digits")
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidUserId(raw, "must be a whole number")
    if not 0 <= raw <= MAX_USER_ID:
        raise InvalidUserId(raw, f"must be between 0 and {MAX_USER_ID}")
    return raw


@dataclass(frozen=True, slots=True)
class Application:
    """A validated, cleaned account-opening application: one value per schema feature.

    ``values`` follows ``FEATURE_NAMES`` order; a missing value is ``None``. Build one from raw
    data with :meth:`parse`; the constructor trusts its input (adapters use it for rows they
    validated in bulk).
    """

    values: tuple[Value, ...]

    def __post_init__(self) -> None:
        if len(self.values) != len(FEATURES):
            raise ValueError(f"expected {len(FEATURES)} values, got {len(self.values)}")

    @classmethod
    def parse(cls, raw: Mapping[str, object]) -> Application:
        """Validate a raw mapping (sentinels allowed) into an application.

        Raises ``InvalidFeatures`` naming every field that is missing, unknown, of the wrong
        type, out of range or of an unknown category.
        """
        values, problems = parse_features(raw)
        if problems:
            raise InvalidFeatures(problems)
        return cls(values)

    def __getitem__(self, name: str) -> Value:
        return self.values[FEATURE_INDEX[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(FEATURE_NAMES)

    def as_dict(self) -> dict[str, Value]:
        """Cleaned values by feature name; missing values are ``None``."""
        return dict(zip(FEATURE_NAMES, self.values, strict=True))

    def to_baf(self) -> dict[str, Value]:
        """Values as BAF writes them: missing values back to their ``-1`` sentinel."""
        return {
            f.name: (-1 if v is None and f.missing is not Missing.NEVER else v)
            for f, v in zip(FEATURES, self.values, strict=True)
        }


def is_fraud(probability: float, threshold: float) -> bool:
    """The decision rule: flag an application whose probability reaches the threshold."""
    return probability >= threshold


@dataclass(frozen=True, slots=True)
class Reason:
    """One feature that pushed a score up: its value in the application and its contribution
    to the model's margin, in log-odds."""

    feature: str
    value: Value
    contribution: float


Reasons = tuple[Reason, ...]
"""Why an application scored as it did: the features that pushed its score up the most,
largest contribution first (empty when none did)."""


@dataclass(frozen=True, slots=True)
class Scores:
    """What a scorer returns for a batch: one probability per application, in order.

    ``reasons``, when given, holds one entry per application: its reasons, or None where the
    scorer did not explain it.
    """

    probabilities: Sequence[float]
    threshold: float
    model_version: str
    reasons: Sequence[Reasons | None] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ModelUnavailable(f"threshold {self.threshold} is not a probability")

    def probability(self, index: int) -> float:
        """The checked probability of application ``index``."""
        p = float(self.probabilities[index])
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ModelUnavailable(f"scorer returned {p}, which is not a probability")
        return p

    def reasons_of(self, index: int) -> Reasons | None:
        """The reasons of application ``index``, None when it was not explained."""
        return None if self.reasons is None else self.reasons[index]


@dataclass(frozen=True, slots=True)
class Prediction:
    """One answered scoring request, as recorded and returned."""

    prediction_id: uuid.UUID
    user_id: int
    probability: float
    is_fraud: bool
    threshold: float
    model_version: str
    route: str
    created_at: datetime
    caller: str | None = None
    """Who asked: the API key id on the HTTP routes (the audit trail); None for a library
    call that names no one."""
    reasons: Reasons | None = None
    """Why it scored as it did, when the scorer explained it (flagged applications, and any
    whose caller asked); None when not explained."""
