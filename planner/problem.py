"""The planning problem as the solver sees it: nodes, per-unit costs, and what a plan is.

Times are integer picoseconds per decode token; bytes are integers. Every coefficient the
CP-SAT model uses is computed here or in `planner.costs`, never inside the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from planner.costs import SHARDED, Unit, UnitCosts
from planner.ring import RingPricing

PS_PER_NS = 1000


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
    allow_unused: bool = True
    time_limit_s: float = 10.0
    feasibility_only: bool = False

    @cached_property
    def sharded_read(self) -> float:
        return self.costs.sharded_read

    @cached_property
    def sharded_held(self) -> int:
        return self.costs.sharded_held


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
    """Picoseconds to read `bytes_per_token` at `bandwidth_gbps` GB/s (rounded up)."""
    return math.ceil(bytes_per_token * PS_PER_NS / bandwidth_gbps)


def fixed_bytes(p: Problem) -> int:
    return p.costs.replicated_weight + p.overhead_bytes


def able_nodes(p: Problem) -> list[NodeInput]:
    """Nodes whose budget holds what every rank keeps whole; no other node can be used."""
    return [n for n in p.nodes if n.budget >= fixed_bytes(p)]


def fluid_time_ps(p: Problem, k: int, nodes: list[NodeInput] | None = None) -> int:
    """No plan on k of `nodes` reads its bytes faster than the k fastest sharing them perfectly
    (rounded down, and one picosecond less against floating-point error)."""
    pool = p.nodes if nodes is None else nodes
    bandwidth = sum(sorted((n.bandwidth_gbps for n in pool), reverse=True)[:k])
    read = p.sharded_read + k * p.costs.replicated_read
    return max(math.floor(read * PS_PER_NS / bandwidth) - 1, 0)


def memory_allows(p: Problem, k: int, nodes: list[NodeInput]) -> bool:
    """Could any k of `nodes` hold the model at all (the k largest budgets, fluidly)?"""
    top = sorted((n.budget for n in nodes), reverse=True)[:k]
    return sum(top) - k * fixed_bytes(p) >= p.sharded_held


def first_rank(nodes: list[NodeInput]) -> str:
    """Rank 0 serves requests: the used node with the most memory, then bandwidth, then id."""
    return max(nodes, key=lambda n: (n.budget, n.bandwidth_gbps, n.id)).id


def smallest_node(p: Problem) -> NodeInput:
    """The node whose free memory breaks ties between equally fast plans."""
    return min(p.nodes, key=lambda n: (n.budget, n.id))
