"""An API fuzz pass: schemathesis drives every operation of the served OpenAPI schema.

Bounded budget (40 examples an operation; valid inputs everywhere, invalid ones where there
are parameters). Every response must be a documented status with a body matching its
documented schema, and never a 5xx. Every case carries the server's API key, so the predict
routes are fuzzed past the gate; a 401 may only answer a negative case that left the key out
(schemathesis drops the security scheme's header on purpose). Hypothesis runs the cases directly
(schemathesis' pytest plugin does not work with pytest 9's node ids).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from tests.e2e.conftest import Served, serve

pytestmark = pytest.mark.e2e

BUDGET = settings(
    max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@pytest.fixture(scope="module")
def memory_server(
    tiny_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    data, artifacts = tiny_model
    with serve(tmp_path_factory.mktemp("fuzz"), data, artifacts, None) as served:
        yield served


def test_no_server_error_and_no_schema_violation(memory_server: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{memory_server.base}/schema/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert {op.label for op in operations} >= {
        "POST /predict/sync/{user_id}",
        "POST /predict/async/{user_id}",
        "GET /healthcheck",
        "GET /readyz",
    }
    statuses: Counter[int] = Counter()
    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    runs = [(op, positive) for op in operations]
    runs += [(op, negative) for op in operations if "{" in op.path]
    for operation, mode in runs:
        statuses += _statuses(operation, mode, memory_server.auth)
    assert not [status for status in statuses if status >= 500]
    assert {200, 400, 404} <= set(statuses), statuses  # both valid and invalid ids were tried


def _statuses(
    operation: schemathesis.APIOperation,  # type: ignore[type-arg]
    mode: schemathesis.GenerationMode,
    auth: dict[str, str],
) -> Counter[int]:
    """Run the budget of ``mode`` cases of ``operation``, each with the key; their statuses."""
    statuses: Counter[int] = Counter()

    @BUDGET
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
        response = case.call_and_validate(headers=auth)
        statuses[response.status_code] += 1
        if response.status_code == 401:  # only a negative case that dropped the key
            assert mode == schemathesis.GenerationMode.NEGATIVE, case
            assert response.request.headers.get("authorization") != auth["Authorization"], case

    call()
    return statuses
