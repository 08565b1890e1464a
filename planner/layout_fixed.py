"""A layout the caller fixes (nodes and layer count per stage, split rule), checked and solved
stage by stage with the same prices as the search (`planner.stages`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from planner.context import PlanningContext
from planner.diagnose import gb
from planner.stages import LayoutSplit, StageLayout, StageSolution, solve_stage


def check_layout(ctx: PlanningContext, layout: Sequence[StageLayout]) -> None:
    """ValueError naming what is wrong with a layout: it is the caller's to fix."""
    if not layout:
        raise ValueError("a layout needs at least one stage")
    known, seen = set(ctx.cluster.nodes), set()
    for s, stage in enumerate(layout):
        if not stage.nodes:
            raise ValueError(f"stage {s} has no nodes")
        if stage.layers < 1:
            raise ValueError(f"stage {s} runs {stage.layers} layers: at least 1")
        for n in stage.nodes:
            if n not in known:
                raise ValueError(f"stage {s}: node {n!r} is not in the topology")
            if n in seen:
                raise ValueError(f"stage {s}: node {n!r} is in two stages")
            seen.add(n)
    total = sum(stage.layers for stage in layout)
    if total != ctx.spec.num_layers:
        raise ValueError(
            f"the stages run {total} layers in all; the model has {ctx.spec.num_layers}"
        )


def _why_not(ctx: PlanningContext, number: int, stage: StageLayout, layers: tuple[int, int]) -> str:
    costs = ctx.table.costs(layers, outer=number == 0)
    k = len(stage.nodes)
    need = costs.sharded_held + k * (costs.replicated_held + ctx.request.constraints.overhead_bytes)
    offer = sum(ctx.cluster.budgets[n] for n in stage.nodes)
    what = "an equal split" if stage.split is LayoutSplit.EQUAL else "any split"
    return (
        f"stage {number} ({', '.join(stage.nodes)}): layers [{layers[0]}, {layers[1]}) by "
        f"{what} do not fit: they need {gb(need)} at least, the nodes offer {gb(offer)}"
        + ("" if stage.split is LayoutSplit.OPTIMAL else " (or the dimensions do not divide)")
    )


def fixed_layout(
    ctx: PlanningContext, layout: Sequence[StageLayout], seconds_left: Callable[[], float]
) -> tuple[list[StageSolution] | None, list[str]]:
    """Every stage solved, or the reasons (in numbers) why some stage does not fit."""
    check_layout(ctx, layout)
    stages, reasons, start = [], [], 0
    for number, stage in enumerate(layout):
        layers = (start, start + stage.layers)
        start += stage.layers
        nodes = sorted(stage.nodes)
        solved = solve_stage(ctx, nodes, layers, number == 0, stage.split, seconds_left())
        if solved is None:
            reasons.append(_why_not(ctx, number, stage, layers))
        else:
            stages.append(solved)
    return (None, reasons) if reasons else (stages, [])
