"""The planning problem as the solver sees it: nodes, per-unit costs, the cluster's priced
hops, and what a plan is; `problem_for` builds it.

Times are integer picoseconds per decode token; bytes are integers. Every coefficient the
CP-SAT model uses is computed here, in `planner.costs` or in `planner.ring`, never inside the
model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from planner.calibration import effective_bandwidth_gbps, fixed_us, peak_bandwidth_gbps
from planner.costs import SHARDED, Unit, UnitCosts
from planner.ring import RingPricing, best_ring
from planner.topology import Hop, effective_hops, rdma_hops
from protocol.measurements import FigureSource
from protocol.model_spec import ModelSpec
from protocol.schema import Node, PlanRequest

PS_PER_NS = 1000
MAX_HOP_LEVELS = 8  # more distinct link prices than this share the last level (pricing is exact)


@dataclass(frozen=True)
class NodeInput:
    id: str
    budget: int
    bandwidth_gbps: float
    level: int
    """Index into the all-reduce level table of this node's slowest ring hop."""


@dataclass(frozen=True)
class Problem:
    nodes: list[NodeInput]
    costs: UnitCosts
    q_per_kv: int
    overhead_bytes: int
    ring: RingPricing
    pair_level: dict[tuple[str, str], int]
    """Hop level between two nodes (both orders), levels ascending in cost."""
    levels: int
    fixed_ps: int = 0
    """Per token, every used rank alike whatever its share (`planner.calibration.fixed_us`)."""
    allow_unused: bool = True
    time_limit_s: float = 10.0
    feasibility_only: bool = False
    polish: bool = True
    """Among equally fast splits, keep the most memory free on the smallest node (a search
    that only needs the price skips it)."""


@dataclass(frozen=True)
class NodeShare:
    """What one node holds: whole KV groups (G query heads with their KV head each), or part of
    one (`partial_slot`, the split group it shares, with `partial_q` of its query heads and the
    KV head copied), and any number of each SHARDED unit."""

    node_id: str
    kv_groups: int = 0
    partial_slot: int | None = None
    partial_q: int = 0
    sharded: Mapping[Unit, int] = field(default_factory=dict)
    q_per_kv: int = 1

    def counts(self) -> dict[Unit, int]:
        """Units held, in the one vocabulary of costs and plans."""
        q = self.q_per_kv * self.kv_groups + self.partial_q
        kv = self.kv_groups + (1 if self.partial_slot is not None else 0)
        return {Unit.Q_HEAD: q, Unit.KV_HEAD: kv, **{u: self.sharded.get(u, 0) for u in SHARDED}}


@dataclass
class Solution:
    status: str  # optimal | feasible | infeasible
    shares: list[NodeShare] = field(default_factory=list)
    ring: list[str] = field(default_factory=list)
    """The used nodes in ring order, rank 0 first (empty for feasibility only)."""
    objective_ps: int | None = None
    bound_ps: int | None = None
    wall_ms: float = 0.0
    time_limited: bool = False


def time_coefficient(bytes_per_token: float, bandwidth_gbps: float) -> int:
    """Picoseconds to read `bytes_per_token` on a node of peak bandwidth `bandwidth_gbps` GB/s, at
    the share of it decode achieves (`planner.calibration`; rounded up)."""
    return math.ceil(bytes_per_token * PS_PER_NS / effective_bandwidth_gbps(bandwidth_gbps))


def base_time_ps(p: Problem, bandwidth_gbps: float) -> int:
    """What a used rank pays whatever its share: the replicated reads and the fixed time."""
    return time_coefficient(p.costs.replicated_read, bandwidth_gbps) + p.fixed_ps


def budget_bytes(node: Node, headroom: float) -> int:
    """What a node offers the plan: its usable memory less the headroom."""
    return int(node.usable_bytes * (1 - headroom))


def fixed_bytes(p: Problem) -> int:
    return p.costs.replicated_held + p.overhead_bytes


def able_nodes(p: Problem) -> list[NodeInput]:
    """Nodes whose budget holds what every rank keeps whole; no other node can be used."""
    return [n for n in p.nodes if n.budget >= fixed_bytes(p)]


def fluid_time_ps(p: Problem, k: int, nodes: list[NodeInput] | None = None) -> int:
    """No plan on k of `nodes` reads its bytes faster than the k fastest sharing them perfectly
    (rounded down, and one picosecond less against floating-point error)."""
    pool = p.nodes if nodes is None else nodes
    bandwidth = effective_bandwidth_gbps(
        sum(sorted((n.bandwidth_gbps for n in pool), reverse=True)[:k])
    )
    read = p.costs.sharded_read + k * p.costs.replicated_read
    return max(math.floor(read * PS_PER_NS / bandwidth) - 1, 0) + p.fixed_ps


def memory_allows(p: Problem, k: int, nodes: list[NodeInput]) -> bool:
    """Could any k of `nodes` hold the model at all (the k largest budgets, fluidly)?"""
    top = sorted((n.budget for n in nodes), reverse=True)[:k]
    return sum(top) - k * fixed_bytes(p) >= p.costs.sharded_held


