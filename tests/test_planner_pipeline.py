"""Issue 13, the planner's half: it chooses tensor parallelism, a pipeline or a hybrid from its
own cost model, every plan carries its stages and transfers, and `plan_for_layout` prices a
fixed layout with the same functions."""

from __future__ import annotations

from typing import Any

import pytest

from planner.layouts import LayoutSplit, StageLayout, plan_for_layout
from planner.plan import make_plan
from protocol.plan import Plan
from tests.planner_cases import LLAMA_70B, QWEN3_235B, config, mesh, node, request
from tests.test_planner import assert_valid
from tests.test_planner_clusters import chain

LLAMA_405B = "llama-3.1-405b-4bit"


def stage_nodes(plan: Plan) -> list[list[str]]:
    assert plan.estimates is not None
    return [[plan.ranks[r].node_id for r in s.ranks] for s in plan.estimates.stages]


def assert_figures(plan: Plan) -> None:
    """The estimates add up: decode = Σ stages (compute + all-reduce + transfer), the plan's
    transfer and all-reduce figures are the stages' sums, and it is the solver's objective."""
    assert_valid(plan)
    e = plan.estimates
    assert e is not None and e.stages
    total = sum(s.compute_ms + s.allreduce_ms + s.transfer_ms for s in e.stages)
    assert e.decode_ms_per_token == pytest.approx(total, abs=1e-5)
    assert e.transfer_ms == pytest.approx(sum(s.transfer_ms for s in e.stages), abs=1e-5)
    assert e.allreduce_ms == pytest.approx(sum(s.allreduce_ms for s in e.stages), abs=1e-5)
    if len(e.stages) == 1:
        assert e.transfer_ms == 0
    else:
        assert all(s.transfer_ms > 0 for s in e.stages)
    if plan.sharding == "asymmetric":
        assert plan.solver.objective == pytest.approx(e.decode_ms_per_token, abs=1e-5)


def plan_of(
    nodes: list[dict[str, Any]], links: list[dict[str, Any]], model: str, mode: str
) -> Plan:
    plan = make_plan(request(nodes, config(model), links=links, parallelism=mode))
    assert plan.feasible, plan.reasons
    assert_figures(plan)
    return plan


def ms(plan: Plan) -> float:
    assert plan.estimates is not None
    return plan.estimates.decode_ms_per_token


def test_a_tcp_only_pair_runs_a_pipeline_where_that_is_faster() -> None:
    """Two 96 GB Macs over Thunderbolt 4 without RDMA, a model that needs both: 188 all-reduces
    a token over TCP cost more than one activation there and back."""
    nodes = [node("a", 96, 800), node("b", 96, 800)]
    links = [{"a": "a", "b": "b", "kind": "thunderbolt"}]
    auto = plan_of(nodes, links, QWEN3_235B, "auto")
    tensor = plan_of(nodes, links, QWEN3_235B, "tensor")
    assert stage_nodes(auto) == [["a"], ["b"]] and auto.status == "optimal"
    assert auto.estimates is not None and auto.estimates.transfer_ms > 0
    assert auto.estimates.allreduce_ms == 0
    assert ms(auto) < ms(tensor)
    assert ms(plan_of(nodes, links, QWEN3_235B, "pipeline")) == ms(auto)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_an_rdma_mesh_runs_tensor_parallel(count: int) -> None:
    nodes = [node(f"r{i}", 64 if count > 2 else 96, 800) for i in range(count)]
    auto = plan_of(nodes, mesh(nodes), LLAMA_70B, "auto")
    assert len(stage_nodes(auto)) == 1 and len(auto.ranks) >= 2
    assert auto.status == "optimal"
    assert auto.estimates is not None and auto.estimates.transfer_ms == 0
    assert ms(auto) < ms(plan_of(nodes, mesh(nodes), LLAMA_70B, "pipeline"))


def test_two_rdma_islands_joined_by_ethernet_run_a_hybrid() -> None:
    """Four 32 GB Macs an island hold no 70B bf16: tensor parallel inside each island, one
    pipeline hop over the Ethernet."""
    nodes = [node(f"i{i}", 32, 800) for i in range(8)]
    links = [*mesh(nodes[:4]), *mesh(nodes[4:]), {"a": "i0", "b": "i4", "kind": "ethernet"}]
    auto = plan_of(nodes, links, LLAMA_70B, "auto")
    stages = stage_nodes(auto)
    islands = [{f"i{i}" for i in range(4)}, {f"i{i}" for i in range(4, 8)}]
    assert len(stages) == 2 and all(len(s) >= 2 for s in stages)
    assert sorted(any(set(s) <= i for i in islands) for s in stages) == [True, True]
    assert auto.status == "optimal"
    assert ms(auto) < ms(plan_of(nodes, links, LLAMA_70B, "tensor"))
    assert ms(auto) < ms(plan_of(nodes, links, LLAMA_70B, "pipeline"))


