"""The PostgreSQL adapters' row mapping and fault policy, without a server.

Every stored row is decoded and validated on its own: whatever its bytes hold, its user gets
an application or an error, and the other users of the batch are untouched. Every driver
error becomes a domain error: transient ones StoreUnavailable (503), the rest StoreError.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import psycopg
import psycopg_pool
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudscore import (
    FEATURE_NAMES,
    Application,
    InvalidFeatures,
    StoreError,
    StoreUnavailable,
    UnknownUser,
)
from fraudscore_adapters.postgres import faults, rows
from tests.support import RAW_APPLICATION, application

pytestmark = pytest.mark.unit

VALID = json.dumps(list(application().values)).encode()


def as_array(**changes: object) -> bytes:
    """A stored baf-v1 document: the valid application's values with some changed."""
    values = dict(zip(FEATURE_NAMES, application().values, strict=True))
    return json.dumps([changes.get(n, values[n]) for n in FEATURE_NAMES]).encode()


def raw_array(field: str, literal: str) -> bytes:
    """A baf-v1 document with ``field`` replaced by a JSON literal written as is."""
    values = [json.dumps(v) for v in application().values]
    values[FEATURE_NAMES.index(field)] = literal
    return ("[" + ",".join(values) + "]").encode()


def read(document: bytes, version: str = "baf-v1") -> Application | Exception:
    """What user 5 gets, read in one batch between two valid users."""
    found = rows.applications([4, 5, 6], [(4, VALID, "baf-v1"), (5, document, version),
                                          (6, VALID, "baf-v1")])  # fmt: skip
    assert found[0] == found[2] == application()  # the neighbours never suffer
    return found[1]


def problems(document: bytes, version: str = "baf-v1") -> dict[str, str]:
    error = read(document, version)
    assert isinstance(error, InvalidFeatures), error
    assert error.user_id == 5
    assert len(str(error)) < 1_000  # the answer stays small
    return {p.field: p.problem for p in error.problems}


@pytest.mark.parametrize(
    ("document", "field", "problem"),
    [
        (raw_array("income", "1e400"), "income", "cannot be read: Number out of range"),
        (raw_array("income", "1" + "0" * 400), "income", "an integer of 1329 bits is out of"),
        (raw_array("income", "[" * 3_000 + "]" * 3_000), "income", "cannot be read: Expected"),
        (raw_array("source", '{"a": [1, 2]}'), "source", "cannot be read: Expected"),
        (raw_array("device_os", json.dumps("x" * 100_000)), "device_os", "unknown category"),
        (raw_array("income", '"abc"'), "income", "must be a number, got str"),
        (raw_array("customer_age", "NaN"), "features", "cannot be read: JSON is malformed"),
        (b'["\xff\xfe"]', "income", "cannot be read: 'utf-8' codec can't decode"),
        (b"[1, 2, 3]", "features", "stored value (3) does not fit layout baf-v1"),
        (b"42", "features", "cannot be read: Expected `object | array`, got `int`"),
        (b'{"income": ' + b"[" * 3_000 + b"]" * 3_000 + b"}", "features", "cannot be read"),
        (b'{"income": [1]}', "income", "cannot be read: Expected"),
        (b"", "features", "cannot be read"),
    ],
)
def test_a_poison_row_fails_only_its_own_user_naming_the_field(
    document: bytes, field: str, problem: str
) -> None:
    found = problems(document)
    assert field in found, found
    assert found[field].startswith(problem), found[field]


def test_an_unknown_layout_names_feature_version_and_cuts_it() -> None:
    found = problems(VALID, version="v" * 10_000)
    assert found["feature_version"].startswith("unknown layout 'vvvv")
    assert len(found["feature_version"]) < 80


def test_object_rows_and_unknown_users_still_read() -> None:
    as_object = json.dumps(RAW_APPLICATION).encode()
    found = rows.applications([1, 2], [(1, as_object, "hand-written")])
    assert found[0] == application()
    assert isinstance(found[1], UnknownUser)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(FEATURE_NAMES),
    value=JSON,
    document=JSON,
    version=st.sampled_from(["baf-v1", "hand", ""]),
)
def test_any_stored_json_settles_its_own_user(
    field: str, value: Any, document: Any, version: str
) -> None:
    for stored in (as_array(**{field: value}), json.dumps(document).encode()):
        found = read(stored, version)
        assert isinstance(found, Application | InvalidFeatures), found


@pytest.mark.parametrize(
    ("error", "domain"),
    [
        (psycopg.OperationalError("connection refused"), StoreUnavailable),
        (psycopg.errors.AdminShutdown("terminating connection"), StoreUnavailable),
        (psycopg.errors.QueryCanceled("statement timeout"), StoreUnavailable),
        (psycopg.errors.TooManyConnections("too many clients"), StoreUnavailable),
        (psycopg.errors.DeadlockDetected("deadlock"), StoreUnavailable),
        (psycopg.errors.ReadOnlySqlTransaction("read-only"), StoreUnavailable),
        (psycopg_pool.PoolTimeout("no connection"), StoreUnavailable),
        (psycopg.errors.UndefinedTable("no predictions"), StoreError),
        (psycopg.errors.InsufficientPrivilege("permission denied"), StoreError),
        (psycopg.errors.CheckViolation("check"), StoreError),
        (psycopg.errors.UniqueViolation("dup"), StoreError),
        (psycopg.errors.NumericValueOutOfRange("out of range"), StoreError),
        (psycopg.InterfaceError("misuse"), StoreError),
        (psycopg.DataError("bad value"), StoreError),
        (psycopg.ProgrammingError("syntax"), StoreError),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_driver_error_becomes_a_domain_error(
    error: psycopg.Error, domain: type[Exception]
) -> None:
    with pytest.raises(domain) as caught, faults.store_errors("recording predictions"):
        raise error
    assert str(caught.value).split(": ", 1)[1].startswith("recording predictions: ")
    assert "\n" not in str(caught.value)


def test_a_driver_message_is_cut_and_its_sqlstate_named() -> None:
    with pytest.raises(StoreError) as caught, faults.store_errors("x"):
        raise psycopg.errors.CheckViolation("violates " + "y" * 10_000)
    assert len(str(caught.value)) < 300
    assert str(caught.value).endswith("(23514)")


@pytest.mark.parametrize(
    ("error", "per_row"),
    [
        (psycopg.errors.CheckViolation("check"), True),
        (psycopg.errors.NumericValueOutOfRange("range"), True),
        (psycopg.errors.RaiseException("from a trigger"), True),
        (psycopg.errors.UndefinedTable("no table"), False),
        (psycopg.errors.InsufficientPrivilege("denied"), False),
    ],
    ids=lambda e: type(e).__name__,
)
def test_only_row_faults_are_retried_row_by_row(error: psycopg.Error, per_row: bool) -> None:
    with pytest.raises(StoreError) as caught, faults.store_errors("x"):
        raise error
    assert faults.is_row_fault(caught.value) is per_row


def test_readiness_names_why_a_session_cannot_serve() -> None:
    assert rows.readiness((False, False, True, True)) == "ok"
    assert "standby" in rows.readiness((True, True, True, True))
    assert "read-only" in rows.readiness((False, True, True, True))
    assert "may not" in rows.readiness((False, False, True, False))
    assert rows.readiness(None) != "ok"


def test_the_typed_decoder_refuses_nesting_without_recursing() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(msgspec.ValidationError):
        rows._FEATURES.decode(deep)
