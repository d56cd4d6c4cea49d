"""msgspec schemas of what the HTTP API returns (they are also its OpenAPI schemas)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from fraudscore import Prediction, Reasons
from fraudscore_adapters.reloading import Attempt, Loaded, Status

__all__ = [
    "AttemptOut",
    "FieldProblemOut",
    "ModelOut",
    "ModelStatusOut",
    "PredictionOut",
    "Problem",
    "Readiness",
    "ReasonOut",
    "ReloadIn",
    "ReloadOut",
]


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


Sha256 = Annotated[
    str,
    msgspec.Meta(
        pattern="^[0-9a-fA-F]{64}$",
        description="A model's pin: the SHA-256 of its manifest.json, 64 hex digits.",
    ),
]
VersionName = Annotated[
    str,
    msgspec.Meta(
        pattern="^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$",
        description="A folder name under the artifact folder's versions/ (`model list`).",
    ),
]


class ReloadIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to reload (no body at all: what the ``current`` pointer names)."""

    version: VersionName | None = None
    """Load this version, and (once it passed every check) point ``current`` at it."""
    sha256: Sha256 | None = None
    """Load only a model whose manifest has this SHA-256; a pinned server then accepts it (the
    admin vouches for it) in every worker, for the server's life."""


class ModelOut(msgspec.Struct, frozen=True, kw_only=True):
    """A model that serves (or served)."""

    model_version: str
    version: str | None
    """Its folder under versions/ (null: a flat artifact folder, or a model wired in)."""
    sha256: str | None
    """Its manifest's SHA-256: its pin."""
    threshold: float | None
    loaded_at: datetime

    @classmethod
    def of(cls, loaded: Loaded) -> ModelOut:
        """The body of a loaded model."""
        return cls(
            model_version=loaded.model_version,
            version=loaded.version,
            sha256=loaded.sha256,
            threshold=loaded.threshold,
            loaded_at=loaded.loaded_at,
        )


class ReloadOut(msgspec.Struct, frozen=True, kw_only=True):
    """What a reload or a rollback did, in the worker that answered."""

    outcome: str
    """``loaded`` (a new model serves from the next batch on) or ``already-serving``."""
    detail: str
    serving: ModelOut
    replaced: ModelOut | None
    took_s: float
    worker_pid: int
    """The worker that answered; the others follow the ``current`` pointer within
    ``watch_s`` of ``GET /admin/model``."""

    @classmethod
    def of(cls, attempt: Attempt, pid: int) -> ReloadOut:
        """The body of a reload that did not fail."""
        return cls(
            outcome=attempt.outcome,
            detail=attempt.detail,
            serving=ModelOut.of(attempt.serving),
            replaced=None if attempt.replaced is None else ModelOut.of(attempt.replaced),
            took_s=round(attempt.took_s, 4),
            worker_pid=pid,
        )


class AttemptOut(msgspec.Struct, frozen=True, kw_only=True):
    """The last reload of a worker: when, why, and how it went."""

    at: datetime
    trigger: str
    """``start``, ``request``, ``rollback``, ``watch`` or ``SIGHUP``."""
    outcome: str
    """``loaded``, ``already-serving`` or ``refused`` (then ``detail`` says why)."""
    detail: str


class ModelStatusOut(msgspec.Struct, frozen=True, kw_only=True):
    """What the answering worker serves, what the artifact folder says, the last reload."""

    serving: ModelOut
    current: str | None
    """The version the ``current`` pointer names now."""
    current_sha256: str | None
    previous: str | None
    pinned: bool
    pins: int
    """Pins accepted: FRAUDSCORE_MODEL_SHA256's and the vouched-for ones."""
    watch_s: float | None
    """How often each worker checks ``current``; null: it does not (a model wired in)."""
    last_reload: AttemptOut | None
    worker_pid: int

    @classmethod
    def of(cls, status: Status, pid: int) -> ModelStatusOut:
        """The body of a worker's model status."""
        last = status.last
        return cls(
            serving=ModelOut.of(status.serving),
            current=status.current,
            current_sha256=status.current_sha256,
            previous=status.previous,
            pinned=status.pinned,
            pins=status.pins,
            watch_s=status.watch_s,
            last_reload=None
            if last is None
            else AttemptOut(
                at=last.at, trigger=last.trigger, outcome=last.outcome, detail=last.detail
            ),
            worker_pid=pid,
        )
