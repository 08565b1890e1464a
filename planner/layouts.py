"""Plans for layouts a caller chooses: baselines (even pipelines, memory-proportional layer
splits, exo-style equal tensor parallelism) and the parity checks of pipeline and hybrid plans.

`plan_for_layout(request, stages)` prices a fixed layout with exactly the cost functions of
the planner's own search (`planner.stages`), so a baseline and the planner's plan compare
like for like. The request's topology, model and constraints are used as given, except
`constraints.parallelism`, `sharding` and `allow_unused_nodes`: the layout fixes all three.
"""

from __future__ import annotations

from collections.abc import Sequence

from planner.plan import make_layout_plan
from planner.stages import LayoutSplit, StageLayout
from protocol.plan import Plan
from protocol.schema import PlanRequest

__all__ = ["LayoutSplit", "StageLayout", "plan_for_layout"]


def plan_for_layout(request: PlanRequest, stages: Sequence[StageLayout]) -> Plan:
    """The plan whose stages are `stages`, in pipeline order (stage 0 holds the embeddings and
    the output head). Each stage runs the next `layers` decoder layers over exactly its
    `nodes`, split by its `split` (`OPTIMAL`: the fastest asymmetric split for those nodes and
    layers; `EQUAL`: the even split). A layout that does not fit gives an infeasible plan
    whose reasons say by how much; a malformed one (unknown or repeated node, layer counts
    that do not add up to the model's) raises ValueError."""
    return make_layout_plan(request, stages)
