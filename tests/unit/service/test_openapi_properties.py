"""Property-based run of the HTTP API from its own OpenAPI spec (schemathesis, positive and
negative examples, bounded): no server error, and every status code, content type and body
an endpoint answers is the one its spec declares."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from streams.service.http import create_app
from tests.unit.service.conftest import ACME

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture
def api_schema(service_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from streams.service.readiness import Readiness

    monkeypatch.setattr(Readiness, "broker", lambda _s: {"ok": True, "detail": "fake"})
    monkeypatch.setattr(Readiness, "registry", lambda _s: {"ok": True, "detail": "fake"})
    # A short wait so that examples with a satisfiable-looking token stay fast.
    app = create_app(service_factory(consistency_timeout_s=0.05))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _strategy(schema: Any, mode: GenerationMode) -> Any:
    operations = [result.ok() for result in schema.get_all_operations()]
    return st.one_of([op.as_strategy(generation_mode=mode) for op in operations])


def _run(schema: Any, headers: dict[str, str] | None, examples: int) -> list[int]:
    """Each generation mode's examples through every check; the status codes seen."""
    seen: list[int] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @given(case=_strategy(schema, mode))
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            seen.append(case.call_and_validate(headers=headers, checks=CHECKS).status_code)

        check()
    return seen


def test_api_answers_as_its_spec_says_and_never_500(api_schema: Any) -> None:
    seen = _run(api_schema, ACME, 150)
    assert 200 in seen and 422 in seen and 500 not in seen


def test_api_without_a_token_answers_as_its_spec_says(api_schema: Any) -> None:
    seen = _run(api_schema, None, 30)
    assert 401 in seen and 500 not in seen


def test_the_spec_lists_the_codes_the_edge_and_the_handlers_answer(service_factory: Any) -> None:
    spec = create_app(service_factory()).openapi()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"200", "408", "413", "503"} <= codes, (method, path, codes)
            if path.startswith("/v1/"):
                assert {"401", "422"} <= codes, (method, path, codes)
    assert {"400", "429"} <= set(spec["paths"]["/v1/recall"]["post"]["responses"])
    assert {"404", "202"} <= set(spec["paths"]["/v1/memories/{memory_id}"]["delete"]["responses"])
