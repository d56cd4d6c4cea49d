"""msgspec schemas of what the HTTP API returns (they are also its OpenAPI schemas)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from fraudscore import Prediction, Reasons

__all__ = ["FieldProblemOut", "PredictionOut", "Problem", "Readiness", "ReasonOut"]


class ReasonOut(msgspec.Struct, frozen=True, kw_only=True):
    """A feature that pushed the score up: its stored value and its contribution to the
    model's log-odds."""

    feature: str
    value: str | float | None
    """The stored value: a category, a number (whole for counts), or null when missing.
    (Typed ``float`` for numbers: OpenAPI's ``oneOf`` would refuse a whole number that
    matches both ``integer`` and ``number``.)"""
    contribution: float


def _reasons_out(reasons: Reasons | None) -> list[ReasonOut] | None:
    if reasons is None:
        return None
    return [
        ReasonOut(feature=r.feature, value=r.value, contribution=r.contribution) for r in reasons
    ]


class PredictionOut(msgspec.Struct, frozen=True, kw_only=True):
    """A recorded fraud prediction for the newest stored application of a user."""

    user_id: int
    probability: float = msgspec.field()
    is_fraud: bool
    threshold: float
    model_version: str
    prediction_id: uuid.UUID
    created_at: datetime
    reasons: list[ReasonOut] | None = msgspec.field(default=None)
    """The features that pushed the score up most (at most four, largest first): given for
    every flagged prediction and for any asked with ``?explain=true``; null otherwise."""

    @classmethod
    def of(cls, p: Prediction) -> PredictionOut:
        """The response body of a prediction (the route it came by is recorded, not returned)."""
        return cls(
            user_id=p.user_id,
            probability=p.probability,
            is_fraud=p.is_fraud,
            threshold=p.threshold,
            model_version=p.model_version,
            prediction_id=p.prediction_id,
            created_at=p.created_at,
            reasons=_reasons_out(p.reasons),
        )


class FieldProblemOut(msgspec.Struct, frozen=True):
    """One field of the stored application and what is wrong with it."""

    field: str
    problem: str


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem-details body (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    rule: str | None = None
    problems: list[FieldProblemOut] | None = None


class Readiness(msgspec.Struct, frozen=True):
    """Whether the service can score: each part and its state (``ok`` or what failed)."""

    status: str
    checks: dict[str, str]
