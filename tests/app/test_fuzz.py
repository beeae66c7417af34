"""Schema-driven fuzzing of the whole OpenAPI surface (schemathesis): the app on a throwaway database
with a key of every scope; every answer must be no server error, a status and a body the OpenAPI
documents, and a 405 must carry ``Allow``.  Skipped where schemathesis is not installed (``.[dev]``)."""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402  (installed with schemathesis)
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from benchmarks.load import Target, prepare_target, throwaway_schema  # noqa: E402
from tests.core.conftest import PG_URL  # noqa: E402

EXAMPLES = 50  # per operation and mode


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fuzz_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Target, Any]]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(throwaway_schema(PG_URL)) if request.param == "postgres" else None
        yield from _serving(prepare_target(tmp_path_factory.mktemp("fuzz"), url, users=20))


def _serving(target: Target) -> Iterator[tuple[Target, Any]]:
    app = target.app()
    with TestClient(app):  # runs the lifespan: the runtime stays on app.state for the fuzzer's calls
        app.state.runtime.tasks.run_job = lambda job_id: None  # no broker here
        yield target, app


def allow_on_405(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code == 405:
        assert response.headers.get("allow"), f"405 without Allow on {case.method} {case.path}"


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_the_api_answers_as_its_schema_says(fuzz_target: tuple[Target, Any]) -> None:
    # (schemathesis's own pytest loader does not run under pytest 9: hypothesis drives each operation here)
    target, app = fuzz_target
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: dict[str, str] = {}
    operations = 0
    for result, mode in itertools.product(schema.get_all_operations(), GenerationMode):
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def fuzz(case: Any) -> None:
            case.call_and_validate(
                headers={"X-API-Key": target.all_key}, checks=CHECKS, additional_checks=[allow_on_405]
            )

        try:
            fuzz()
        except Unsatisfiable:  # no parameter and no body: nothing to make invalid
            if mode is not GenerationMode.NEGATIVE:
                raise
        except (
            Exception,
            BaseExceptionGroup,
        ) as error:  # every operation is fuzzed; all failures are reported together
            failures[f"{operation.label} ({mode.value})"] = str(error)[:3000]
    assert operations >= 2 * 15
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


def test_every_undocumented_method_is_a_405_naming_the_documented_ones(
    fuzz_target: tuple[Target, Any],
) -> None:
    target, app = fuzz_target
    client = TestClient(app)
    headers = {"X-API-Key": target.all_key}
    checked = 0
    paths = app.openapi()["paths"]
    for template in paths:
        path = re.sub(r"\{[^/]+\}", "x", template)
        # every template the concrete path matches ("/admin/jobs/trigger" is also "/admin/jobs/{job_id}")
        documented = {
            m.upper()
            for other, operations in paths.items()
            if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(other)), path)
            for m in operations
        }
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - documented:
            response = client.request(method, path, headers=headers)
            assert response.status_code == 405, (method, path, response.text)
            assert response.json()["error"]["code"] == "method_not_allowed"
            allowed = {m.strip() for m in response.headers["Allow"].split(",")}
            assert documented <= allowed, (method, path, allowed)
            checked += 1
    assert checked > 30
