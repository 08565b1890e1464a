"""The per-rank overhead a plan request gets when it names none follows the model, and reasons
print sizes in the unit that fits them."""

from __future__ import annotations

import json
from pathlib import Path

from planner.diagnose import gb
from protocol.config_reader import read_config
from protocol.schema import (
    DEFAULT_OVERHEAD_BYTES,
    OVERHEAD_BASE_BYTES,
    PlanRequest,
    model_overhead_bytes,
)

CONFIGS = Path(__file__).resolve().parent.parent / "planner" / "examples" / "configs"
TOPOLOGY = {"nodes": [{"id": "a", "memory_gb": 64, "bandwidth_gbps": 400}]}


def _small() -> dict[str, object]:
    from executor.tiny_models import config_for

    return config_for("llama")


def _request(model: dict[str, object], **constraints: object) -> PlanRequest:
    return PlanRequest.model_validate(
        {"topology": TOPOLOGY, "model": model, "constraints": constraints}
    )


def test_the_default_overhead_grows_with_the_model() -> None:
    big = json.loads(next(CONFIGS.glob("llama-3.1-70b*.json")).read_text())
    small, large = _request(_small()), _request(big)
    assert small.constraints.overhead_bytes > OVERHEAD_BASE_BYTES
    assert small.constraints.overhead_bytes < large.constraints.overhead_bytes
    assert large.constraints.overhead_bytes == model_overhead_bytes(read_config(big))
    assert large.constraints.overhead_bytes < DEFAULT_OVERHEAD_BYTES


def test_a_named_overhead_is_kept_and_survives_a_round_trip() -> None:
    named = _request(_small(), overhead_bytes=1_000_000)
    assert named.constraints.overhead_bytes == 1_000_000
    again = PlanRequest.model_validate_json(_request(_small()).model_dump_json())
    assert again.constraints.overhead_bytes == _request(_small()).constraints.overhead_bytes


def test_sizes_print_in_the_unit_that_fits() -> None:
    assert gb(1.7e9) == "1.7 GB"
    assert gb(45_200_000) == "45.2 MB"
    assert gb(12_000) == "12.0 kB"
