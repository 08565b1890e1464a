"""Multi-stage plans built by hand from the plan contract (`protocol.plan`), for the tests of
what shows stages (the CLI table, the agents' table): a real single-stage plan of the planner,
its layers cut into stages."""

from __future__ import annotations

from planner_cases import LLAMA_70B, config, node, request

from planner.plan import make_plan
from protocol.plan import Plan, StageEstimate
from protocol.schema import Range

THREE = [node("studio", 192, 819), node("max", 128, 546), node("mini", 64, 273)]


def single_stage_plan() -> Plan:
    plan = make_plan(request(THREE, config(LLAMA_70B), allow_unused_nodes=False))
    assert plan.feasible and len(plan.ranks) == 3, plan.reasons
    return plan


def two_stage_plan() -> Plan:
    """Stage 0: ranks 0 and 1 (a tensor-parallel pair) on layers 0-56; stage 1: rank 2 alone
    on layers 56-80. The figures are made up but consistent: the decode time is the stages'
    sum."""
    plan = single_stage_plan()
    assert plan.model is not None and plan.estimates is not None
    cut, n = 56, plan.model.num_layers
    layers: list[Range] = [(0, cut), (0, cut), (cut, n)]
    ranks = [
        r.model_copy(update={"stage": int(i == 2), "layers": layers[i]})
        for i, r in enumerate(plan.ranks)
    ]
    stages = [
        StageEstimate(
            stage=0,
            layers=(0, cut),
            ranks=[0, 1],
            compute_ms=61.25,
            allreduce_ms=4.5,
            transfer_ms=0.25,
        ),
        StageEstimate(
            stage=1,
            layers=(cut, n),
            ranks=[2],
            compute_ms=40.0,
            allreduce_ms=0.0,
            transfer_ms=0.25,
        ),
    ]
    total = sum(s.compute_ms + s.allreduce_ms + s.transfer_ms for s in stages)
    estimates = plan.estimates.model_copy(
        update={
            "decode_ms_per_token": total,
            "tokens_per_s": 1e3 / total,
            "transfer_ms": 0.5,
            "stages": stages,
        }
    )
    return plan.model_copy(update={"ranks": ranks, "estimates": estimates})
