"""Plans for chosen splits: the parity check and benchmarks ask for shares, not clusters."""

from __future__ import annotations

from typing import Any

from planner.plan import make_plan
from protocol.connectivity import full_mesh
from protocol.plan import Plan
from protocol.schema import PlanRequest


def split_request(
    config: dict[str, Any],
    fractions: list[float],
    context_tokens: int = 32,
    sharding: str = "asymmetric",
) -> PlanRequest:
    """Nodes `node-0`, `node-1`, … with ample memory and memory bandwidth in proportion to
    `fractions`, fully meshed, all of them to be used, for one stage (a split of every layer;
    `planner.layouts.plan_for_layout` lays stages over the same nodes)."""
    nodes = [
        {"id": f"node-{i}", "memory_bytes": 1 << 40, "bandwidth_gbps": round(f * 1000, 3)}
        for i, f in enumerate(fractions)
    ]
    links = full_mesh(n["id"] for n in nodes)
    return PlanRequest.model_validate(
        {
            "topology": {"nodes": nodes, "links": links},
            "model": config,
            "constraints": {
                "sharding": sharding,
                # One stage: a split of every layer (pipelines: `planner.layouts`).
                "parallelism": "tensor",
                "allow_unused_nodes": False,
                "overhead_bytes": 0,
                "context_tokens": context_tokens,
                "headroom": 0,
            },
        }
    )


def plan_for_split(
    config: dict[str, Any],
    fractions: list[float],
    context_tokens: int = 32,
    sharding: str = "asymmetric",
) -> Plan:
    """A real planner plan whose ranks' speeds (and so shares) follow `fractions` (the nodes
    of `split_request`; `sharding: equal` gives today's even split of the same nodes instead)."""
    plan = make_plan(split_request(config, fractions, context_tokens, sharding))
    if not plan.feasible:
        raise ValueError("; ".join(plan.reasons))
    return plan
