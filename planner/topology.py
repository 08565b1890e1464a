"""The cluster as a graph: effective links between any two nodes and a ring order over them.

Two nodes without a direct link talk over the cheapest path (its latencies add up, its
slowest hop sets the bandwidth). The ring visits the used nodes so that its slowest hop is as
fast as possible: RDMA before Thunderbolt before Ethernet, as their latencies say.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import networkx as nx

from planner.schema import Link, Topology

# Per-kind defaults, used where a link leaves latency or bandwidth out.
LINK_DEFAULTS: dict[str, tuple[float, float]] = {
    # kind: (latency_us, bandwidth Gb/s)
    "rdma": (5.0, 80.0),
    "thunderbolt": (50.0, 40.0),
    "ethernet": (100.0, 10.0),
}
EXACT_RING_MAX_NODES = 8  # brute-force the ring below this; 7! orders are cheap


@dataclass(frozen=True)
class Hop:
    latency_us: float
    bandwidth_gbps: float
    kind: str

    def cost_us(self, message_bytes: int) -> float:
        """Time for one message over this hop."""
        return self.latency_us + message_bytes * 8 / (self.bandwidth_gbps * 1e3)


def link_latency(link: Link) -> float:
    return link.latency_us if link.latency_us is not None else LINK_DEFAULTS[link.kind][0]


def link_bandwidth(link: Link) -> float:
    return link.bandwidth_gbps if link.bandwidth_gbps is not None else LINK_DEFAULTS[link.kind][1]


def components(topology: Topology) -> list[set[str]]:
    g = nx.Graph()
    g.add_nodes_from(n.id for n in topology.nodes)
    g.add_edges_from((link.a, link.b) for link in topology.links)
    return [set(c) for c in sorted(nx.connected_components(g), key=lambda c: sorted(c))]


def effective_hops(topology: Topology, message_bytes: int) -> dict[tuple[str, str], Hop]:
    """Best hop between every connected pair (both orders), direct or routed."""
    g = nx.Graph()
    g.add_nodes_from(n.id for n in topology.nodes)
    for link in topology.links:
        hop = Hop(link_latency(link), link_bandwidth(link), link.kind)
        old = g.get_edge_data(link.a, link.b)
        if old is None or hop.cost_us(message_bytes) < old["hop"].cost_us(message_bytes):
            g.add_edge(link.a, link.b, hop=hop, cost=hop.cost_us(message_bytes))
    hops: dict[tuple[str, str], Hop] = {}
    paths = dict(nx.all_pairs_dijkstra_path(g, weight="cost"))
    for a, targets in paths.items():
        for b, path in targets.items():
            if a == b:
                continue
            edges = [g.edges[u, v]["hop"] for u, v in itertools.pairwise(path)]
            slowest = min(edges, key=lambda h: h.bandwidth_gbps)
            kind = max(edges, key=lambda h: h.cost_us(message_bytes)).kind
            hops[(a, b)] = Hop(
                latency_us=sum(h.latency_us for h in edges),
                bandwidth_gbps=slowest.bandwidth_gbps,
                kind=kind,
            )
    return hops


def ring_order(
    node_ids: list[str], hops: dict[tuple[str, str], Hop], message_bytes: int
) -> list[str]:
    """A cycle over `node_ids` minimising its slowest hop, then its total; deterministic."""
    if len(node_ids) <= 2:
        return list(node_ids)

    def key(order: tuple[str, ...]) -> tuple[float, float]:
        costs = [hops[(a, b)].cost_us(message_bytes) for a, b in zip(order, order[1:] + order[:1])]
        return max(costs), sum(costs)

    first, rest = node_ids[0], node_ids[1:]
    if len(node_ids) <= EXACT_RING_MAX_NODES:
        best = min(((first, *p) for p in itertools.permutations(rest)), key=key)
        return list(best)
    g = nx.Graph()
    for a, b in itertools.combinations(node_ids, 2):
        g.add_edge(a, b, weight=hops[(a, b)].cost_us(message_bytes))
    cycle = nx.approximation.traveling_salesman_problem(g, cycle=True, weight="weight")
    order = list(dict.fromkeys(cycle))
    start = order.index(first)
    return order[start:] + order[:start]


def ring_hops(order: list[str], hops: dict[tuple[str, str], Hop]) -> list[Hop]:
    if len(order) < 2:
        return []
    if len(order) == 2:
        return [hops[(order[0], order[1])]]
    return [hops[(a, b)] for a, b in zip(order, order[1:] + order[:1])]


def allreduce_us(k: int, hop: Hop, message_bytes: int) -> float:
    """One ring all-reduce of `message_bytes` over k ranks whose slowest hop is `hop`.

    Reduce-scatter then all-gather: 2(k-1) steps, each moving a 1/k chunk.
    """
    if k < 2:
        return 0.0
    chunk = -(-message_bytes // k)
    return 2 * (k - 1) * hop.cost_us(chunk)
