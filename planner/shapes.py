"""Plan shapes: how many nodes, from which pool, over a ring of which level.

The solver enumerates shapes in increasing lower bound and gives each a small CP-SAT model;
see `planner.solver` for the formulation.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.problem import NodeInput, Problem, fluid_time_ps, memory_allows, smallest_node


@dataclass(frozen=True)
class Shape:
    """k used nodes with a ring of level at most `level`, drawn from `pool`."""

    k: int
    level: int
    pool: list[NodeInput]
    lower_ps: int
    """Fluid bound on the slowest rank's time: the k fastest of `pool` sharing the bytes."""
    bound_ps: int
    """`lower_ps` plus the all-reduce for k ranks at `level`: no plan of this shape is faster."""


def shapes(p: Problem, able: list[NodeInput]) -> list[Shape]:
    """Every shape worth a model, in increasing lower bound. One node or a pair is a shape of
    its own (alike ones once); for k ≥ 3 the pool at a level holds the nodes with two
    neighbours within it, and a level adding no node and no link to the one below only costs
    more all-reduce and is left out."""
    levels = len(p.comm_ps[0])
    out = _single_and_pairshapes(p, able)
    near = {
        (n.id, lv): sum(1 for m in able if m is not n and p.pair_level[n.id, m.id] <= lv)
        for n in able
        for lv in range(levels)
    }
    # Levels at which some link among the able nodes first appears.
    new_links = {p.pair_level[a.id, b.id] for a in able for b in able if a is not b}
    counts = range(3, len(able) + 1) if p.allow_unused else range(len(able), len(able) + 1)
    for k in counts:
        if k <= 2:
            continue
        for level in range(levels):
            pool = [n for n in able if near[n.id, level] >= 2]
            if level > 0:
                same_pool = len(pool) == sum(1 for n in able if near[n.id, level - 1] >= 2)
                cheaper = p.comm_ps[k - 1][level] < p.comm_ps[k - 1][level - 1]
                if same_pool and level not in new_links and not cheaper:
                    continue
            if len(pool) >= k and memory_allows(p, k, pool):
                lower = fluid_time_ps(p, k, pool)
                out.append(Shape(k, level, pool, lower, lower + p.comm_ps[k - 1][level]))
    smallest = smallest_node(p).id
    return sorted(
        out,
        key=lambda s: (s.bound_ps, s.k, s.level, any(n.id == smallest for n in s.pool)),
    )


def _single_and_pairshapes(p: Problem, able: list[NodeInput]) -> list[Shape]:
    """A shape for every node that holds the model alone and every pair that holds it together,
    the pair at its cheapest level for a two-rank all-reduce; nodes alike in memory and
    bandwidth give one shape (the one without the smallest node, if any)."""
    smallest = smallest_node(p).id
    wanted = [1, 2] if p.allow_unused else [len(able)] if len(able) <= 2 else []
    seen: set[tuple[object, ...]] = set()
    out = []
    for k in wanted:
        groups: list[list[NodeInput]] = []
        if k == 1:
            groups = [[n] for n in able]
        else:
            groups = [[a, b] for i, a in enumerate(able) for b in able[i + 1 :]]
        # Visit groups without the smallest node first, so those are the ones kept.
        groups.sort(key=lambda g: any(n.id == smallest for n in g))
        for group in groups:
            if not memory_allows(p, k, group):
                continue
            level = 0
            if k == 2:
                own = p.pair_level[group[0].id, group[1].id]
                cost = p.comm_ps[1]
                level = min(range(own, len(cost)), key=lambda lv: (cost[lv], lv))
            key = (
                k,
                level,
                tuple(sorted((n.budget, n.bandwidth_gbps) for n in group)),
                any(n.id == smallest for n in group),
            )
            if key in seen:
                continue
            seen.add(key)
            lower = fluid_time_ps(p, k, group)
            out.append(Shape(k, level, group, lower, lower + p.comm_ps[k - 1][level]))
    return out
