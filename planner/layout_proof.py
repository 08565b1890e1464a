"""A lower bound on every layout of two stages or more (one or more in `pipeline`), over the
whole space of the mode and not only the groups the search enumerates: what lets a search over
a restricted family still prove its plan optimal.

Per layer, any stage over k nodes costs at least the layer's bytes read by its k ranks (the
sharded ones once, the replicated ones k times) at the k fastest nodes' summed bandwidth, its
fixed time, and two all-reduces over the cheapest hop any ring of k could have (0 for k = 1);
stage 0 reads the embeddings and output head at the fastest node's bandwidth at best; and S
stages make S transfers, each no cheaper than the cheapest send between two nodes. In
`pipeline` every stage is one node: layers go to the nodes of least cost per layer, as many as
each node's memory holds.
"""

from __future__ import annotations

import math
from collections import Counter

from planner.calibration import (
    SYNC_US,
    effective_bandwidth_gbps,
    fixed_us,
    hop_step_us,
    uniform_ring_allreduce_us,
)
from planner.layout_bounds import Bounds
from planner.problem import PS_PER_NS
from planner.ring import PS_PER_US

BOUND_SLACK = 1e-9  # relative, against floating-point sums


def _ring_floor_ps(bounds: Bounds, k: int, reach: list[Counter[int]]) -> float:
    """Two all-reduces of a layer over the cheapest ring of k nodes there could be: a pair's
    ring is its one hop; in a ring of k ≥ 3 every node has two ring neighbours, so its dearest
    hop is no cheaper than any of its nodes' second-cheapest hop, hence than the k-th least of
    those over all nodes (`reach`: each node's hops to the others, by `RingPricing.hop_id`)."""
    if k < 2:
        return 0.0
    pricing = bounds.ctx.cluster.pricing
    price = [uniform_ring_allreduce_us(k, h, pricing.message_bytes, b) for h, b in pricing.distinct]
    if k == 2:
        return 2 * min(price) * PS_PER_US
    seconds = []
    for hops in reach:
        cheapest = sorted((price[h], count) for h, count in hops.items())
        seconds.append(cheapest[0][0] if cheapest[0][1] > 1 else cheapest[1][0])
    return 2 * sorted(seconds)[k - 1] * PS_PER_US


def _reach(bounds: Bounds) -> list[Counter[int]]:
    cluster = bounds.ctx.cluster
    hop_id = cluster.pricing.hop_id
    ids = sorted(cluster.nodes)
    return [Counter(hop_id[a, b] for b in ids if b != a) for a in ids]


def _tensor_floor(bounds: Bounds) -> float:
    """Σ over layers of the least that layer can cost on any group of any size (ps)."""
    speeds = sorted(
        (effective_bandwidth_gbps(n.bandwidth_gbps) for n in bounds.ctx.cluster.nodes.values()),
        reverse=True,
    )
    fixed = fixed_us(1) * 1e6
    reach = _reach(bounds) if len(speeds) > 2 else []
    best = [math.inf] * bounds.layers
    for k in range(1, len(speeds) + 1):
        ring = _ring_floor_ps(bounds, k, reach)
        scale = PS_PER_NS / sum(speeds[:k])
        best = [
            min(b, read * scale + fixed + ring) for b, read in zip(best, bounds.per_layer_read(k))
        ]
    return sum(best)


def _pipeline_floor(bounds: Bounds) -> float:
    """Layers on single nodes: the heaviest reads on the fastest nodes, each node taking as
    many layers as its memory could hold of the lightest (reads a_i, node costs b_j per byte:
    pairing them in opposite orders gives the least Σ a_i b_j)."""
    cluster = bounds.ctx.cluster
    reads = sorted(bounds.per_layer_read(1), reverse=True)
    lightest = bounds.lightest
    nodes = sorted(cluster.nodes.values(), key=lambda n: -n.bandwidth_gbps)
    total, at = 0.0, 0
    for node in nodes:
        room = cluster.budgets[node.id] - bounds.overhead
        cap = max(0, room) // lightest
        scale = PS_PER_NS / effective_bandwidth_gbps(node.bandwidth_gbps)
        taken = reads[at : at + cap]
        total += sum(taken) * scale + len(taken) * fixed_us(1) * 1e6
        at += len(taken)
    return math.inf if at < len(reads) else total


def layouts_lower_ps(bounds: Bounds, pipeline: bool, least: int, min_transfer: int) -> float:
    """No layout of the mode with at least `least` stages costs less (see the module)."""
    cluster = bounds.ctx.cluster
    fastest = max(effective_bandwidth_gbps(n.bandwidth_gbps) for n in cluster.nodes.values())
    outer = bounds.outer_read * PS_PER_NS / fastest
    layers = _pipeline_floor(bounds) if pipeline else _tensor_floor(bounds)
    transfers = least * min_transfer if least > 1 else 0
    return (layers + outer) * (1 - BOUND_SLACK) + transfers


def cheapest_send_ps(bounds: Bounds) -> int:
    """No transfer between two stages is cheaper than one send over the cheapest hop."""
    pricing = bounds.ctx.cluster.pricing
    if not pricing.distinct:
        return 0
    send = min(SYNC_US[b] + hop_step_us(h, pricing.message_bytes) for h, b in pricing.distinct)
    return math.floor(send * PS_PER_US)
