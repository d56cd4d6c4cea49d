"""Domain errors. They carry facts, never HTTP status codes: the edge maps them."""

from __future__ import annotations

from collections.abc import Iterable

from fraudscore.schema import FieldProblem

__all__ = [
    "FraudscoreError",
    "InvalidFeatures",
    "InvalidUserId",
    "ModelUnavailable",
    "StoreError",
    "StoreUnavailable",
    "UnknownUser",
]


class FraudscoreError(Exception):
    """Base class of every error the fraudscore core raises on purpose."""


class InvalidUserId(FraudscoreError, ValueError):
    """A user id that breaks the id rule (a whole number in [0, 2**63 - 1])."""

    def __init__(self, raw: object, rule: str) -> None:
        self.raw = raw
        self.rule = rule
        super().__init__(f"invalid user id {str(raw)[:40]!r}: {rule}")


class UnknownUser(FraudscoreError, LookupError):
    """The feature store holds no application for this user."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        super().__init__(f"no features stored for user {user_id}")


class InvalidFeatures(FraudscoreError, ValueError):
    """Features that fail the schema; ``problems`` names every offending field."""

    def __init__(self, problems: Iterable[FieldProblem], user_id: int | None = None) -> None:
        self.problems = tuple(problems)
        self.user_id = user_id
        whose = "" if user_id is None else f" of user {user_id}"
        detail = "; ".join(str(p) for p in self.problems)
        super().__init__(f"invalid features{whose}: {detail}")

    def for_user(self, user_id: int) -> InvalidFeatures:
        """The same problems, attributed to ``user_id``."""
        return InvalidFeatures(self.problems, user_id)


class StoreUnavailable(FraudscoreError):
    """The feature store or prediction sink cannot be reached, timed out, or refused the work
    for a reason that passes (a restart, a failover, a read-only standby): worth a retry."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"store unavailable: {reason}")


class StoreError(FraudscoreError):
    """The store answered with an error that a retry will not fix (a missing table, a missing
    privilege, a row the store refuses): a fault of the deployment or of that data."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"store error: {reason}")


class ModelUnavailable(FraudscoreError):
    """The scoring model is missing, failed its integrity check, or failed to score."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"model unavailable: {reason}")
