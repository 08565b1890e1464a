"""One pipeline stage priced and split: a tensor-parallel group over a range of layers.

A stage of layers `[a, b)` over nodes g is exactly a single-stage planning problem whose unit
costs are those layers' bytes (`planner.costs.LayerTable`), with the embeddings and output head
only on stage 0, its ring priced for 2·(b − a) all-reduces a token and its fixed time for
b − a layers. So one solver (`planner.solver.solve`, every node of g used) splits a stage, and
one set of prices serves the tensor-only plan, every stage of a pipeline, the search over
layouts and `planner.layouts.plan_for_layout`.

Between stages one hidden vector travels per decode token: stage s's first rank (its leader)
sends it to every rank of stage s + 1, and the last stage sends it back to stage 0, which holds
the output head. Every rank of a stage holds the hidden vector after its last all-reduce, and a
ring has no start, so the leader is the node whose sends are cheapest (ties by id); on stage 0
it is rank 0. (A rule tied to anything else, such as memory, would let more memory make a plan
slower.) A transfer costs what the dearest of the leader's sends costs: the backend's
synchronisation (`planner.calibration.SYNC_US`: a send ends the command buffer as an all-reduce
does) and one step of the effective hop (`hop_step_us`: latency + bytes at its bandwidth,
routed hops as routed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from planner.calibration import SYNC_US, fixed_us, hop_step_us
from planner.context import PlanningContext
from planner.costs import SHARDED, UNITS, Unit, UnitCosts
from planner.equal import equal_shares
from planner.problem import (
    Cluster,
    NodeShare,
    Problem,
    Solution,
    base_time_ps,
    problem_for,
    time_coefficient,
)
from planner.ring import PS_PER_US, RingPricing
from planner.solver import solve
from protocol.model_spec import ModelSpec
from protocol.schema import Range


class LayoutSplit(StrEnum):
    """How a stage's units are split over its nodes."""

    OPTIMAL = "optimal"
    """The fastest asymmetric split of those layers over exactly those nodes (the solver's)."""
    EQUAL = "equal"
    """Every dimension cut into equal parts, as exo and mlx-lm do."""


@dataclass(frozen=True)
class StageLayout:
    """One stage as a caller fixes it: its nodes, how many layers it runs, how it splits."""

    nodes: tuple[str, ...]
    layers: int
    split: LayoutSplit = LayoutSplit.OPTIMAL


@dataclass(frozen=True)
class StageSolution:
    """A stage split and priced: its shares in ring order (its leader first)."""

    layers: Range
    costs: UnitCosts
    shares: list[NodeShare]
    ring: list[str]
    compute_ps: int
    """Its slowest rank's time a token: reads, replicated reads and fixed per-layer time."""
    allreduce_ps: int
    optimal: bool
    """The split is proven the fastest for these nodes and layers (always so for one node)."""
    time_limited: bool = False

    @property
    def objective_ps(self) -> int:
        return self.compute_ps + self.allreduce_ps

    @property
    def count(self) -> int:
        return self.layers[1] - self.layers[0]


def stage_cluster(cluster: Cluster, nodes: list[str], count: int) -> Cluster:
    """The cluster as a stage of `count` layers over `nodes` sees it: those nodes, its ring
    priced for two all-reduces a layer, its fixed time for its layers."""
    pricing = cluster.pricing
    hops = {(a, b): pricing.hops[a, b] for a in nodes for b in nodes if a != b}
    rdma = {pair: hop for pair, hop in pricing.rdma.items() if pair in hops}
    return Cluster(
        nodes={n: cluster.nodes[n] for n in nodes},
        budgets={n: cluster.budgets[n] for n in nodes},
        pricing=RingPricing(hops, pricing.message_bytes, 2 * count, rdma),
        fixed_us=fixed_us(count),
    )


def stage_problem(
    ctx: PlanningContext, nodes: list[str], layers: Range, first: bool, seconds: float
) -> Problem:
    """The single-stage problem of layers `layers` over exactly `nodes`."""
    costs = ctx.table.costs(layers, outer=first)
    cluster = stage_cluster(ctx.cluster, nodes, layers[1] - layers[0])
    problem = problem_for(ctx.request, ctx.spec, costs, cluster)
    return replace(problem, allow_unused=False, time_limit_s=seconds)


def share_time_ps(p: Problem, share: NodeShare, bandwidth_gbps: float) -> int:
    """A rank's time a token as the CP-SAT model counts it (integer coefficients)."""
    counts = share.counts()
    tau = (time_coefficient(p.costs.per_token(u), bandwidth_gbps) * counts[u] for u in UNITS)
    return base_time_ps(p, bandwidth_gbps) + sum(tau)


def fits(p: Problem, share: NodeShare, budget: int) -> bool:
    c = p.costs
    counts = share.counts()
    return c.weights_of(counts) + c.cache_of(counts) + p.overhead_bytes <= budget


