"""Cheap layouts the layout search prices before its exhaustive part: the layouts other tools
use, so that a time-limited `auto` or `pipeline` returns at worst the best of them.

Seeds, each a list of `StageLayout` in pipeline order:

* the **even pipeline** and the **memory-proportional pipeline** (llama.cpp `--tensor-split`,
  exo's pipeline) over every node, in the order of the cluster's cheapest ring, from each
  node of it and in both directions (where stage 0 sits and which way the layers go both
  change the price);
* the same over the **fewest fastest nodes** whose memory holds the model, in the ring's
  order;
* in `auto`, where RDMA links form islands of at most `MAX_RUN` nodes, a **hybrid with each
  island a stage** (nodes outside any island a stage each), layers in proportion to each
  stage's memory.

The search prices every seed with its own prices (`planner.layout_alloc.StagePrices`,
`planner.layout_bounds.Bounds.transfer`), so a seed is a layout like any other: it can only be
found first and tighten the pruning. Seeds change what is found first, never what is proven.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx

from planner.context import PlanningContext
from planner.layout_groups import MAX_RUN
from planner.stages import StageLayout


def even_layers(total: int, parts: int) -> list[int]:
    """`total` layers in `parts` near-equal counts, the first stages taking the remainder."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def proportional_layers(total: int, weights: Sequence[float]) -> list[int]:
    """Layers in proportion to `weights` (largest remainder), each stage at least one:
    llama.cpp's `--tensor-split` over memory, exo's memory-weighted pipeline."""
    share = [total * w / sum(weights) for w in weights]
    counts = [max(1, int(s)) for s in share]
    by_remainder = sorted(range(len(share)), key=lambda i: (counts[i] - share[i], i))
    i = 0
    while sum(counts) < total:
        counts[by_remainder[i % len(counts)]] += 1
        i += 1
    while sum(counts) > total:
        j = max(
            (k for k in range(len(counts)) if counts[k] > 1), key=lambda k: counts[k] - share[k]
        )
        counts[j] -= 1
    return counts


def even_pipeline(ids: Sequence[str], num_layers: int) -> list[StageLayout]:
    """One node per stage in the order of `ids`, equal layers each."""
    return [StageLayout((n,), k) for n, k in zip(ids, even_layers(num_layers, len(ids)))]


def memory_pipeline(
    ids: Sequence[str], memory: Sequence[float], num_layers: int
) -> list[StageLayout]:
    """One node per stage in the order of `ids`, layers in proportion to `memory`."""
    counts = proportional_layers(num_layers, memory)
    return [StageLayout((n,), k) for n, k in zip(ids, counts)]


def _turns(order: list[str]) -> list[list[str]]:
    """The ring `order` read from each of its nodes, both ways round."""
    back = order[::-1]
    return [order[i:] + order[:i] for i in range(len(order))] + [
        back[i:] + back[:i] for i in range(len(back))
    ]


def _memory_gb(ctx: PlanningContext, nodes: Sequence[str]) -> list[float]:
    return [ctx.cluster.nodes[n].memory_bytes / 1e9 for n in nodes]


def _pipelines(ctx: PlanningContext, order: list[str]) -> list[list[StageLayout]]:
    layers = ctx.spec.num_layers
    if len(order) > layers:
        return []
    out = []
    for turn in _turns(order):
        out.append(even_pipeline(turn, layers))
        out.append(memory_pipeline(turn, _memory_gb(ctx, turn), layers))
    return out


def _fewest_fastest(ctx: PlanningContext) -> list[str]:
    """The fewest nodes, fastest first, whose budgets add up to the model's bytes."""
    cluster = ctx.cluster
    ranked = sorted(
        cluster.nodes, key=lambda n: (-cluster.nodes[n].bandwidth_gbps, -cluster.budgets[n], n)
    )
    need = ctx.costs.sharded_held + ctx.costs.replicated_held
    taken: list[str] = []
    for n in ranked:
        taken.append(n)
        if sum(cluster.budgets[m] - ctx.request.constraints.overhead_bytes for m in taken) >= need:
            return taken
    return []


def _islands(ctx: PlanningContext, order: list[str]) -> list[list[str]]:
    """Stages of a hybrid: each connected set of RDMA links one stage, every other node one,
    in the order their first node has in `order`; empty when there is no island."""
    graph = nx.Graph()
    graph.add_nodes_from(order)
    graph.add_edges_from(tuple(pair) for pair in ctx.cluster.pricing.rdma_pairs)
    at = {n: i for i, n in enumerate(order)}
    parts = sorted(
        (sorted(c, key=at.__getitem__) for c in nx.connected_components(graph)),
        key=lambda c: at[c[0]],
    )
    if all(len(p) == 1 for p in parts) or len(parts) < 2:
        return []
    return parts


def seed_layouts(ctx: PlanningContext, order: list[str], pipeline: bool) -> list[list[StageLayout]]:
    """The seeds of the module docstring; `order` is the cluster's cheapest ring."""
    seeds = _pipelines(ctx, order)
    fastest = _fewest_fastest(ctx)
    allow_unused = ctx.request.constraints.allow_unused_nodes
    if fastest and len(fastest) < len(order) and allow_unused:
        # In the ring's order: a pipeline pays the sum of its sends, not the dearest.
        seeds += _pipelines(ctx, [n for n in order if n in fastest])
    islands = [] if pipeline else _islands(ctx, order)
    # A stage of more than MAX_RUN nodes is beyond what the search tries, and its solve can
    # take the whole time limit.
    if len(islands) <= ctx.spec.num_layers and all(len(p) <= MAX_RUN for p in islands):
        for s in range(len(islands)):
            turn = islands[s:] + islands[:s]
            memory = [sum(_memory_gb(ctx, p)) for p in turn]
            counts = proportional_layers(ctx.spec.num_layers, memory)
            seeds.append([StageLayout(tuple(p), k) for p, k in zip(turn, counts)])
    return seeds
