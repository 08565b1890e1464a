"""The planner on real model configs: feasibility, validity, determinism, reasons."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from planner.plan import make_plan
from protocol.plan import Plan, RankPlan
from tests.planner_cases import (
    LLAMA_70B,
    QWEN3_235B,
    QWEN3_NEXT,
    SEED_PAIR,
    config,
    node,
    qwen35_two_kv,
    request,
)


def assert_valid(plan: Plan) -> None:
    """Stages partition the layers in order; in each stage, ranges partition every dimension,
    KV heads cover each rank's query heads; budgets hold."""
    assert plan.feasible and plan.model is not None and plan.estimates is not None
    cursor = 0
    for number, stage in enumerate(plan.estimates.stages):
        assert stage.stage == number and stage.layers[0] == cursor < stage.layers[1]
        cursor = stage.layers[1]
        ranks = [plan.ranks[r] for r in stage.ranks]
        assert all(r.stage == number and r.layers == stage.layers for r in ranks)
        assert_valid_stage(plan, ranks)
    assert cursor == plan.model.num_layers
    assert [r.rank for r in plan.ranks] == list(range(len(plan.ranks)))
    assert len(plan.ring) == len(plan.ranks)
    assert [r.node_id for r in plan.ranks] == plan.ring


def assert_valid_stage(plan: Plan, ranks: list[RankPlan]) -> None:
    assert plan.model is not None
    m = plan.model
    dims = {"q_heads": m.q_heads, "ffn": m.ffn_dim}
    if m.experts:
        dims["experts"] = m.experts
    if m.linear_k_heads:
        dims["linear_k_heads"] = m.linear_k_heads
        dims["linear_v_heads"] = m.linear_v_heads
    for dim, total in dims.items():
        covered = sorted(getattr(r, dim) for r in ranks if getattr(r, dim)[1] > getattr(r, dim)[0])
        cursor = 0
        for a, b in covered:
            assert a == cursor, f"{dim} ranges leave a gap or overlap at {cursor}"
            cursor = b
        assert cursor == total, f"{dim} ranges cover {cursor} of {total}"
    g = m.q_heads // m.kv_heads
    replicated = len(ranks) > m.kv_heads
    kv_seen: set[int] = set()
    for r in ranks:
        q0, q1 = r.q_heads
        k0, k1 = r.kv_heads
        if q1 > q0:
            whole = q0 % g == 0 and q1 % g == 0
            inside = q0 // g == (q1 - 1) // g
            assert whole or inside, f"rank {r.rank} query heads {r.q_heads} straddle KV groups"
            assert (k0, k1) == (q0 // g, (q1 - 1) // g + 1)
        assert r.memory_bytes.total <= r.budget_bytes
        assert r.ffn[0] % m.ffn_block == 0 and r.ffn[1] % m.ffn_block == 0
        kv_seen.update(range(k0, k1))
    assert kv_seen == set(range(m.kv_heads))
    if not replicated:
        assert sum(r.kv_heads[1] - r.kv_heads[0] for r in ranks) == m.kv_heads


def test_seed_case_asymmetric_fits_and_equal_does_not() -> None:
    req = request(
        SEED_PAIR, config(QWEN3_235B), headroom=0.1, context_tokens=8192, sharding="asymmetric"
    )
    plan = make_plan(req)
    assert plan.status == "optimal" and plan.sharding == "asymmetric"
    assert_valid(plan)
    assert len(plan.ranks) == 2
    assert plan.model is not None and 130e9 < plan.model.weight_bytes < 135e9

    equal = make_plan(
        req.model_copy(
            update={"constraints": req.constraints.model_copy(update={"sharding": "equal"})}
        )
    )
    assert not equal.feasible and equal.status == "infeasible"
    assert any("laptop-48" in r and "GB" in r and "10% headroom" in r for r in equal.reasons)


@pytest.mark.parametrize("count", [3, 5])
def test_odd_clusters_with_eight_kv_heads(count: int) -> None:
    chips = [
        ("ultra", 192, 800),
        ("max", 128, 614),
        ("pro", 64, 273),
        ("m4max", 96, 546),
        ("m2max", 64, 400),
    ]
    nodes = [node(f"{n}-{i}", mem, bw) for i, (n, mem, bw) in enumerate(chips[:count])]
    plan = make_plan(
        request(nodes, config(LLAMA_70B), sharding="asymmetric", allow_unused_nodes=False)
    )
    assert_valid(plan)
    assert len(plan.ranks) == count
    shares = [r.share for r in plan.ranks]
    assert len(set(shares)) > 1, "an asymmetric cluster should get an asymmetric split"


def test_two_kv_heads_on_three_nodes_replicates_kv() -> None:
    nodes = [node("a", 64, 546), node("b", 32, 400), node("c", 24, 273)]
    plan = make_plan(
        request(nodes, qwen35_two_kv(), sharding="asymmetric", allow_unused_nodes=False)
    )
    assert_valid(plan)
    assert len(plan.ranks) == 3
    assert all(r.linear_k_heads is not None for r in plan.ranks)
    equal = make_plan(request(nodes, qwen35_two_kv(), sharding="equal"))
    assert not equal.feasible
    assert any("3 ranks" in r for r in equal.reasons)


def test_kv_heads_are_replicated_when_that_is_faster() -> None:
    # Attention dominates this model. Without copying a KV head one slow node would hold a
    # whole group (6 heads); with it, the fast node takes a group and the slow ones split one.
    model = {
        "model_type": "qwen3",
        "hidden_size": 4096,
        "num_hidden_layers": 8,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "head_dim": 256,
        "intermediate_size": 256,
        "vocab_size": 1024,
        "tie_word_embeddings": True,
    }
    nodes = [node("fast", 64, 800), node("slow-1", 64, 400), node("slow-2", 64, 400)]
    plan = make_plan(
        request(nodes, model, sharding="asymmetric", overhead_bytes=0, allow_unused_nodes=False)
    )
    assert_valid(plan)
    assert len(plan.ranks) == 3
    assert sum(r.kv_heads[1] - r.kv_heads[0] for r in plan.ranks) == 3  # one KV head copied
    heads = {r.node_id: r.q_heads[1] - r.q_heads[0] for r in plan.ranks}
    assert heads == {"fast": 6, "slow-1": 3, "slow-2": 3}


def test_qwen3_next_hybrid_plan_is_valid() -> None:
    nodes = [node("a", 64, 546), node("b", 48, 273)]
    plan = make_plan(request(nodes, config(QWEN3_NEXT), sharding="asymmetric"))
    assert_valid(plan)
    assert plan.model is not None and plan.model.linear_attention_layers == 36


def test_same_request_same_plan() -> None:
    nodes = [
        node(f"n{i}", m, bw)
        for i, (m, bw) in enumerate([(128, 614), (64, 400), (48, 273), (96, 546)])
    ]
    req = request(nodes, config(LLAMA_70B))
    a, b = make_plan(req), make_plan(req)
    assert a.plan_id == b.plan_id
    assert a.model_dump(exclude={"solver"}) == b.model_dump(exclude={"solver"})


def test_auto_picks_equal_when_it_fits_and_is_no_slower() -> None:
    nodes = [node("a", 128, 800), node("b", 128, 800)]
    plan = make_plan(request(nodes, config(QWEN3_235B), sharding="auto"))
    assert plan.sharding == "equal"
    assert plan.estimates is not None and plan.estimates.equal_split_decode_ms is not None


def test_infeasible_reasons_name_the_numbers() -> None:
    nodes = [node("a", 64, 546), node("b", 48, 273)]
    plan = make_plan(request(nodes, config(QWEN3_235B), context_tokens=8192))
    assert not plan.feasible and plan.status == "infeasible"
    assert plan.reasons[0].startswith("needs ")
    assert "GB" in plan.reasons[0] and "after 10% headroom" in plan.reasons[0]


def test_largest_context_is_reported_when_the_cache_is_what_overflows() -> None:
    # Llama 70B bf16 (~141 GB) on 96 + 64 GB: weights fit, a 128k-token cache does not.
    nodes = [node("a", 96, 400), node("b", 64, 400)]
    plan = make_plan(request(nodes, config(LLAMA_70B), context_tokens=131072, headroom=0.05))
    assert not plan.feasible
    tail = [r for r in plan.reasons if r.startswith("largest context that fits")]
    assert tail, plan.reasons
    tokens = int(tail[0].split(": ")[1].split()[0])
    assert 0 < tokens < 131072
    assert make_plan(
        request(nodes, config(LLAMA_70B), context_tokens=tokens, headroom=0.05)
    ).feasible


def test_nodes_left_out_when_that_is_faster() -> None:
    # A slow, far node adds only all-reduce time: the plan runs without it.
    nodes = [node("big", 192, 800), node("small", 192, 800), node("slow", 16, 100)]
    links = [
        {"a": "big", "b": "small", "kind": "rdma"},
        {"a": "small", "b": "slow", "kind": "ethernet", "latency_us": 500},
    ]
    plan = make_plan(request(nodes, config(QWEN3_235B), links=links))
    assert plan.feasible and "slow" not in plan.ring


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["topology"]["nodes"][0].update(memory_bytes=-5), "memory_bytes"),
        (lambda d: d["topology"]["nodes"][1].update(id="m5-max"), "duplicate node id"),
        (lambda d: d["topology"]["links"].append({"a": "m5-max", "b": "ghost"}), "ghost"),
        (lambda d: d["model"].update(model_type="gpt2"), "model_type"),
        (lambda d: d["model"].update(num_attention_heads=0), "num_attention_heads"),
        (lambda d: d["topology"].update(links=[]), "not all connected"),
        (lambda d: d["topology"]["nodes"][0].update(bandwidth_gbps=float("nan")), "bandwidth"),
    ],
)
def test_bad_input_names_the_field(mutate, where) -> None:  # type: ignore[no-untyped-def]
    data = request(SEED_PAIR, config(QWEN3_235B)).model_dump(mode="json")
    mutate(data)
    with pytest.raises(ValidationError) as err:
        type(request(SEED_PAIR, config(QWEN3_235B))).model_validate(data)
    assert where in str(err.value)


