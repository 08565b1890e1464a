"""The cluster as a graph: effective links between any two nodes and a ring order over them.

Two nodes without a direct link talk over the cheapest path (its latencies add up, its
slowest hop sets the bandwidth). The ring visits the used nodes so that its slowest hop is as
fast as possible: RDMA before Thunderbolt before Ethernet, as their latencies say.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import networkx as nx

from planner.calibration import LINK_DEFAULTS, LinkType, uniform_ring_allreduce_us
from protocol.schema import Link, Topology

EXACT_RING_MAX_NODES = 8  # brute-force the ring below this; 7! orders are cheap


@dataclass(frozen=True)
class Hop:
    latency_us: float
    bandwidth_gbps: float
    kind: str
    routed: bool = False
    """Over more than one link: JACCL cannot use it, whatever the links' kinds."""

    def cost_us(self, message_bytes: int) -> float:
        """Time for one message over this hop."""
        return self.latency_us + message_bytes * 8 / (self.bandwidth_gbps * 1e3)


def link_latency(link: Link) -> float:
    """The link's own figure, else its kind's default (`planner.calibration.LINK_DEFAULTS`)."""
    if link.latency_us is not None:
        return link.latency_us
    return LINK_DEFAULTS[LinkType(link.kind)].latency_us


def link_bandwidth(link: Link) -> float:
    if link.bandwidth_gbps is not None:
        return link.bandwidth_gbps
    return LINK_DEFAULTS[LinkType(link.kind)].bandwidth_gbps


def effective_hops(topology: Topology, message_bytes: int) -> dict[tuple[str, str], Hop]:
    """Best hop between every connected pair (both orders), direct or routed.

    Dijkstra from every node over the cheapest link between each pair, in the order
    networkx's does it (first-found predecessor on ties), without its per-call overhead.
    """
    adj: dict[str, dict[str, tuple[Hop, float]]] = {n.id: {} for n in topology.nodes}
    for link in topology.links:
        hop = Hop(link_latency(link), link_bandwidth(link), link.kind)
        cost = hop.cost_us(message_bytes)
        old = adj[link.a].get(link.b)
        if old is None or cost < old[1]:
            adj[link.a][link.b] = (hop, cost)
            adj[link.b][link.a] = (hop, cost)
    hops: dict[tuple[str, str], Hop] = {}
    for source in adj:
        for target, edges in _shortest_paths(adj, source).items():
            slowest = min(edges, key=lambda h: h.bandwidth_gbps)
            kind = max(edges, key=lambda h: h.cost_us(message_bytes)).kind
            hops[(source, target)] = Hop(
                latency_us=sum(h.latency_us for h in edges),
                bandwidth_gbps=slowest.bandwidth_gbps,
                kind=kind,
                routed=len(edges) > 1,
            )
    return hops


def _shortest_paths(
    adj: dict[str, dict[str, tuple[Hop, float]]], source: str
) -> dict[str, list[Hop]]:
    """The hops along the cheapest path from `source` to every other reachable node."""
    dist: dict[str, float] = {}
    seen = {source: 0.0}
    pred: dict[str, str] = {}
    order = itertools.count()
    fringe: list[tuple[float, int, str]] = [(0.0, next(order), source)]
    while fringe:
        d, _, v = heapq.heappop(fringe)
        if v in dist:
            continue
        dist[v] = d
        for u, (_, cost) in adj[v].items():
            du = d + cost
            if u not in dist and (u not in seen or du < seen[u]):
                seen[u] = du
                heapq.heappush(fringe, (du, next(order), u))
                pred[u] = v
    paths: dict[str, list[Hop]] = {}
    for v in dist:  # in increasing distance: a node's predecessor comes first
        if v != source:
            p = pred[v]
            paths[v] = [*paths.get(p, []), adj[p][v][0]]
    return paths


def ring_order(
    node_ids: list[str], hops: dict[tuple[str, str], Hop], message_bytes: int
) -> list[str]:
    """A cycle over `node_ids` minimising its slowest hop, then its total; deterministic.

    Up to EXACT_RING_MAX_NODES nodes the answer is exact: the first such cycle in
    `itertools.permutations` order, found by a depth-first search in that order that drops
    a branch once its bound (slowest hop so far, total so far plus the cheapest hop for every
    hop left) cannot beat the best cycle found.
    """
    if len(node_ids) <= 2:
        return list(node_ids)
    n = len(node_ids)
    cost = [
        [hops[(a, b)].cost_us(message_bytes) if a != b else 0.0 for b in node_ids] for a in node_ids
    ]
    if n <= EXACT_RING_MAX_NODES:
        return [node_ids[i] for i in _best_cycle(cost)]
    g = nx.Graph()
    for a, b in itertools.combinations(node_ids, 2):
        g.add_edge(a, b, weight=hops[(a, b)].cost_us(message_bytes))
    cycle = nx.approximation.traveling_salesman_problem(g, cycle=True, weight="weight")
    order = list(dict.fromkeys(cycle))
    start = order.index(node_ids[0])
    return order[start:] + order[:start]


def _best_cycle(cost: list[list[float]]) -> list[int]:
    """Exact (slowest hop, total) minimum over cycles starting at node 0; ties go to the
    first in `itertools.permutations` order. Sums add hops in cycle order, as a plain sum
    of the cycle's hops would, so the comparison is the same to the last bit."""
    n = len(cost)
    cheapest = min(cost[a][b] for a in range(n) for b in range(n) if a != b)
    # Every node still to leave needs one hop out: its cheapest bounds the slowest hop.
    out_min = [min(cost[a][b] for b in range(n) if b != a) for a in range(n)]
    best_key = (float("inf"), float("inf"))
    best: list[int] = []
    path = [0]
    left = list(range(1, n))

    def visit(worst: float, total: float) -> None:
        nonlocal best_key, best
        here = path[-1]
        if not left:
            close = cost[here][0]
            key = (max(worst, close), total + close)
            if key < best_key:
                best_key, best = key, list(path)
            return
        bound_worst = max(worst, out_min[here], *(out_min[v] for v in left))
        bound_total = total
        for _ in range(len(left) + 1):
            bound_total += cheapest
        if (bound_worst, bound_total) >= best_key:
            return
        for i, v in enumerate(list(left)):
            step = cost[here][v]
            path.append(v)
            left.pop(i)
            visit(max(worst, step), total + step)
            left.insert(i, v)
            path.pop()

    visit(0.0, 0.0)
    return best


def ring_hops(order: list[str], hops: dict[tuple[str, str], Hop]) -> list[Hop]:
    if len(order) < 2:
        return []
    if len(order) == 2:
        return [hops[(order[0], order[1])]]
    return [hops[(a, b)] for a, b in zip(order, order[1:] + order[:1])]


def allreduce_us(k: int, hop: Hop, message_bytes: int) -> float:
    """One all-reduce of `message_bytes` over k ranks whose every ring hop is like `hop` (the
    ring's dearest); `planner.calibration.ring_allreduce_us` prices a ring of mixed hops."""
    return uniform_ring_allreduce_us(k, hop, message_bytes)
