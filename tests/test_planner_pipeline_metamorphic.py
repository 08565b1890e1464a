"""Issue 11's metamorphic properties over pipeline and hybrid plans (issue 13, acceptance 4):
`parallelism: auto` on 3-4 nodes of a 4-layer model that no node holds alone, over meshes of
mixed links, Thunderbolt chains and RDMA islands joined by Ethernet, where hybrids win often.

The reference enumerates every layout explicitly: every ordered sequence of disjoint node sets
(each node in one stage or unused), every split of the layers into contiguous ranges, each
stage's best split by the issue-11 reference's dynamic programming over its units and its
cheapest ring by trying every ring, and the transfers between consecutive stages (leader to
every rank of the next, the last back to stage 0). It shares the cost functions (a stage's
bytes, ring and transfer prices) with the planner and none of its search: no bounds, groups,
twins or branch and bound.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.context import PlanningContext
from planner.costs import unit_costs
from planner.plan import INVARIANT_TOLERANCE_MS, make_plan
from planner.problem import Problem
from planner.stages import send_ps, stage_problem
from protocol.config_reader import read_config
from protocol.schema import PlanRequest
from tests.test_planner_metamorphic import (
    GAP_MS,
    _ms,
    best_split_ps,
    cheapest_ring_ps,
    check_adding_a_link_memory_or_bandwidth,
    check_another_order,
    check_more_time,
    check_removing_a_node_or_a_link,
    cluster_request,
)

LAYERS = 4
EXAMPLES = 8
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FAMILIES = ("mesh", "chain", "islands")


# -- the reference ---------------------------------------------------------------------------
def _stage_ps(ctx: PlanningContext, nodes: tuple[str, ...], a: int, b: int) -> int | None:
    p: Problem = stage_problem(ctx, list(nodes), (a, b), a == 0, 10.0)
    used = tuple(n for n in p.nodes if n.id in nodes)
    split = best_split_ps(p, used)
    return None if split is None else split + cheapest_ring_ps(p, [n.id for n in used])


def _compositions(total: int, parts: int) -> list[list[int]]:
    """Every way to write `total` as `parts` positive layer counts, in order."""
    cuts = itertools.combinations(range(1, total), parts - 1)
    return [[b - a for a, b in zip((0, *c), (*c, total))] for c in cuts]


def _move(ctx: PlanningContext, stages: list[tuple[str, ...]], s: int) -> int:
    """Stage s's output to the next stage: from whichever of its nodes sends it cheapest."""
    c = ctx.cluster
    nodes = list(stages[s])
    receivers = list(stages[(s + 1) % len(stages)])
    return min(send_ps(c, n, receivers) for n in nodes)


def reference_ps(req: PlanRequest) -> int | None:
    ctx = PlanningContext.of(req)
    ids = sorted(ctx.cluster.nodes)
    price = functools.cache(functools.partial(_stage_ps, ctx))
    best: int | None = None
    for count in range(1, min(len(ids), LAYERS) + 1):
        for where in itertools.product(range(count + 1), repeat=len(ids)):
            stages = [tuple(n for n, w in zip(ids, where) if w == s + 1) for s in range(count)]
            if not all(stages):
                continue
            moves = [_move(ctx, stages, s) for s in range(count)] if count > 1 else [0]
            for layers in _compositions(LAYERS, count):
                starts = [sum(layers[:s]) for s in range(count)]
                prices = [price(g, a, a + n) for g, a, n in zip(stages, starts, layers)]
                if any(x is None for x in prices):
                    continue
                total = sum(x for x in prices if x is not None) + sum(moves)
                best = total if best is None else min(best, total)
    return best


# -- clusters --------------------------------------------------------------------------------
def _links(draw: st.DrawFn, family: str, ids: list[str]) -> list[dict[str, Any]]:
    order = draw(st.permutations(ids))
    if family == "mesh":
        kinds = st.sampled_from(["rdma", "thunderbolt", "ethernet"])
        return [{"a": a, "b": b, "kind": draw(kinds)} for a, b in itertools.combinations(ids, 2)]
    if family == "chain":
        return [{"a": a, "b": b, "kind": "thunderbolt"} for a, b in itertools.pairwise(order)]
    cut = len(ids) // 2
    left, right = order[:cut], order[cut:]
    inside = [*itertools.combinations(left, 2), *itertools.combinations(right, 2)]
    bridge = {"a": left[0], "b": right[0], "kind": "ethernet"}
    return [*({"a": a, "b": b, "kind": "rdma"} for a, b in inside), bridge]


@st.composite
def clusters(draw: st.DrawFn) -> PlanRequest:
    """A 4-layer dense model on 3-4 nodes, each holding 35-70 % of it: two nodes or more."""
    heads = draw(st.integers(2, 4))
    model: dict[str, Any] = {
        "model_type": "llama",
        "hidden_size": 128,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": 64,
        "vocab_size": 256,
        "tie_word_embeddings": False,
        "intermediate_size": 64 * draw(st.integers(1, 2)),
    }
    costs = unit_costs(read_config(model), 256)
    whole = costs.replicated_weight + costs.sharded_held
    ids = [f"n{i}" for i in range(draw(st.integers(3, 4)))]
    nodes = [
        {
            "id": i,
            "memory_bytes": whole * draw(st.integers(35, 70)) // 100,
            "bandwidth_gbps": draw(st.sampled_from([0.05, 0.1, 0.2])),
        }
        for i in ids
    ]
    family = draw(st.sampled_from(FAMILIES))
    return cluster_request(nodes, _links(draw, family, ids), model, "auto")


# -- properties ------------------------------------------------------------------------------
@SETTINGS
@given(clusters())
def test_decode_time_is_the_objective_and_the_reference_optimum(req: PlanRequest) -> None:
    optimum = reference_ps(req)
    plan = make_plan(req)
    if optimum is None:
        assert not plan.feasible
        return
    assert plan.feasible and plan.status == "optimal", plan.reasons
    # The reported decode time adds each stage's rounded figures; the objective is integer ps.
    assert plan.solver.objective == pytest.approx(_ms(plan), abs=INVARIANT_TOLERANCE_MS)
    assert plan.solver.objective == pytest.approx(optimum / 1e9, abs=GAP_MS)


@SETTINGS
@given(clusters(), st.data())
def test_removing_a_node_or_a_link_never_makes_it_faster(
    req: PlanRequest, data: st.DataObject
) -> None:
    check_removing_a_node_or_a_link(req, data)


@SETTINGS
@given(clusters(), st.data())
def test_adding_a_link_memory_or_bandwidth_never_makes_it_slower(
    req: PlanRequest, data: st.DataObject
) -> None:
    check_adding_a_link_memory_or_bandwidth(req, data)


@SETTINGS
@given(clusters(), st.randoms(use_true_random=False))
def test_another_order_gives_the_same_plan(req: PlanRequest, rnd: Any) -> None:
    check_another_order(req, rnd)


@SETTINGS
@given(clusters(), st.sampled_from([0.001, 0.01, 0.05]))
def test_more_time_never_gives_a_slower_plan(req: PlanRequest, short: float) -> None:
    check_more_time(req, short)
