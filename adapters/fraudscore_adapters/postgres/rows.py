"""Rows in and out: the SQL of the stores, and stored rows mapped to domain values.

Every statement takes parameters; no SQL is built from strings of data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import set_json_loads

from fraudscore import (
    FEATURE_NAMES,
    Application,
    FraudscoreError,
    InvalidFeatures,
    Prediction,
    UnknownUser,
)
from fraudscore.schema import FieldProblem

__all__ = [
    "FEATURE_LAYOUTS",
    "FEATURE_VERSION",
    "INSERT_PREDICTIONS_SQL",
    "LATEST_MANY_SQL",
    "applications",
    "configure_json",
    "id_array",
    "predictions_json",
]

FEATURE_VERSION = "baf-v1"
"""The layout new rows are written in: a JSON array of the cleaned values, schema order."""
FEATURE_LAYOUTS: dict[str, tuple[str, ...]] = {FEATURE_VERSION: FEATURE_NAMES}
"""The feature names, in array order, of every ``feature_version`` the store may hold."""

# Parameters go as one text value each (a bigint[] literal, a JSON document) and the server
# parses them: psycopg's Python-side array dumping cost 4x more CPU per batch (measured: 64
# ids 694 -> 434 us; 64 predictions 1727 -> 379 us).
LATEST_MANY_SQL = """
    SELECT DISTINCT ON (user_id) user_id, features, feature_version FROM feature_store
    WHERE user_id = ANY(%s::bigint[])
    ORDER BY user_id, created_at DESC, id DESC
"""
INSERT_PREDICTIONS_SQL = """
    INSERT INTO predictions
        (id, user_id, probability, is_fraud, threshold, model_version, route, created_at)
    SELECT * FROM json_to_recordset(%s::json) AS r(
        prediction_id uuid, user_id bigint, probability float8, is_fraud boolean,
        threshold float8, model_version text, route text, created_at timestamptz
    )
    ON CONFLICT (id) DO NOTHING
"""

_JSON = msgspec.json.Decoder()
_JSON_ENCODER = msgspec.json.Encoder()


def configure_json(context: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Decode jsonb with msgspec (several times faster than the json module)."""
    set_json_loads(_JSON.decode, context)


def _named(features: object, version: str) -> dict[str, object]:
    """A stored ``features`` value (array in the version's layout, or object) by name."""
    if isinstance(features, dict):
        return features
    layout = FEATURE_LAYOUTS.get(version)
    if layout is None:
        raise InvalidFeatures([FieldProblem("feature_version", f"unknown layout {version!r}")])
    if not isinstance(features, list) or len(features) != len(layout):
        size = len(features) if isinstance(features, list) else type(features).__name__
        problem = f"stored value ({size}) does not fit layout {version} ({len(layout)} values)"
        raise InvalidFeatures([FieldProblem("features", problem)])
    return dict(zip(layout, features, strict=True))


def _application_or_error(
    user_id: int, row: tuple[Any, ...] | None
) -> Application | FraudscoreError:
    """The stored application of ``user_id``, or the error its caller gets instead."""
    if row is None:
        return UnknownUser(user_id)
    try:
        return Application.parse(_named(row[0], row[1]))
    except InvalidFeatures as exc:
        return exc.for_user(user_id)


def applications(
    user_ids: Sequence[int], rows: Sequence[tuple[Any, ...]]
) -> list[Application | FraudscoreError]:
    """Each user's application (or its error) from ``(user_id, features, version)`` rows."""
    by_user = {row[0]: row[1:] for row in rows}
    return [_application_or_error(uid, by_user.get(uid)) for uid in user_ids]


def id_array(user_ids: Sequence[int]) -> str:
    """A ``bigint[]`` literal of the ids (they are ints: nothing to quote)."""
    return "{" + ",".join(map(str, user_ids)) + "}"


def predictions_json(predictions: Sequence[Prediction]) -> str:
    """The predictions as a JSON array of objects, for ``json_to_recordset``."""
    return _JSON_ENCODER.encode(predictions).decode()