def test_a_32_node_thunderbolt_ring_runs_a_hybrid() -> None:
    """405B 4-bit on 48 GB Macs: six are needed; pairs of neighbours in tensor parallel, in a
    pipeline around the ring, beat both one tensor-parallel group and a plain pipeline."""
    ids = [f"t{i:02d}" for i in range(32)]
    nodes = [node(i, 48, 400) for i in ids]
    links = chain(ids, closed=True)
    auto = plan_of(nodes, links, LLAMA_405B, "auto")
    stages = stage_nodes(auto)
    assert len(stages) >= 2 and any(len(s) >= 2 for s in stages)
    assert ms(auto) < ms(plan_of(nodes, links, LLAMA_405B, "tensor"))
    assert ms(auto) < ms(plan_of(nodes, links, LLAMA_405B, "pipeline"))


def test_memory_counts_only_a_stages_layers_and_stage_0_holds_the_outer_weights() -> None:
    nodes = [node("a", 96, 800), node("b", 96, 800)]
    req = request(nodes, config(LLAMA_70B), links=mesh(nodes), parallelism="tensor")
    whole = make_plan(request([node("x", 512, 800)], config(LLAMA_70B)))
    plan = plan_for_layout(req, [StageLayout(("a",), 40), StageLayout(("b",), 40)])
    assert plan.feasible and whole.feasible, plan.reasons
    assert_figures(plan)
    first, second = plan.ranks
    assert (first.layers, second.layers) == ((0, 40), (40, 80))
    assert (first.stage, second.stage) == (0, 1)
    outer = first.memory_bytes.weights - second.memory_bytes.weights
    total = whole.ranks[0].memory_bytes.weights
    # Stage 0 also holds the embeddings and the output head (two 128k × 8k bf16 matrices).
    assert outer == pytest.approx(2 * 128256 * 8192 * 2, rel=0.01)
    assert first.memory_bytes.weights + second.memory_bytes.weights == total


def test_plan_for_layout_prices_a_fixed_uneven_hybrid() -> None:
    nodes = [node(f"n{i}", 64, 800) for i in range(3)]
    req = request(nodes, config(LLAMA_70B), links=mesh(nodes, "thunderbolt"))
    layout = [
        StageLayout(("n0", "n1"), 50),
        StageLayout(("n2",), 30),
    ]
    plan = plan_for_layout(req, layout)
    assert plan.feasible, plan.reasons
    assert_figures(plan)
    assert stage_nodes(plan)[1] == ["n2"] and sorted(stage_nodes(plan)[0]) == ["n0", "n1"]
    assert [r.layers for r in plan.ranks] == [(0, 50), (0, 50), (50, 80)]
    equal = plan_for_layout(req, [StageLayout(("n0", "n1"), 50, LayoutSplit.EQUAL), layout[1]])
    assert equal.feasible and ms(equal) >= ms(plan)


def test_plan_for_layout_says_why_a_layout_does_not_fit() -> None:
    nodes = [node("a", 32, 800), node("b", 128, 800)]
    req = request(nodes, config(LLAMA_70B), links=mesh(nodes))
    plan = plan_for_layout(req, [StageLayout(("a",), 60), StageLayout(("b",), 20)])
    assert not plan.feasible
    assert any("stage 0" in r and "GB" in r for r in plan.reasons), plan.reasons
    with pytest.raises(ValueError, match="80"):
        plan_for_layout(req, [StageLayout(("a",), 10), StageLayout(("b",), 20)])
    with pytest.raises(ValueError, match="two stages"):
        plan_for_layout(req, [StageLayout(("a",), 40), StageLayout(("a",), 40)])


def test_an_infeasible_pipeline_says_why_in_numbers() -> None:
    nodes = [node("a", 64, 400), node("b", 64, 400)]
    plan = make_plan(request(nodes, config(LLAMA_70B), parallelism="pipeline"))
    assert not plan.feasible
    assert any("pipeline" in r and "GB" in r for r in plan.reasons), plan.reasons
    two_layers = {**config(LLAMA_70B), "num_hidden_layers": 2}
    three = [node(f"n{i}", 64, 400) for i in range(3)]
    plan = make_plan(request(three, two_layers, parallelism="pipeline", allow_unused_nodes=False))
    assert not plan.feasible and "allow_unused_nodes" in plan.reasons[0], plan.reasons
