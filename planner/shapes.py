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
    ring_ps: int | None = None
    """The all-reduce of every ring of the shape, when all cost the same: every pair of the
    pool joined within `level`, all RDMA links or none (one backend), and the hops of `level`
    all priced alike, the dearest (a ring of cheaper hops only belongs to a lower level and is
    priced there). No circuit needed."""


@dataclass(frozen=True)
class _Block:
    """A biconnected block of the hops within a level: what its shapes need, for every k."""

    pool: list[NodeInput]
    cycle: bool
    """The block is one cycle: it holds only rings of its own size."""
    top: set[int]
    """Distinct hops (`RingPricing.hop_id`) of the level itself inside the block."""
    within: set[int]
    """Distinct hops within the level inside the block."""
    complete: bool
    """Every pair of the block is joined within the level."""
    one_backend: bool
    """Every ring in the block runs the same backend: all its pairs are RDMA links, or none."""


def shapes(p: Problem, able: list[NodeInput]) -> list[Shape]:
    """Every shape worth a model, in increasing lower bound. One node is a shape of its own
    (alike ones once), a pair too (at its own level); for k ≥ 3 each biconnected block of the
    graph of hops within a level is a pool (a ring lies inside one block; a block that is just
    a cycle holds only rings of its own size), and the ring must take a hop of that level."""
    out = _single_and_pair_shapes(p, able)
    present = sorted({p.pair_level[a.id, b.id] for a in able for b in able if a is not b})
    counts = range(3, len(able) + 1) if p.allow_unused else range(len(able), len(able) + 1)
    for level in present:
        for block in _blocks(p, able, level):
            for k in counts:
                if k > len(block.pool) or (block.cycle and k != len(block.pool)):
                    continue
                if k > 2 and block.top and memory_allows(p, k, block.pool):
                    out.append(_block_shape(p, k, level, block))
    smallest = smallest_node(p).id
    return sorted(
        out,
        key=lambda s: (s.bound_ps, s.k, s.level, any(n.id == smallest for n in s.pool)),
    )


def _blocks(p: Problem, able: list[NodeInput], level: int) -> list[_Block]:
    """The biconnected blocks of 3 nodes or more of the graph of hops within `level`."""
    g = nx.Graph()
    g.add_edges_from(
        (a.id, b.id)
        for i, a in enumerate(able)
        for b in able[i + 1 :]
        if p.pair_level[a.id, b.id] <= level
    )
    out = []
    hop_id = p.ring.hop_id
    for block in nx.biconnected_components(g):
        if len(block) < 3:
            continue
        edges = list(g.subgraph(block).edges)
        pool = [n for n in able if n.id in block]
        top = {hop_id[a, b] for a, b in edges if p.pair_level[a, b] == level}
        within = {hop_id[a, b] for a, b in edges}
        complete = len(edges) == len(pool) * (len(pool) - 1) // 2
        rdma = {(a.id, b.id) in p.ring.rdma for i, a in enumerate(pool) for b in pool[i + 1 :]}
        out.append(_Block(pool, len(edges) == len(pool), top, within, complete, len(rdma) == 1))
    return out


def _block_shape(p: Problem, k: int, level: int, block: _Block) -> Shape:
    """k nodes of the block with a ring whose dearest hop is of `level`."""
    price = p.ring.table(k)
    cheapest = min(price[h] for h in block.top)
    dearest = max(price[h] for h in block.within)
    same = block.complete and block.one_backend and dearest == cheapest
    uniform = cheapest if same else None
    lower = fluid_time_ps(p, k, block.pool)
    return Shape(k, level, block.pool, lower, lower + cheapest, uniform)


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
            out.append(Shape(k, level, group, lower, lower + comm, comm))
    return out
