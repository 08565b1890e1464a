"""The planning problem as the solver sees it: nodes, per-unit costs, and what a plan is.

Times are integer picoseconds per decode token; bytes are integers. Every coefficient the
CP-SAT model uses is computed here or in `planner.costs`, never inside the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

from planner.calibration import effective_bandwidth_gbps
from planner.costs import UNITS, UnitCosts

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
    comm_ps: list[list[int]]
    """comm_ps[k - 1][level]: what a token costs beyond the slowest rank's reads (ps) for k ranks
    at a hop level: its all-reduces and the fixed per-layer time every rank pays alike."""
    pair_level: dict[tuple[str, str], int]
    """Hop level between two nodes (both orders), levels ascending in cost."""
    allow_unused: bool = True
    time_limit_s: float = 10.0
    feasibility_only: bool = False

    @cached_property
    def sharded_read(self) -> float:
        """Bytes of sharded weights and cache read per token, over all ranks."""
        c = self.costs
        return sum((c.read[u] + c.cache[u]) * c.total_units[u] for u in UNITS)

    @cached_property
    def sharded_held(self) -> int:
        """Bytes of sharded weights and cache held, over all ranks."""
        c = self.costs
        return sum((c.weight[u] + c.cache[u]) * c.total_units[u] for u in UNITS)


@dataclass(frozen=True)
class NodeShare:
    """What one node holds, in units; `partial_slot` is the split KV group it shares."""

    node_id: str
    kv_whole: int = 0
    partial_slot: int | None = None
    partial_q: int = 0
    ffn_blocks: int = 0
    experts: int = 0
    lin_k_heads: int = 0
    q_per_kv: int = 1

    @property
    def q_heads(self) -> int:
        return self.q_per_kv * self.kv_whole + self.partial_q

    @property
    def kv_heads(self) -> int:
        return self.kv_whole + (1 if self.partial_slot is not None else 0)

    def counts(self) -> dict[str, int]:
        return {
            "q_head": self.q_heads,
            "kv_head": self.kv_heads,
            "ffn_block": self.ffn_blocks,
            "expert": self.experts,
            "lin_k_head": self.lin_k_heads,
        }

    @property
    def empty(self) -> bool:
        return not any(self.counts().values())


@dataclass
class Solution:
    status: str  # optimal | feasible | infeasible
    shares: list[NodeShare] = field(default_factory=list)
    objective_ps: int | None = None
    bound_ps: int | None = None
    wall_ms: float = 0.0
    time_limited: bool = False


def time_coefficient(bytes_per_token: float, bandwidth_gbps: float) -> int:
    """Picoseconds to read `bytes_per_token` on a node of peak bandwidth `bandwidth_gbps` GB/s, at
    the share of it decode achieves (`planner.calibration`; rounded up)."""
    return math.ceil(bytes_per_token * PS_PER_NS / effective_bandwidth_gbps(bandwidth_gbps))


def fixed_bytes(p: Problem) -> int:
    return p.costs.replicated_weight + p.overhead_bytes


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
    read = p.sharded_read + k * p.costs.replicated_read
    return max(math.floor(read * PS_PER_NS / bandwidth) - 1, 0)


def memory_allows(p: Problem, k: int, nodes: list[NodeInput]) -> bool:
    """Could any k of `nodes` hold the model at all (the k largest budgets, fluidly)?"""
    top = sorted((n.budget for n in nodes), reverse=True)[:k]
    return sum(top) - k * fixed_bytes(p) >= p.sharded_held


def ring_degree(k: int) -> int:
    """Used neighbours each used node needs within the ring's level: two, one for a pair."""
    return min(2, k - 1)


def smallest_node(p: Problem) -> NodeInput:
    """The node whose free memory breaks ties between equally fast plans."""
    return min(p.nodes, key=lambda n: (n.budget, n.id))