def first_rank(nodes: list[NodeInput]) -> str:
    """Rank 0 serves requests: the used node with the most memory, then bandwidth, then id."""
    return max(nodes, key=lambda n: (n.budget, n.bandwidth_gbps, n.id)).id


def smallest_node(p: Problem) -> NodeInput:
    """The node whose free memory breaks ties between equally fast plans."""
    return min(p.nodes, key=lambda n: (n.budget, n.id))


@dataclass(frozen=True)
class Cluster:
    """Everything about the nodes that the model-independent parts of planning need."""

    nodes: dict[str, Node]
    budgets: dict[str, int]
    pricing: RingPricing
    fixed_us: float
    """Per token, every rank alike, whatever its share (`planner.calibration.fixed_us`)."""

    @classmethod
    def of(cls, request: PlanRequest, spec: ModelSpec) -> Cluster:
        c = request.constraints
        message = spec.hidden * spec.dtype_bytes * c.batch_size
        nodes = {n.id: _at_peak(n) for n in request.topology.nodes}
        routed = effective_hops(request.topology, message)
        # One hop per pair, the same both ways: the lower id's route.
        hops = {(a, b): routed[min(a, b), max(a, b)] for a, b in routed}
        rdma = rdma_hops(request.topology, message)
        return cls(
            nodes=nodes,
            budgets={n.id: budget_bytes(n, c.headroom) for n in nodes.values()},
            # One all-reduce after attention and one after the MLP / MoE block, every layer.
            pricing=RingPricing(hops, message, 2 * spec.num_layers, rdma),
            fixed_us=fixed_us(spec.num_layers),
        )

    @property
    def hops(self) -> dict[tuple[str, str], Hop]:
        return self.pricing.hops

    def allreduce_ms(self, order: list[str]) -> float:
        return self.pricing.ring_ps(order) / 1e9

    def first_rank(self, used: list[str]) -> str:
        """Rank 0 (which serves requests) is the node with the most memory."""
        return max(used, key=lambda n: (self.budgets[n], self.nodes[n].bandwidth_gbps, n))

    def ring(self, used: list[str], seconds: float = 10.0) -> list[str]:
        """The cheapest ring over `used`, rank 0 first."""
        return self.best_ring(used, seconds)[0]

    def best_ring(self, used: list[str], seconds: float) -> tuple[list[str], bool]:
        return best_ring(sorted(used), self.pricing, self.first_rank(used), seconds)


def _at_peak(node: Node) -> Node:
    """The node with its peak bandwidth, which every price scales (`planner.calibration`)."""
    measured = node.source == FigureSource.MEASURED
    if not measured:
        return node
    peak = peak_bandwidth_gbps(node.bandwidth_gbps, measured)
    return node.model_copy(update={"bandwidth_gbps": peak})


def hop_levels(cluster: Cluster, ids: list[str]) -> tuple[int, dict[tuple[str, str], int]]:
    """Hop levels in ascending price: the MAX_HOP_LEVELS - 1 cheapest hops each a level of
    their own, all dearer ones in the last level. Levels only partition the search; every
    arc is priced exactly."""
    pairs = [(a, b) for a in ids for b in ids if a != b]
    if not pairs:
        return 1, {}
    # Each pair at its own price (its price in a ring of the two alone).
    price = {pair: cluster.pricing.arc_ps(2, *pair) for pair in pairs}
    ordered = sorted(set(price.values()))
    level_of = {p: min(i, MAX_HOP_LEVELS - 1) for i, p in enumerate(ordered)}
    return min(len(ordered), MAX_HOP_LEVELS), {pair: level_of[price[pair]] for pair in pairs}


def problem_for(
    request: PlanRequest, spec: ModelSpec, costs: UnitCosts, cluster: Cluster
) -> Problem:
    c = request.constraints
    ids = sorted(cluster.nodes)
    levels, pair_level = hop_levels(cluster, ids)

    def own_level(n: str) -> int:
        """The slowest level n must use in any ring: its second-best neighbour's."""
        near = sorted(pair_level[n, o] for o in ids if o != n)
        return near[min(1, len(near) - 1)] if near else 0

    order = sorted(
        cluster.nodes.values(),
        key=lambda n: (-cluster.budgets[n.id], -n.bandwidth_gbps, own_level(n.id), n.id),
    )
    return Problem(
        nodes=[
            NodeInput(
                id=n.id,
                budget=cluster.budgets[n.id],
                bandwidth_gbps=n.bandwidth_gbps,
                level=own_level(n.id),
            )
            for n in order
        ],
        costs=costs,
        q_per_kv=spec.q_per_kv,
        overhead_bytes=c.overhead_bytes,
        ring=cluster.pricing,
        fixed_ps=round(cluster.fixed_us * 1e6),
        pair_level=pair_level,
        levels=levels,
        allow_unused=c.allow_unused_nodes,
        time_limit_s=c.time_limit_s,
    )
