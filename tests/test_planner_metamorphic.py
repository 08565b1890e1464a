"""Metamorphic tests of the planner on the cluster families people cable (issue 11): meshes,
Thunderbolt rings and chains, RDMA islands joined by Ethernet, an Ethernet switch plus RDMA
pairs; 5-8 nodes, memory-bound so that five nodes or more must be used.

The reference enumerates every set of used nodes and every ring over it explicitly (priced by
the product's one ring pricing), and finds each set's best split by dynamic programming over
the nodes; it shares nothing with the solver's search. Properties: the plan's decode time is
the solver's objective and the reference's optimum; removing a node or a link never makes the
plan faster; adding a link, memory or bandwidth never makes it slower; listing the cluster in
another order gives the same plan and plan_id; more solver time never gives a slower plan.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from planner.context import PlanningContext
from planner.costs import SHARDED, Unit, unit_costs
from planner.greedy import KV_GROUP
from planner.plan import make_plan
from planner.problem import (
    NodeInput,
    Problem,
    base_time_ps,
    fixed_bytes,
    memory_allows,
    time_coefficient,
)
from protocol.config_reader import read_config
from protocol.plan import Plan
from protocol.schema import PlanRequest

GAP_MS = 2e-6  # the solver's optimality gap (under 1 ns) plus the plan's rounding to 1 ns
FAMILIES = ("mesh", "ring", "chain", "islands", "switch")
KINDS = ("rdma", "thunderbolt", "ethernet")
EXAMPLES = 12
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# -- the reference ---------------------------------------------------------------------------
def _unit_steps(p: Problem) -> tuple[list[str], dict[str, int], dict[str, int], dict[str, float]]:
    """Unit kinds (a KV group is a query head with its KV head: q_per_kv is 1 here), their
    counts, bytes held and bytes read."""
    c = p.costs
    kinds = [KV_GROUP, *SHARDED]
    count = {KV_GROUP: c.total_units[Unit.KV_HEAD], **{u: c.total_units[u] for u in SHARDED}}
    size = {KV_GROUP: c.held(Unit.Q_HEAD) + c.held(Unit.KV_HEAD)}
    size.update({u: c.held(u) for u in SHARDED})
    reads = {KV_GROUP: c.per_token(Unit.Q_HEAD) + c.per_token(Unit.KV_HEAD)}
    reads.update({u: c.per_token(u) for u in SHARDED})
    return kinds, count, size, reads


def best_split_ps(p: Problem, used: tuple[NodeInput, ...]) -> int | None:
    """The least slowest-rank time of any split over exactly `used`, by dynamic programming
    over the nodes (state: the units still to place)."""
    kinds, count, size, read = _unit_steps(p)
    fixed = fixed_bytes(p)

    def options(n: NodeInput, left: tuple[int, ...]) -> list[tuple[tuple[int, ...], int]]:
        out = []
        for take in itertools.product(*(range(x + 1) for x in left)):
            held = fixed + sum(size[u] * t for u, t in zip(kinds, take))
            if held <= n.budget:
                bw = n.bandwidth_gbps
                time = base_time_ps(p, bw)
                time += sum(
                    (time_coefficient(read[u], bw) if u != KV_GROUP else _group_ps(p, bw)) * t
                    for u, t in zip(kinds, take)
                )
                out.append((take, time))
        return out

    @functools.cache
    def best(i: int, left: tuple[int, ...]) -> int | None:
        if i == len(used):
            return 0 if not any(left) else None
        found = None
        for take, time in options(used[i], left):
            rest = best(i + 1, tuple(a - b for a, b in zip(left, take)))
            if rest is not None and (found is None or max(time, rest) < found):
                found = max(time, rest)
        return found

    return best(0, tuple(count[u] for u in kinds))


def _group_ps(p: Problem, bw: float) -> int:
    c = p.costs
    q = time_coefficient(c.per_token(Unit.Q_HEAD), bw)
    return q + time_coefficient(c.per_token(Unit.KV_HEAD), bw)


def cheapest_ring_ps(p: Problem, ids: list[str]) -> int:
    if len(ids) < 2:
        return 0
    return min(p.ring.ring_ps([ids[0], *rest]) for rest in itertools.permutations(ids[1:]))


def reference_ps(p: Problem) -> int | None:
    """Min over every set of used nodes of its best split plus its cheapest explicit ring."""
    best: int | None = None
    for k in range(1, len(p.nodes) + 1):
        for used in itertools.combinations(p.nodes, k):
            if not memory_allows(p, k, list(used)):
                continue
            split = best_split_ps(p, used)
            if split is None or (best is not None and split >= best):
                continue
            total = split + cheapest_ring_ps(p, [n.id for n in used])
            best = total if best is None else min(best, total)
    return best


# -- clusters --------------------------------------------------------------------------------
def _links(draw: st.DrawFn, family: str, ids: list[str]) -> list[dict[str, Any]]:
    def link(a: str, b: str, kind: str) -> dict[str, Any]:
        return {"a": a, "b": b, "kind": kind}

    order = draw(st.permutations(ids))
    pairs = list(itertools.combinations(ids, 2))
    if family == "mesh":
        return [link(a, b, draw(st.sampled_from(KINDS))) for a, b in pairs]
    if family in ("ring", "chain"):
        ends = order[1:] + (order[:1] if family == "ring" else [])
        return [link(a, b, "thunderbolt") for a, b in zip(order, ends)]
    if family == "islands":
        cut = draw(st.integers(2, len(ids) - 2))
        left, right = order[:cut], order[cut:]
        inside = [*itertools.combinations(left, 2), *itertools.combinations(right, 2)]
        bridge = (draw(st.sampled_from(left)), draw(st.sampled_from(right)))
        return [*(link(a, b, "rdma") for a, b in inside), link(*bridge, "ethernet")]
    rdma = draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=3, unique=True))
    return [*(link(a, b, "ethernet") for a, b in pairs), *(link(a, b, "rdma") for a, b in rdma)]


@st.composite
def clusters(draw: st.DrawFn) -> PlanRequest:
    """A small dense model on 5-8 nodes of one family; each node's memory holds 70-95 % of a
    quarter of the sharded bytes next to what every rank keeps: four nodes never hold it."""
    n_kv = draw(st.integers(4, 6))
    model: dict[str, Any] = {
        "model_type": "llama",
        "hidden_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": n_kv,
        "num_key_value_heads": n_kv,
        "head_dim": 64,
        "vocab_size": 256,
        "tie_word_embeddings": False,
        "intermediate_size": 64 * draw(st.integers(1, 3)),
    }
    costs = unit_costs(read_config(model), 256)
    held = costs.sharded_held
    count = draw(st.integers(5, 8))
    ids = [f"n{i}" for i in range(count)]
    nodes = [
        {
            "id": i,
            "memory_bytes": costs.replicated_weight + held * draw(st.integers(70, 95)) // 400,
            "bandwidth_gbps": draw(st.sampled_from([0.05, 0.1, 0.2, 0.4])),
        }
        for i in ids
    ]
    family = draw(st.sampled_from(FAMILIES))
    return cluster_request(nodes, _links(draw, family, ids), model, "tensor")


def cluster_request(
    nodes: list[dict[str, Any]], links: list[dict[str, Any]], model: dict[str, Any], mode: str
) -> PlanRequest:
    """A metamorphic case: no headroom or overhead, a short context, asymmetric splits."""
    constraints = {"headroom": 0, "context_tokens": 256, "overhead_bytes": 0}
    return PlanRequest.model_validate(
        {
            "topology": {"nodes": nodes, "links": links},
            "model": model,
            "constraints": {**constraints, "sharding": "asymmetric", "parallelism": mode},
        }
    )


def _memory_bound(req: PlanRequest) -> Problem:
    p = PlanningContext.of(req).problem()
    assume(not memory_allows(p, 4, p.nodes) and memory_allows(p, len(p.nodes), p.nodes))
    return p


def _with(req: PlanRequest, **topology: Any) -> PlanRequest:
    data = req.model_dump(mode="json")
    data["topology"].update(topology)
    return PlanRequest.model_validate(data)


def _ms(plan: Plan) -> float:
    assert plan.estimates is not None, plan.reasons
    return plan.estimates.decode_ms_per_token


# -- properties ------------------------------------------------------------------------------
@SETTINGS
@given(clusters())
def test_decode_time_is_the_objective_and_the_reference_optimum(req: PlanRequest) -> None:
    optimum = reference_ps(_memory_bound(req))
    plan = make_plan(req)
    if optimum is None:
        assert not plan.feasible
        return
    assert plan.feasible and plan.status == "optimal", plan.reasons
    assert len(plan.ranks) >= 5
    assert plan.solver.objective == pytest.approx(_ms(plan), abs=GAP_MS)
    assert _ms(plan) == pytest.approx(optimum / 1e9, abs=GAP_MS)


def check_removing_a_node_or_a_link(req: PlanRequest, data: st.DataObject) -> None:
    """Removing a node or a link never makes the plan faster."""
    plan = make_plan(req)
    topo = req.model_dump(mode="json")["topology"]
    gone = data.draw(st.sampled_from([n["id"] for n in topo["nodes"]]))
    nodes = [n for n in topo["nodes"] if n["id"] != gone]
    links = [x for x in topo["links"] if gone not in (x["a"], x["b"])]
    link_gone = data.draw(st.integers(0, len(topo["links"]) - 1))
    parts = [
        (nodes, links),
        (topo["nodes"], topo["links"][:link_gone] + topo["links"][link_gone + 1 :]),
    ]
    for part_nodes, part_links in parts:
        try:
            part = make_plan(_with(req, nodes=part_nodes, links=part_links))
        except ValueError:
            continue  # the part is not connected: not a cluster
        if part.feasible:
            assert plan.feasible and _ms(plan) <= _ms(part) + GAP_MS


def check_adding_a_link_memory_or_bandwidth(req: PlanRequest, data: st.DataObject) -> None:
    """Adding a link, memory or bandwidth never makes the plan slower."""
    plan = make_plan(req)
    assume(plan.feasible)
    topo = req.model_dump(mode="json")["topology"]
    ids = [n["id"] for n in topo["nodes"]]
    a, b = data.draw(st.sampled_from(list(itertools.combinations(ids, 2))))
    kind = data.draw(st.sampled_from(KINDS))
    who = data.draw(st.sampled_from(ids))
    more_memory = [
        {**n, "memory_bytes": n["memory_bytes"] * 2} if n["id"] == who else n for n in topo["nodes"]
    ]
    faster = [
        {**n, "bandwidth_gbps": n["bandwidth_gbps"] * 2} if n["id"] == who else n
        for n in topo["nodes"]
    ]
    for more in (
        _with(req, links=[*topo["links"], {"a": a, "b": b, "kind": kind}]),
        _with(req, nodes=more_memory),
        _with(req, nodes=faster),
    ):
        assert _ms(make_plan(more)) <= _ms(plan) + GAP_MS


def check_another_order(req: PlanRequest, rnd: Any) -> None:
    """The same cluster listed in another order gives the same plan and plan_id."""
    plan = make_plan(req)
    topo = req.model_dump(mode="json")["topology"]
    nodes, links = list(topo["nodes"]), list(topo["links"])
    rnd.shuffle(nodes)
    rnd.shuffle(links)
    links = [{**x, "a": x["b"], "b": x["a"]} if rnd.random() < 0.5 else x for x in links]
    again = make_plan(_with(req, nodes=nodes, links=links))
    assert again.plan_id == plan.plan_id
    assert again.ranks == plan.ranks and again.ring == plan.ring
    assert again.estimates == plan.estimates


def check_more_time(req: PlanRequest, short: float) -> None:
    """A larger time limit never gives a slower plan."""
    data = req.model_dump(mode="json")
    data["constraints"]["time_limit_s"] = short
    hurried = make_plan(PlanRequest.model_validate(data))
    plan = make_plan(req)
    if hurried.feasible:
        assert plan.feasible and _ms(plan) <= _ms(hurried) + GAP_MS
    if plan.feasible and hurried.status == "optimal":
        assert _ms(hurried) == pytest.approx(_ms(plan), abs=GAP_MS)


@SETTINGS
@given(clusters(), st.data())
def test_removing_a_node_or_a_link_never_makes_it_faster(
    req: PlanRequest, data: st.DataObject
) -> None:
    _memory_bound(req)
    check_removing_a_node_or_a_link(req, data)


@SETTINGS
@given(clusters(), st.data())
def test_adding_a_link_memory_or_bandwidth_never_makes_it_slower(
    req: PlanRequest, data: st.DataObject
) -> None:
    _memory_bound(req)
    check_adding_a_link_memory_or_bandwidth(req, data)


@SETTINGS
@given(clusters(), st.randoms(use_true_random=False))
def test_another_order_gives_the_same_plan(req: PlanRequest, rnd: Any) -> None:
    check_another_order(req, rnd)


@SETTINGS
@given(clusters(), st.sampled_from([0.001, 0.01, 0.05]))
def test_more_time_never_gives_a_slower_plan(req: PlanRequest, short: float) -> None:
    _memory_bound(req)
    check_more_time(req, short)
