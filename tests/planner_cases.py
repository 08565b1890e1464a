"""Plan requests used across the planner tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from protocol.connectivity import full_mesh
from protocol.schema import PlanRequest

CONFIGS = Path(__file__).resolve().parent.parent / "planner" / "examples" / "configs"


def config(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return data


QWEN3_235B = "qwen3-235b-a22b-4bit"
LLAMA_70B = "llama-3.1-70b-bf16"
QWEN3_NEXT = "qwen3-next-80b-a3b-8bit"


def qwen35_two_kv() -> dict[str, Any]:
    """A Qwen3.5-MoE-style config (text_config nested, 2 KV heads, hybrid attention)."""
    inner = {k: v for k, v in config(QWEN3_NEXT).items() if k != "quantization"}
    inner["model_type"] = "qwen3_5_moe_text"
    return {
        "model_type": "qwen3_5_moe",
        "text_config": inner,
        "quantization": {"bits": 4, "group_size": 64},
    }


def mesh(nodes: list[dict[str, Any]], kind: str = "rdma") -> list[dict[str, Any]]:
    return full_mesh((n["id"] for n in nodes), kind)


def request(
    nodes: list[dict[str, Any]],
    model: dict[str, Any],
    links: list[dict[str, Any]] | None = None,
    **constraints: Any,
) -> PlanRequest:
    """A plan request; tensor parallelism unless asked otherwise (the tests written for the
    single-stage solver keep testing it; the layout tests ask for `auto` or `pipeline`)."""
    constraints.setdefault("parallelism", "tensor")
    return PlanRequest.model_validate(
        {
            "topology": {"nodes": nodes, "links": mesh(nodes) if links is None else links},
            "model": model,
            "constraints": constraints,
        }
    )


def node(node_id: str, memory_gb: float, bandwidth: float) -> dict[str, Any]:
    return {"id": node_id, "memory_gb": memory_gb, "bandwidth_gbps": bandwidth}


SEED_PAIR = [node("m5-max", 128, 614), node("laptop-48", 48, 273)]


def two_nodes(
    model: dict[str, Any], memory_gb: Any = 385, time_limit_s: float = 1
) -> dict[str, Any]:
    """Two uneven nodes over Thunderbolt: the request the input-hardening tests vary."""
    return {
        "topology": {
            "nodes": [
                {"id": "a", "memory_gb": memory_gb, "bandwidth_gbps": 800},
                {"id": "b", "memory_gb": 385, "bandwidth_gbps": 400},
            ],
            "links": [{"a": "a", "b": "b", "kind": "thunderbolt"}],
        },
        "model": model,
        "constraints": {"time_limit_s": time_limit_s},
    }
