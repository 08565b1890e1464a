"""Property tests: on small random clusters and models the CP-SAT plan is valid and its
objective equals the optimum found by brute-force enumeration of every split and every ring."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.context import PlanningContext
from planner.costs import UNITS, unit_costs
from planner.plan import make_plan
from planner.problem import Problem, base_time_ps, time_coefficient
from protocol.config_reader import read_config
from protocol.schema import PlanRequest
from tests.test_planner import assert_valid

GAP_MS = 2e-6  # the solver's optimality gap (under 1 ns) plus the plan's rounding to 1 ns


def compositions(total: int, parts: list[bool]) -> Iterator[tuple[int, ...]]:
    """Every way to give `total` units to the parts marked True."""
    slots = [i for i, on in enumerate(parts) if on]
    if not slots:
        if total == 0:
            yield tuple(0 for _ in parts)
        return
    for cut in itertools.combinations_with_replacement(range(total + 1), len(slots) - 1):
        bounds = (0, *cut, total)
        out = [0] * len(parts)
        for s, a, b in zip(slots, bounds, bounds[1:]):
            out[s] = b - a
        yield tuple(out)


def attention_options(n_kv: int, g: int, used: bool, replicate: bool) -> list[tuple[int, int]]:
    """(whole groups, partial query heads) a node may hold."""
    if not used:
        return [(0, 0)]
    opts = [(w, 0) for w in range(n_kv + 1)]
    if replicate:
        opts += [(0, q) for q in range(1, g + 1)]
    return opts


def packs(partials: list[int], groups: int, g: int) -> bool:
    """Can the partial shares fill `groups` KV groups exactly, one group per node?"""
    for choice in itertools.product(range(groups), repeat=len(partials)):
        sums = [0] * groups
        for q, j in zip(partials, choice):
            sums[j] += q
        if all(s == g for s in sums):
            return True
    return not partials and groups == 0


def cheapest_ring_ps(p: Problem, used: list[str]) -> int:
    """Every ring over `used` enumerated (rank 0 fixed) and priced the product's way."""
    if len(used) < 2:
        return 0
    first, rest = used[0], used[1:]
    return min(p.ring.ring_ps([first, *order]) for order in itertools.permutations(rest))


def brute_force(p: Problem) -> int | None:
    c, t, g = p.costs, p.costs.total_units, p.q_per_kv
    n_kv = t["kv_head"]
    ids = [n.id for n in p.nodes]
    best: int | None = None
    for used in itertools.product([False, True], repeat=len(ids)):
        k = sum(used)
        if k == 0 or (not p.allow_unused and k < len(ids)):
            continue
        replicate = k > n_kv
        comm = cheapest_ring_ps(p, [i for i, u in zip(ids, used) if u])
        per_node_attention = [attention_options(n_kv, g, u, replicate) for u in used]
        for attention in itertools.product(*per_node_attention):
            whole = sum(w for w, _ in attention)
            partials = [q for _, q in attention if q]
            if whole > n_kv or not packs(partials, n_kv - whole, g):
                continue
            for ffn, exp, lin in itertools.product(
                compositions(t["ffn_block"], list(used)),
                compositions(t["expert"], list(used)),
                compositions(t["lin_k_head"], list(used)),
            ):
                slowest = 0
                fits = True
                for i, node in enumerate(p.nodes):
                    if not used[i]:
                        continue
                    w, q = attention[i]
                    x = {
                        "q_head": g * w + q,
                        "kv_head": w + (1 if q else 0),
                        "ffn_block": ffn[i],
                        "expert": exp[i],
                        "lin_k_head": lin[i],
                    }
                    memory = c.replicated_weight + p.overhead_bytes
                    memory += sum((c.weight[u] + c.cache[u]) * x[u] for u in UNITS)
                    if memory > node.budget:
                        fits = False
                        break
                    bw = node.bandwidth_gbps
                    time = base_time_ps(p, bw) + sum(
                        time_coefficient(c.read[u] + c.cache[u], bw) * x[u] for u in UNITS
                    )
                    slowest = max(slowest, time)
                if fits and (best is None or slowest + comm < best):
                    best = slowest + comm
    return best


