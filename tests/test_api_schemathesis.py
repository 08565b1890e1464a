"""Schemathesis against rank 0's own OpenAPI on a real 2-rank group: no 5xx, whatever the
body. Bounded for `make test` (~200 cases); `ASYMTP_API_EXAMPLES=170` gives ≥ 500."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from scripted_model import build_scripted_model

from asymtp.api_group import Group, serving_group
from executor.api import create_app
from executor.engine_api import Engine

pytestmark = pytest.mark.slow

TOKEN = "schemathesis-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONTEXT = 48  # every generation is short, whatever max_tokens the case asks for
EXAMPLES = int(os.environ.get("ASYMTP_API_EXAMPLES", "65"))  # per operation with a body (3)

# The document only: building it reads no engine, so none is needed here.
OPENAPI = create_app(cast(Engine, None), ping_interval_s=None)[0].openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    model = build_scripted_model(tmp_path_factory.mktemp("scripted") / "model")
    work = tmp_path_factory.mktemp("group")
    with serving_group(model, work, [0.5, 0.5], context_tokens=CONTEXT, api_token=TOKEN) as g:
        yield g


def test_the_live_server_publishes_this_schema(group: Group) -> None:
    assert httpx.get(f"{group.url}/openapi.json", headers=AUTH).json() == OPENAPI


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_rank0_never_answers_5xx(case: Any, group: Group) -> None:
    case.call_and_validate(
        base_url=group.url, headers=AUTH, checks=[checks.not_a_server_error], timeout=120
    )
