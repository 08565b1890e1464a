"""The baseline layouts of the layouts bench are the layouts they claim to be, and the bench's
capacity figure is the plan's own arithmetic."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from staged_plans import single_stage_plan

from bench.layout_clusters import (
    CLUSTERS,
    equal_tensor,
    even_layers,
    even_pipeline,
    memory_pipeline,
    proportional_layers,
)
from bench.layouts import context_held
from planner.layouts import LayoutSplit


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.lists(st.integers(1, 512), min_size=1, max_size=64))
def test_proportional_layers_partition_the_model(total: int, memory: list[int]) -> None:
    if len(memory) > total:
        memory = memory[:total]
    counts = proportional_layers(total, [float(m) for m in memory])
    assert sum(counts) == total and min(counts) >= 1
    # Largest remainder: where every share is at least one layer, none is a layer off.
    shares = [total * m / sum(memory) for m in memory]
    if min(shares) >= 1:
        assert all(abs(c - x) < 1 for c, x in zip(counts, shares)), (counts, shares)


def test_baselines_cover_every_node_in_chain_order() -> None:
    ring = next(c for c in CLUSTERS if c.name == "TB ring ×8")
    even = even_pipeline(ring, 94)
    assert [s.nodes[0] for s in even] == ring.ids()
    assert [s.layers for s in even] == even_layers(94, 8) == [12] * 6 + [11] * 2
    memory = memory_pipeline(ring, 94)
    assert sum(s.layers for s in memory) == 94
    assert (
        memory[0].layers > memory[2].layers > memory[1].layers > memory[3].layers
    )  # 128 > 96 > 64 > 48 GB
    (tensor,) = equal_tensor(ring, 94)
    assert tensor.nodes == tuple(ring.ids()) and tensor.split is LayoutSplit.EQUAL


def test_context_held_is_each_ranks_free_budget_over_its_cache_per_token() -> None:
    plan = single_stage_plan()
    held = context_held(plan, 8192, 1 << 30)
    # Ranks without attention heads hold no cache: the ranks with heads decide.
    room = [
        8192 + (r.budget_bytes - r.memory_bytes.total) // (r.memory_bytes.kv_cache / 8192)
        for r in plan.ranks
        if r.memory_bytes.kv_cache > 0
    ]
    assert room and held == int(min(room))
    assert context_held(plan, 8192, 10_000) == 10_000