@st.composite
def small_requests(draw: st.DrawFn, count: int | None = None, ring: bool = False) -> PlanRequest:
    """A small model on 1-3 nodes (or `count`), links of random kinds (or, with `ring`, an
    Ethernet switch plus a Thunderbolt ring in a random order, the nodes sometimes alike)."""
    family = draw(st.sampled_from(["llama", "qwen3_moe", "qwen3_next"]))
    n_kv = draw(st.integers(1, 2))
    g = draw(st.integers(1, 2))
    quant = draw(st.sampled_from([None, {"bits": 4, "group_size": 64}]))
    model: dict[str, Any] = {
        "model_type": family,
        "hidden_size": 128,
        "num_hidden_layers": draw(st.integers(1, 2)),
        "num_attention_heads": n_kv * g,
        "num_key_value_heads": n_kv,
        "head_dim": 64,
        "vocab_size": 256,
        "tie_word_embeddings": draw(st.booleans()),
        "intermediate_size": 64 * draw(st.integers(1, 3)),
    }
    if family != "llama":
        model.update(
            num_experts=draw(st.integers(1, 3)),
            num_experts_per_tok=1,
            moe_intermediate_size=64,
            decoder_sparse_step=1,
            mlp_only_layers=[],
        )
    if family == "qwen3_next":
        model.update(
            shared_expert_intermediate_size=64,
            linear_num_key_heads=draw(st.integers(1, 2)),
            linear_num_value_heads=2,
            linear_key_head_dim=64,
            linear_value_head_dim=64,
            full_attention_interval=2,
            num_hidden_layers=2,
        )
        model["linear_num_value_heads"] = model["linear_num_key_heads"] * draw(st.integers(1, 2))
    if quant:
        model["quantization"] = quant
    count = count or draw(st.integers(1, 3))
    total = unit_costs(read_config(model), 256).total_weight
    nodes = [
        {
            "id": f"n{i}",
            "memory_bytes": max(1, int(total * draw(st.floats(0.2, 1.3)))),
            "bandwidth_gbps": draw(st.sampled_from([100, 200, 400, 800])),
        }
        for i in range(count)
    ]
    links = [
        {
            "a": a["id"],
            "b": b["id"],
            "kind": "ethernet"
            if ring
            else draw(st.sampled_from(["rdma", "thunderbolt", "ethernet"])),
        }
        for a, b in itertools.combinations(nodes, 2)
    ]
    if ring:
        # Identical Macs in a ring that does not follow their names are told apart only by
        # their neighbours.
        if draw(st.booleans()):
            nodes = [{**nodes[0], "id": n["id"]} for n in nodes]
        order = draw(st.permutations(nodes))
        links += [
            {"a": a["id"], "b": b["id"], "kind": "thunderbolt"}
            for a, b in zip(order, order[1:] + order[:1])
        ]
    return PlanRequest.model_validate(
        {
            "topology": {"nodes": nodes, "links": links},
            "model": model,
            "constraints": {
                "headroom": 0,
                "context_tokens": 256,
                "overhead_bytes": 0,
                "sharding": "asymmetric",
                # The reference is of single-stage splits (layouts: test_planner_pipeline_*).
                "parallelism": "tensor",
                "allow_unused_nodes": draw(st.booleans()),
            },
        }
    )


def assert_valid_and_optimal(req: PlanRequest) -> None:
    problem = PlanningContext.of(req).problem()
    optimum = brute_force(problem)
    plan = make_plan(req)
    if optimum is None:
        assert not plan.feasible and plan.reasons
        return
    assert plan.feasible, plan.reasons
    assert_valid(plan)
    assert plan.solver.objective == pytest.approx(optimum / 1e9, abs=GAP_MS)
    assert plan.estimates is not None
    assert plan.estimates.decode_ms_per_token == pytest.approx(optimum / 1e9, abs=GAP_MS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_requests())
def test_plan_is_valid_and_optimal(req: PlanRequest) -> None:
    assert_valid_and_optimal(req)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_requests(count=4, ring=True))
def test_plan_on_a_thunderbolt_ring_is_optimal(req: PlanRequest) -> None:
    """Four nodes where which ones neighbour which matters: the ring level of a subset, and
    with it the all-reduce, depends on the subset, not on each node alone."""
    assert_valid_and_optimal(req)
