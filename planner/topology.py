"""The cluster as a graph: the hops between any two nodes, and what a ring costs.

A TCP ring's neighbours talk over the cheapest path (its latencies add up, its slowest link
sets the bandwidth; an RDMA link carries TCP at `calibration.tcp_latency_us`); a JACCL ring's
neighbours over their direct RDMA link (`rdma_hops`). Which backend a ring runs is the used
nodes' property (`protocol.connectivity.runs_jaccl`), which ring to use is the solver's choice
(`planner.ring`), what it costs is `ring_allreduce_us`, the one pricing of a ring.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from planner.calibration import (
    LINK_DEFAULTS,
    Collective,
    LinkType,
    tcp_latency_us,
    uniform_ring_allreduce_us,
)
from protocol.schema import Link, Topology


@dataclass(frozen=True)
class Hop:
    latency_us: float
    bandwidth_gbps: float
    kind: str
    routed: bool = False
    """Over more than one link (through another Mac's network stack)."""

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


def rdma_hops(topology: Topology, message_bytes: int) -> dict[tuple[str, str], Hop]:
    """JACCL's hop between every pair with a direct RDMA link (both orders): the cheapest such
    link, at its own latency."""
    out: dict[tuple[str, str], Hop] = {}
    for link in topology.links:
        if link.kind != LinkType.RDMA:
            continue
        hop = Hop(link_latency(link), link_bandwidth(link), link.kind)
        old = out.get((link.a, link.b))
        if old is None or hop.cost_us(message_bytes) < old.cost_us(message_bytes):
            out[link.a, link.b] = out[link.b, link.a] = hop
    return out


def effective_hops(topology: Topology, message_bytes: int) -> dict[tuple[str, str], Hop]:
    """A TCP ring's hop between every connected pair (both orders), direct or routed.

    Dijkstra from every node over the cheapest link between each pair (RDMA links at their
    TCP latency), in the order networkx's does it (first-found predecessor on ties), without
    its per-call overhead.
    """
    adj: dict[str, dict[str, tuple[Hop, float]]] = {n.id: {} for n in topology.nodes}
    for link in topology.links:
        latency = tcp_latency_us(link.kind, link_latency(link))
        hop = Hop(latency, link_bandwidth(link), link.kind)
        cost = hop.cost_us(message_bytes)
        old = adj[link.a].get(link.b)
        if old is None or cost < old[1]:
            adj[link.a][link.b] = (hop, cost)
            adj[link.b][link.a] = (hop, cost)
    hops: dict[tuple[str, str], Hop] = {}
    for source in adj:
        for target, hop in _shortest_paths(adj, source).items():
            hops[(source, target)] = hop
    return hops


def _shortest_paths(adj: dict[str, dict[str, tuple[Hop, float]]], source: str) -> dict[str, Hop]:
    """The effective hop along the cheapest path from `source` to every other reachable node:
    latencies added in path order, the slowest link's bandwidth, the kind of the dearest link
    (the first one along the path on ties), built along the shortest-path tree."""
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
    paths: dict[str, Hop] = {}
    dearest: dict[str, float] = {}
    for v in dist:  # in increasing distance: a node's predecessor comes first
        if v == source:
            continue
        p = pred[v]
        link, cost = adj[p][v]
        if p == source:
            paths[v], dearest[v] = link, cost
            continue
        up = paths[p]
        worse = cost > dearest[p]
        paths[v] = Hop(
            latency_us=up.latency_us + link.latency_us,
            bandwidth_gbps=min(up.bandwidth_gbps, link.bandwidth_gbps),
            kind=link.kind if worse else up.kind,
            routed=True,
        )
        dearest[v] = cost if worse else dearest[p]
    return paths


def ring_allreduce_us(hops: list[Hop], message_bytes: int, backend: Collective) -> float:
    """One all-reduce of `message_bytes` over the ring whose hops are `hops` (one per rank),
    run by `backend`.

    This is the only place a ring is priced: the plan, the brute-force tests and the solver
    all call it. The solver relies on its shape: under one backend a ring costs the most that
    any of its hops would cost in a ring of the same size made of that hop alone, i.e.
    `ring_allreduce_us(hops, b) == max(ring_allreduce_us([h] * len(hops), b) for h in hops)`,
    which lets CP-SAT price each arc on its own and take the maximum over the chosen ones;
    `allreduce_us(k, h)` is that uniform ring's price (the solver's tables call it directly).
    """
    k = len(hops)
    return max((allreduce_us(k, h, message_bytes, backend) for h in hops), default=0.0)


def allreduce_us(k: int, hop: Hop, message_bytes: int, backend: Collective) -> float:
    """One all-reduce of `message_bytes` over k ranks whose every ring hop is like `hop`:
    `planner.calibration.uniform_ring_allreduce_us`, where every constant of it lives."""
    return uniform_ring_allreduce_us(k, hop, message_bytes, backend)