def test_unknown_model_type_lists_supported() -> None:
    with pytest.raises(ValidationError) as err:
        request(SEED_PAIR, {"model_type": "mamba"})
    assert "llama, qwen3, qwen3_moe, qwen3_next" in str(err.value)


def test_a_pair_on_a_thunderbolt_ring_is_a_pair_of_neighbours() -> None:
    # Four identical Macs on an Ethernet switch, cabled in a Thunderbolt ring that does not
    # follow their names: n0 and n1 are not neighbours, so the pair must be chosen by the
    # ring, not by name (identical hardware is not enough to make two nodes interchangeable).
    ids = ["n0", "n1", "n2", "n3"]
    nodes = [node(i, 128, 614) for i in ids]
    ring = [("n0", "n2"), ("n2", "n1"), ("n1", "n3"), ("n3", "n0")]
    links = [{"a": a, "b": b, "kind": "ethernet"} for i, a in enumerate(ids) for b in ids[i + 1 :]]
    links += [{"a": a, "b": b, "kind": "thunderbolt"} for a, b in ring]
    plan = make_plan(request(nodes, config(QWEN3_235B), links=links, sharding="asymmetric"))
    assert_valid(plan)
    assert len(plan.ring) == 2
    assert tuple(plan.ring) in ring or tuple(reversed(plan.ring)) in ring