def priced_stage(
    p: Problem,
    cluster: Cluster,
    layers: Range,
    shares: list[NodeShare],
    ring: list[str],
    proven: tuple[bool, bool],
) -> StageSolution:
    """A stage from its shares and ring, priced as the CP-SAT model prices it; `proven` is
    (optimal, time_limited)."""
    by_id = {s.node_id: s for s in shares}
    ordered = [by_id[n] for n in ring]
    compute = max(share_time_ps(p, s, cluster.nodes[s.node_id].bandwidth_gbps) for s in ordered)
    return StageSolution(
        layers, p.costs, ordered, ring, compute, p.ring.ring_ps(ring), proven[0], proven[1]
    )


def equal_stage(
    p: Problem, cluster: Cluster, layers: Range, spec: ModelSpec, seconds: float
) -> tuple[StageSolution | None, list[str]]:
    """The even split over every node of `cluster` (whether it fits or not: `stage_fits`),
    or the reasons it does not exist."""
    nodes = sorted(cluster.nodes)
    shares, reasons = equal_shares(spec, p.costs, nodes)
    if not shares:
        return None, reasons
    ring, proven = cluster.best_ring(nodes, seconds)
    return priced_stage(p, cluster, layers, shares, ring, (proven, not proven)), []


def stage_fits(p: Problem, cluster: Cluster, stage: StageSolution) -> bool:
    return all(fits(p, s, cluster.budgets[s.node_id]) for s in stage.shares)


def tensor_stage(ctx: PlanningContext, p: Problem, solution: Solution) -> StageSolution:
    """The solver's single-stage plan (over the whole model) as a stage."""
    proven = (solution.status == "optimal", solution.time_limited)
    layers = (0, ctx.spec.num_layers)
    return priced_stage(p, ctx.cluster, layers, solution.shares, solution.ring, proven)


def whole_share(p: Problem, node: str) -> NodeShare:
    """Every unit on one node."""
    totals = p.costs.total_units
    sharded = {u: totals[u] for u in SHARDED}
    return NodeShare(node, totals[Unit.KV_HEAD], sharded=sharded, q_per_kv=p.q_per_kv)


def solve_stage(
    ctx: PlanningContext,
    nodes: list[str],
    layers: Range,
    first: bool,
    split: LayoutSplit,
    seconds: float,
    polish: bool = True,
) -> StageSolution | None:
    """The stage split as asked, or None when those nodes cannot hold those layers so
    (`polish`: `Problem.polish`, the same price either way)."""
    p = replace(stage_problem(ctx, nodes, layers, first, seconds), polish=polish)
    cluster = stage_cluster(ctx.cluster, nodes, layers[1] - layers[0])
    if len(nodes) == 1:
        # One node holds every unit: nothing to search, and nothing a time limit can cut.
        whole = priced_stage(p, cluster, layers, [whole_share(p, nodes[0])], nodes, (True, False))
        return whole if stage_fits(p, cluster, whole) else None
    if split is LayoutSplit.EQUAL:
        stage = equal_stage(p, cluster, layers, ctx.spec, seconds)[0]
        return stage if stage is not None and stage_fits(p, cluster, stage) else None
    solution = solve(p)
    if solution.status == "infeasible":
        return None
    limited = solution.time_limited
    return priced_stage(
        p, cluster, layers, solution.shares, solution.ring, (solution.status == "optimal", limited)
    )


def send_ps(cluster: Cluster, sender: str, receivers: list[str]) -> int:
    """One hidden vector from `sender` to every node of `receivers`: the dearest send."""
    pricing = cluster.pricing
    worst = 0.0
    for r in receivers:
        # A send between two nodes goes over their direct RDMA link when they have one.
        backend = pricing.own(sender, r)
        hop = pricing.hop(sender, r, backend)
        worst = max(worst, SYNC_US[backend] + hop_step_us(hop, pricing.message_bytes))
    return math.ceil(worst * PS_PER_US)


def transfer_ps(cluster: Cluster, nodes: list[str], receivers: list[str]) -> tuple[int, str]:
    """A stage's output to the next stage's nodes, and its leader: the sender that makes it
    cheapest (a ring has no start, so any node of it can be the stage's first rank)."""
    return min((send_ps(cluster, n, receivers), n) for n in sorted(nodes))


def transfers_ps(cluster: Cluster, rings: list[list[str]]) -> list[tuple[int, str]]:
    """Per stage: sending its output to the next stage (the last back to stage 0) and the
    leader that sends it; no transfer for a single stage, whose leader is its rank 0."""
    if len(rings) < 2:
        return [(0, ring[0]) for ring in rings]
    count = len(rings)
    return [transfer_ps(cluster, ring, rings[(s + 1) % count]) for s, ring in enumerate(rings)]


def led_by(stage: StageSolution, leader: str) -> StageSolution:
    """The stage with its ring rotated to start at `leader` (the same ring, the same price)."""
    at = stage.ring.index(leader)
    ring = stage.ring[at:] + stage.ring[:at]
    shares = stage.shares[at:] + stage.shares[:at]
    return replace(stage, ring=ring, shares=shares)
