"""Rows in and out: the SQL of the stores, and stored rows mapped to domain values.

Every statement takes parameters; no SQL is built from strings of data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader

from fraudscore import (
    FEATURE_NAMES,
    Application,
    FraudscoreError,
    InvalidFeatures,
    Prediction,
    UnknownUser,
)
from fraudscore.schema import FieldProblem, shown, shown_name

__all__ = [
    "FEATURE_LAYOUTS",
    "FEATURE_VERSION",
    "INSERT_PREDICTIONS_SQL",
    "LATEST_MANY_SQL",
    "READY_SQL",
    "applications",
    "configure_json",
    "id_array",
    "predictions_json",
    "readiness",
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
        (id, user_id, probability, is_fraud, threshold, model_version, route, created_at,
         caller, reasons)
    SELECT * FROM json_to_recordset(%s::json) AS r(
        prediction_id uuid, user_id bigint, probability float8, is_fraud boolean,
        threshold float8, model_version text, route text, created_at timestamptz, caller text,
        reasons jsonb
    )
    ON CONFLICT (id) DO NOTHING
"""

READY_SQL = """
    SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on',
        has_table_privilege('feature_store', 'SELECT'),
        has_table_privilege('predictions', 'INSERT')
"""
"""What readiness asks: can this session read features and record predictions?"""

_JSON_ENCODER = msgspec.json.Encoder()

_Plain = float | int | str | None
_FEATURES = msgspec.json.Decoder(list[_Plain] | dict[str, _Plain])
"""A stored ``features`` document: an array or object of plain values, nothing deeper. Typed,
so a nested array (3,000 deep or 1) is refused at its first level instead of recursed into."""
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw] | dict[str, msgspec.Raw])
_PLAIN = msgspec.json.Decoder(_Plain)
_UNREADABLE = (msgspec.DecodeError, UnicodeDecodeError, ValueError, RecursionError)
"""What decoding one document may raise (skipping a 3,000-deep value recurses in msgspec)."""
_AT_INDEX = re.compile(r" - at `\$\[(\d+)\]`$")


class _RawJson(Loader):
    """jsonb as the bytes the server sent: each row is decoded on its own, so one malformed
    document settles its own user, never the batch it was read with."""

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


def configure_json(context: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Read jsonb as raw bytes, decoded per row by :func:`applications` (with msgspec, several
    times faster than the json module)."""
    context.adapters.register_loader("jsonb", _RawJson)


def _problem(field: str, error: Exception) -> FieldProblem:
    message = str(error).split(" - at `", 1)[0]  # the path is the field, named already
    if len(message) > 80:
        message = message[:77] + "..."
    return FieldProblem(field, f"cannot be read: {message}")


def _unreadable(
    document: bytes, error: Exception, layout: tuple[str, ...] | None
) -> InvalidFeatures:
    """The problems of a document the typed decoder refused, named field by field."""
    at = _AT_INDEX.search(str(error))
    if at:  # the decoder named the array position: that field (no need to look further)
        return InvalidFeatures([_problem(_name(layout, int(at[1])), error)])
    try:
        items = _ITEMS.decode(document)
    except _UNREADABLE as exc:
        return InvalidFeatures([_problem("features", exc)])
    pairs: list[tuple[str, msgspec.Raw]] = (
        list(items.items())
        if isinstance(items, dict)
        else [(_name(layout, i), raw) for i, raw in enumerate(items)]
    )
    problems = []
    for name, raw in pairs:
        try:
            _PLAIN.decode(raw)
        except _UNREADABLE as exc:
            problems.append(_problem(shown_name(name), exc))
    return InvalidFeatures(problems or [FieldProblem("features", "cannot be read")])


def _name(layout: tuple[str, ...] | None, index: int) -> str:
    return layout[index] if layout is not None and index < len(layout) else f"features[{index}]"


def _named(document: bytes, version: str) -> dict[str, object]:
    """A stored ``features`` document (array in the version's layout, or object) by name."""
    layout = FEATURE_LAYOUTS.get(version)
    try:
        features = _FEATURES.decode(document)
    except _UNREADABLE as exc:
        raise _unreadable(document, exc, layout) from None
    if isinstance(features, dict):
        return features
    if layout is None:
        problem = f"unknown layout {shown(version)}"
        raise InvalidFeatures([FieldProblem("feature_version", problem)])
    if len(features) != len(layout):
        problem = (
            f"stored value ({len(features)}) does not fit layout {version} ({len(layout)} values)"
        )
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
    """Each user's application (or its error) from ``(user_id, features, version)`` rows,
    ``features`` as raw JSON bytes."""
    by_user = {row[0]: row[1:] for row in rows}
    return [_application_or_error(uid, by_user.get(uid)) for uid in user_ids]


def readiness(row: tuple[Any, ...] | None) -> str:
    """``ok``, or why a session with the :data:`READY_SQL` answer ``row`` cannot serve."""
    standby, read_only, can_read, can_write = row or (None, None, None, None)
    if standby:
        return "store unavailable: the database is a standby (read-only)"
    if read_only:
        return "store unavailable: the database is read-only (default_transaction_read_only)"
    if not (can_read and can_write):
        return "store error: the role may not read feature_store or insert into predictions"
    return "ok"


def id_array(user_ids: Sequence[int]) -> str:
    """A ``bigint[]`` literal of the ids (they are ints: nothing to quote)."""
    return "{" + ",".join(map(str, user_ids)) + "}"


def predictions_json(predictions: Sequence[Prediction]) -> str:
    """The predictions as a JSON array of objects, for ``json_to_recordset``."""
    return _JSON_ENCODER.encode(predictions).decode()