def test_compute_time_is_near_the_fluid_bound_of_the_nodes_used() -> None:
    nodes = [node("ultra", 192, 800), node("max", 128, 614), node("m4max", 128, 546)]
    plan = make_plan(request(nodes, config(LLAMA_70B), sharding="asymmetric"))
    assert plan.estimates is not None and plan.estimates.fluid_bound_used_ms is not None
    e = plan.estimates
    assert e.fluid_bound_ms <= e.fluid_bound_used_ms <= e.compute_ms
    assert e.compute_ms <= 1.03 * e.fluid_bound_used_ms


@pytest.mark.parametrize("model", [QWEN3_235B, LLAMA_70B, QWEN3_NEXT])
def test_eight_mixed_macs_are_solved_to_optimality_well_within_a_second(model: str) -> None:
    # An RDMA mesh of eight mixed Macs: more nodes than KV heads for two of the models.
    macs = [(512, 819), (192, 800), (192, 800), (128, 614), (128, 546), (64, 273), (48, 400)]
    nodes = [node(f"n{i}", m, bw) for i, (m, bw) in enumerate([*macs, (36, 410)])]
    plan = make_plan(request(nodes, config(model), sharding="asymmetric", time_limit_s=1.0))
    assert plan.status == "optimal" and not plan.solver.time_limited
    assert_valid(plan)
