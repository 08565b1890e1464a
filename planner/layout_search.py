"""The search over layouts (placeholder: the single stage)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from planner.context import PlanningContext
from planner.solver import solve
from planner.stages import StageSolution, tensor_stage


@dataclass
class Found:
    stages: list[StageSolution] | None
    optimal: bool = False
    time_limited: bool = False
    bound_ps: int | None = None
    reasons: list[str] = field(default_factory=list)


def search_layouts(ctx: PlanningContext, mode: str, seconds: float) -> Found:
    p = replace(ctx.problem(), time_limit_s=seconds)
    solution = solve(p)
    if solution.status == "infeasible":
        return Found(None, time_limited=solution.time_limited)
    stage = tensor_stage(ctx, p, solution)
    return Found([stage], solution.status == "optimal", solution.time_limited, solution.bound_ps)
