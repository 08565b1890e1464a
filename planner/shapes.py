"""Plan shapes: how many nodes, from which pool, over a ring whose dearest hop is of which level.

The solver enumerates shapes in increasing lower bound and gives each a small CP-SAT model;
see `planner.solver` for the formulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from planner.problem import NodeInput, Problem, fluid_time_ps, memory_allows, smallest_node


@dataclass(frozen=True)
class Shape:
    """k used nodes with a ring whose dearest hop is of `level`, drawn from `pool`."""

    k: int
    level: int
    pool: list[NodeInput]
    lower_ps: int
    """Fluid bound on the slowest rank's time: the k fastest of `pool` sharing the bytes."""
    bound_ps: int
    """`lower_ps` plus the cheapest all-reduce of k ranks over a hop of `level`: no plan of
    this shape is faster."""


def shapes(p: Problem, able: list[NodeInput]) -> list[Shape]:
    """Every shape worth a model, in increasing lower bound. One node is a shape of its own
    (alike ones once), a pair too (at its own level); for k ≥ 3 the pool at a level holds the
    nodes with two neighbours within it, and the ring must take a hop of that level."""
    out = _single_and_pair_shapes(p, able)
    present = sorted({p.pair_level[a.id, b.id] for a in able for b in able if a is not b})
    blocks = {level: _blocks(p, able, level) for level in present}
    counts = range(3, len(able) + 1) if p.allow_unused else range(len(able), len(able) + 1)
    for k in counts:
        if k <= 2:
            continue
        for level in present:
            fit = [b for b, cycle in blocks[level] if len(b) == k or (len(b) > k and not cycle)]
            inside = set().union(*fit)
            pool = [n for n in able if n.id in inside]
            if len(pool) < k or not memory_allows(p, k, pool):
                continue
            cheapest = _cheapest_arc_ps(p, k, level, pool)
            if cheapest is None:
                continue
            lower = fluid_time_ps(p, k, pool)
            out.append(Shape(k, level, pool, lower, lower + cheapest))
    smallest = smallest_node(p).id
    return sorted(
        out,
        key=lambda s: (s.bound_ps, s.k, s.level, any(n.id == smallest for n in s.pool)),
    )


def _blocks(p: Problem, able: list[NodeInput], level: int) -> list[tuple[set[str], bool]]:
    """The biconnected blocks of the graph of hops within `level` (with whether each is just
    a cycle): a ring lies inside one block, and a block that is a cycle holds only itself."""
    g = nx.Graph()
    g.add_edges_from(
        (a.id, b.id)
        for i, a in enumerate(able)
        for b in able[i + 1 :]
        if p.pair_level[a.id, b.id] <= level
    )
    out = []
    for block in nx.biconnected_components(g):
        if len(block) >= 3:
            out.append((set(block), g.subgraph(block).number_of_edges() == len(block)))
    return out


def _cheapest_arc_ps(p: Problem, k: int, level: int, pool: list[NodeInput]) -> int | None:
    """The cheapest price for k ranks of a hop of exactly `level` inside `pool`."""
    ids = [n.id for n in pool]
    hops = {p.ring.hops[a, b] for a in ids for b in ids if a < b and p.pair_level[a, b] == level}
    return min((p.ring.hops_ps([h] * k) for h in hops), default=None)


def _single_and_pair_shapes(p: Problem, able: list[NodeInput]) -> list[Shape]:
    """A shape for every node that holds the model alone and every pair that holds it together;
    nodes alike in memory and bandwidth give one shape (the one without the smallest node)."""
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
            ids = [n.id for n in group]
            level = p.pair_level[ids[0], ids[1]] if k == 2 else 0
            comm = p.ring.ring_ps(ids)
            key = (
                k,
                comm,
                tuple(sorted((n.budget, n.bandwidth_gbps) for n in group)),
                any(n.id == smallest for n in group),
            )
            if key in seen:
                continue
            seen.add(key)
            lower = fluid_time_ps(p, k, group)
            out.append(Shape(k, level, group, lower, lower + comm))
    return out
