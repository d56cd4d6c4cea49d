"""The BAF schema and the validation of raw applications."""

from __future__ import annotations

import math

import pytest

from fraudscore import (
    FEATURE_NAMES,
    FEATURES,
    Application,
    Feature,
    FieldProblem,
    InvalidFeatures,
    Kind,
    Missing,
)
from fraudscore.schema import parse_features
from tests.support import RAW_APPLICATION, application, raw

pytestmark = pytest.mark.unit


def problems_of(**changes: object) -> dict[str, str]:
    with pytest.raises(InvalidFeatures) as caught:
        Application.parse(raw(**changes))
    return {p.field: p.problem for p in caught.value.problems}


def test_schema_has_the_thirty_baf_features_in_kaggle_order() -> None:
    assert len(FEATURES) == 30
    assert FEATURE_NAMES[0] == "income"
    assert FEATURE_NAMES[-1] == "device_fraud_count"
    assert len(set(FEATURE_NAMES)) == 30
    assert "fraud_bool" not in FEATURE_NAMES
    assert "month" not in FEATURE_NAMES


def test_sentinel_columns_are_the_documented_ones() -> None:
    by_rule = {f.name: f.missing for f in FEATURES if f.missing is not Missing.NEVER}
    assert by_rule == {
        "prev_address_months_count": Missing.MINUS_ONE,
        "current_address_months_count": Missing.MINUS_ONE,
        "bank_months_count": Missing.MINUS_ONE,
        "session_length_in_minutes": Missing.MINUS_ONE,
        "device_distinct_emails_8w": Missing.MINUS_ONE,
        "intended_balcon_amount": Missing.NEGATIVE,
    }


def test_valid_application_is_cleaned_and_typed() -> None:
    app = Application.parse(RAW_APPLICATION)
    assert app["prev_address_months_count"] is None
    assert app["intended_balcon_amount"] is None
    assert app["customer_age"] == 50
    assert isinstance(app["customer_age"], int)
    assert isinstance(app["proposed_credit_limit"], float)
    assert app["housing_status"] == "BC"
    assert list(app) == list(FEATURE_NAMES)


def test_to_baf_restores_sentinels_and_roundtrips() -> None:
    app = Application.parse(RAW_APPLICATION)
    baf = app.to_baf()
    assert baf["prev_address_months_count"] == -1
    assert baf["intended_balcon_amount"] == -1
    assert Application.parse(baf) == app


def test_null_is_accepted_as_missing_only_where_baf_has_a_sentinel() -> None:
    assert application(bank_months_count=None)["bank_months_count"] is None
    assert problems_of(customer_age=None) == {"customer_age": "must not be null"}


def test_any_negative_balcon_amount_means_missing() -> None:
    assert application(intended_balcon_amount=-15.5)["intended_balcon_amount"] is None
    assert application(intended_balcon_amount=0.0)["intended_balcon_amount"] == 0.0


def test_only_minus_one_is_a_sentinel_for_count_columns() -> None:
    found = problems_of(bank_months_count=-2)
    assert "out of range [0, 32]" in found["bank_months_count"]
    assert "-1 or null means missing" in found["bank_months_count"]


def test_every_problem_is_reported_with_its_field() -> None:
    found = problems_of(
        customer_age=200,
        housing_status="ZZ",
        income="high",
        email_is_free=2,
        velocity_6h=math.nan,
    )
    assert set(found) == {
        "customer_age",
        "housing_status",
        "income",
        "email_is_free",
        "velocity_6h",
    }
    assert "out of range [10, 90]" in found["customer_age"]
    assert "unknown category 'ZZ'" in found["housing_status"]
    assert "must be a number, got str" in found["income"]
    assert "out of range [0, 1]" in found["email_is_free"]
    assert "must be finite" in found["velocity_6h"]


