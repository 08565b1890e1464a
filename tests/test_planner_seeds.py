"""Issue 13 acceptance 3 / issue 11 "a time limit returns the best plan known": the layout
search prices the simple layouts first (`planner.layout_seeds`), so `auto` and `pipeline` are
never slower than them, even stopped at a tiny time limit, and say when they stopped."""

from __future__ import annotations

from typing import Any

import pytest

from bench.cases import model_config, request
from bench.layout_clusters import CLUSTERS, Cluster, even_pipeline, memory_pipeline
from planner.context import PlanningContext
from planner.layout_seeds import seed_layouts
from planner.layouts import plan_for_layout
from planner.plan import make_plan
from protocol.plan import Plan
from protocol.schema import PlanRequest

DEEPSEEK = "deepseek-v3.1-4bit.json"
TINY_S = 0.01
AT_LEAST_S = 60.0  # the same request with time enough that a plan not cut short is the same


def ring16() -> Cluster:
    return next(c for c in CLUSTERS if c.name == "TB ring ×16")


def req(cluster: Cluster, config: dict[str, Any], mode: str, seconds: float) -> PlanRequest:
    return request(cluster.topology(), config, headroom=0.1, parallelism=mode, time_limit_s=seconds)


def decode_ms(plan: Plan) -> float:
    assert plan.feasible and plan.estimates is not None, plan.reasons
    return plan.estimates.decode_ms_per_token


@pytest.mark.parametrize("mode", ["auto", "pipeline"])
def test_a_tiny_time_limit_never_loses_to_a_simple_pipeline(mode: str) -> None:
    cluster, config = ring16(), model_config(DEEPSEEK)
    layers = int(config["num_hidden_layers"])
    plan = make_plan(req(cluster, config, mode, TINY_S))
    fixed = req(cluster, config, "auto", TINY_S)
    for layout in (even_pipeline(cluster, layers), memory_pipeline(cluster, layers)):
        baseline = plan_for_layout(fixed, layout)
        assert decode_ms(plan) <= decode_ms(baseline), (mode, layout)
    if not plan.solver.time_limited:
        # Not cut short: then it is what any longer time limit gives.
        assert plan.status in ("optimal", "feasible")
        again = make_plan(req(cluster, config, mode, AT_LEAST_S))
        assert decode_ms(again) == decode_ms(plan)
    else:
        assert plan.status == "feasible" and plan.warnings


def test_seeds_cover_the_baselines_from_every_ring_position() -> None:
    """The bench's even and memory pipelines (any node of the ring first, either way round)
    are among the seeds, and islands become stages of a hybrid."""
    cluster, config = ring16(), model_config(DEEPSEEK)
    ctx = PlanningContext.of(req(cluster, config, "auto", 1.0))
    ids = cluster.ids()
    seeds = seed_layouts(ctx, ids, pipeline=False)
    layers = int(config["num_hidden_layers"])
    assert even_pipeline(cluster, layers) in seeds
    assert memory_pipeline(cluster, layers) in seeds
    islands = next(c for c in CLUSTERS if c.name == "2 RDMA islands ×4 + Ethernet")
    ctx = PlanningContext.of(req(islands, config, "auto", 1.0))
    hybrids = [s for s in seed_layouts(ctx, islands.ids(), False) if len(s[0].nodes) > 1]
    assert [sorted(len(s.nodes) for s in h) for h in hybrids] == [[4, 4], [4, 4]]
    assert all(sum(s.layers for s in h) == layers for h in hybrids)
