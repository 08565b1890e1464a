"""Schemathesis against the service's own OpenAPI, calling a live token-protected server: no
5xx, no response that breaks the schema, no undocumented status code, content type or header,
no invalid input accepted; each operation alone and in chains (stateful, through the schema's
links). Bounded and seeded here (a few hundred cases); `python -m tests.schemathesis_full`
runs every phase with thousands."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis import checks
from service_server import Server, running_server

from service.app import create_app
from service.settings import Settings

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
]
MAX_EXAMPLES = 20  # per operation (10 operations), besides the schema's own examples
STATEFUL_SCENARIOS = 15
TOKEN = "schemathesis-token-of-enough-length"
SERVICE_ENV = {
    "ASYMTP_MAX_WAIT_S": "0.3",  # generated ?wait= values are clamped: long-polls stay short
    "ASYMTP_MAX_SOLVER_SECONDS": "3",
    "ASYMTP_MAX_AGENTS": "500",
}
HYPOTHESIS = {
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "derandomize": True,
    "database": None,
}


def _openapi() -> dict[str, Any]:
    # The same document the server publishes at /openapi.json (checked below). Schemathesis's
    # lazy `from_fixture` loader does not work with this pytest, so the schema is built here.
    db = Path(tempfile.mkdtemp(prefix="asymtp-openapi-")) / "unused.sqlite"
    caps = {k.removeprefix("ASYMTP_").lower(): v for k, v in SERVICE_ENV.items()}
    return create_app(Settings(db_path=db, token=TOKEN, **caps)).openapi()


OPENAPI = _openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("schemathesis") / "planner.sqlite"
    with running_server(db, token=TOKEN, env=SERVICE_ENV) as s:
        yield s


def test_the_live_server_publishes_this_schema(api_server: Server) -> None:
    assert httpx.get(f"{api_server.url}/openapi.json").json() == OPENAPI


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, **HYPOTHESIS)
def test_service_conforms_to_its_openapi(case: Any, api_server: Server) -> None:
    case.call_and_validate(
        base_url=api_server.url, headers=api_server.auth, checks=CHECKS, timeout=30
    )


def test_chains_of_calls_conform(api_server: Server) -> None:
    machine = schema.as_state_machine()

    class Chains(machine):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            # Every scenario starts from no deployments, so a replayed scenario (Hypothesis
            # replays to shrink and to check) meets the same state as its first run.
            url, auth = api_server.url, api_server.auth
            for d in httpx.get(f"{url}/deployments", headers=auth).json():
                httpx.delete(f"{url}/deployments/{d['name']}", headers=auth)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": api_server.url, "headers": api_server.auth, "timeout": 30}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    hyp = settings(max_examples=STATEFUL_SCENARIOS, stateful_step_count=5, **HYPOTHESIS)
    run_state_machine_as_test(Chains, settings=hyp)
