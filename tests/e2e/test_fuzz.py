"""An API fuzz pass: schemathesis drives every operation of the served OpenAPI schema.

Bounded budget (a few dozen examples per operation). Every response must be a documented
status with a body matching its documented schema, and never a 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.e2e.conftest import Served, serve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def memory_server(
    tiny_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    data, artifacts = tiny_model
    with serve(tmp_path_factory.mktemp("fuzz"), data, artifacts, None) as served:
        yield served


@pytest.fixture(scope="module")
def api_schema(memory_server: Served) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{memory_server.base}/schema/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_no_schema_violation(case: schemathesis.Case) -> None:
    case.call_and_validate()