def test_missing_and_unknown_fields_are_named() -> None:
    incomplete = raw(favourite_colour="blue")
    del incomplete["source"]
    with pytest.raises(InvalidFeatures) as caught:
        Application.parse(incomplete)
    found = {p.field: p.problem for p in caught.value.problems}
    assert found == {"source": "is required", "favourite_colour": "is not a feature of the schema"}
    assert "source: is required" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("customer_age", 30.0, 30),
        ("customer_age", 30.5, None),
        ("email_is_free", True, 1),
        ("customer_age", True, None),
        ("payment_type", 3, None),
        ("name_email_similarity", 1, 1.0),
        ("proposed_credit_limit", 2100, 2100.0),
        ("velocity_6h", -175, -175.0),
        ("velocity_6h", math.inf, None),
    ],
)
def test_type_rules(field: str, value: object, expected: object) -> None:
    if expected is None:
        assert field in problems_of(**{field: value})
    else:
        parsed = application(**{field: value})[field]
        assert parsed == expected
        assert type(parsed) is type(expected)


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
def test_bounds_are_inclusive_and_enforced(feature: Feature) -> None:
    f = feature
    if f.kind is Kind.CATEGORICAL:
        for category in f.categories:
            assert application(**{f.name: category})[f.name] == category
        assert f.name in problems_of(**{f.name: f.categories[0].lower() + "?"})
        return
    assert f.low is not None
    assert f.high is not None
    assert application(**{f.name: f.low})[f.name] == f.low
    assert application(**{f.name: f.high})[f.name] == f.high
    assert f.name in problems_of(**{f.name: f.high + 1})
    below = f.low - 1
    if not f.is_sentinel(below):
        assert f.name in problems_of(**{f.name: below})


def test_application_rejects_a_wrong_number_of_values() -> None:
    with pytest.raises(ValueError, match="expected 30 values, got 2"):
        Application((1.0, 2.0))


def _candidates(feature: Feature) -> list[object]:
    edges: list[object] = [-1, -1.0, 0, 0.0, 1, 1.0, 0.5, -0.5, 30.0, 30.5, 1e300, -1e300]
    edges += [True, False, None, "x", "", math.nan, math.inf, -math.inf, [1], {"a": 1}]
    if feature.low is not None and feature.high is not None:
        for bound in (feature.low, feature.high):
            edges += [bound, float(bound), int(bound), bound - 1, bound + 1, bound - 0.001]
    return [*edges, *feature.categories, *(c.lower() for c in feature.categories)]


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
def test_the_fast_path_agrees_with_the_full_rules(feature: Feature) -> None:
    for candidate in _candidates(feature):
        try:
            expected: object = feature.parse(candidate)
        except ValueError as exc:
            expected = FieldProblem(feature.name, str(exc))
        values, problems = parse_features(raw(**{feature.name: candidate}))
        got = problems[0] if problems else values[FEATURE_NAMES.index(feature.name)]
        assert got == expected, candidate
        assert type(got) is type(expected), candidate


def test_long_values_are_cut_in_problems_so_answers_stay_small() -> None:
    found = problems_of(housing_status="B" * 100_000, income=10**400, customer_age=-(10**15))
    assert all(len(problem) < 200 for problem in found.values())
    assert found["housing_status"].startswith("unknown category 'BBBBB")
    assert "(100,000 characters)" in found["housing_status"]
    assert found["income"] == "an integer of 1329 bits is out of range [0.1, 0.9]"
    assert found["customer_age"].startswith("-1000000000000000 is out of range")


def test_unknown_fields_are_named_up_to_a_bound_and_the_rest_counted() -> None:
    many = {**RAW_APPLICATION, **{f"extra_{i}" * 50: 1 for i in range(1_000)}}
    with pytest.raises(InvalidFeatures) as caught:
        Application.parse(many)
    problems = caught.value.problems
    assert len(problems) == 6
    assert all(len(p.field) <= 60 for p in problems)
    assert problems[-1] == FieldProblem("(more fields)", "995 more are not features")
    assert len(str(caught.value)) < 1_000
