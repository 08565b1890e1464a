"""`make_plan`: a plan request in, a plan out. A pure function of the request."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from importlib.metadata import version

from planner import diagnose
from planner.costs import UNITS, UnitCosts, unit_costs
from planner.equal import equal_shares
from planner.layout import budget_bytes, rank_plans
from planner.problem import NodeInput, NodeShare, Problem, Solution
from planner.solver import FORMULATION, SEED, WORKERS, solve
from planner.sources import figure_sources
from planner.topology import Hop, allreduce_us, effective_hops, ring_hops, ring_order
from protocol.model_spec import ModelSpec, read_config
from protocol.schema import (
    Estimates,
    ModelSummary,
    Node,
    Plan,
    PlanRequest,
    RankPlan,
    SolverInfo,
)
from protocol.version import __version__

MODEL_RANGE = 2**55  # bytes and picoseconds the CP-SAT model holds with room to add them
MAX_HOP_LEVELS = 8  # more distinct link speeds than this are priced by their bucket's slowest
SOLVER_VERSION = f"asymtp-{__version__}/formulation-{FORMULATION}+ortools-{version('ortools')}"


def plan_id_for(request: PlanRequest) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{SOLVER_VERSION}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class Cluster:
    """Everything about the nodes that the model-independent parts of planning need."""

    nodes: dict[str, Node]
    budgets: dict[str, int]
    hops: dict[tuple[str, str], Hop]
    message_bytes: int
    allreduces_per_token: int

    @classmethod
    def of(cls, request: PlanRequest, spec: ModelSpec) -> Cluster:
        c = request.constraints
        message = spec.hidden * spec.dtype_bytes * c.batch_size
        nodes = {n.id: n for n in request.topology.nodes}
        return cls(
            nodes=nodes,
            budgets={n.id: budget_bytes(n, c.headroom) for n in nodes.values()},
            hops=effective_hops(request.topology, message),
            message_bytes=message,
            # One all-reduce after attention and one after the MLP / MoE block, every layer.
            allreduces_per_token=2 * spec.num_layers,
        )

    def allreduce_ms(self, order: list[str]) -> float:
        hops = ring_hops(order, self.hops)
        if not hops:
            return 0.0
        slowest = max(hops, key=lambda h: h.cost_us(self.message_bytes))
        per = allreduce_us(len(order), slowest, self.message_bytes)
        return per * self.allreduces_per_token / 1e3

    def ring(self, used: list[str]) -> list[str]:
        # Rank 0 (which serves requests) is the node with the most memory.
        first = max(used, key=lambda n: (self.budgets[n], self.nodes[n].bandwidth_gbps, n))
        rest = sorted(n for n in used if n != first)
        return ring_order([first, *rest], self.hops, self.message_bytes)


def hop_levels(cluster: Cluster, ids: list[str]) -> tuple[list[Hop], dict[tuple[str, str], int]]:
    """Hop levels in ascending cost: the MAX_HOP_LEVELS - 1 cheapest hops exactly, all slower
    ones in a last level priced by the slowest, so a ring's level never understates it."""
    msg = cluster.message_bytes
    pairs = {(a, b): cluster.hops[a, b] for a in ids for b in ids if a != b}
    if not pairs:
        return [Hop(0.0, 1.0, "none")], {}
    ordered = sorted(set(pairs.values()), key=lambda h: (h.cost_us(msg), h.kind, h.latency_us))
    edges = (
        ordered[: MAX_HOP_LEVELS - 1] + ordered[-1:] if len(ordered) > MAX_HOP_LEVELS else ordered
    )
    level_of = {}
    for h in ordered:
        level_of[h] = next(i for i, e in enumerate(edges) if h.cost_us(msg) <= e.cost_us(msg))
    return edges, {pair: level_of[h] for pair, h in pairs.items()}


def problem_for(
    request: PlanRequest, spec: ModelSpec, costs: UnitCosts, cluster: Cluster
) -> Problem:
    c = request.constraints
    ids = sorted(cluster.nodes)
    level_hops, pair_level = hop_levels(cluster, ids)

    def own_level(n: str) -> int:
        """The slowest level n must use in any ring: its second-best neighbour's."""
        near = sorted(pair_level[n, o] for o in ids if o != n)
        return near[min(1, len(near) - 1)] if len(ids) > 2 else (near[0] if near else 0)

    order = sorted(
        cluster.nodes.values(),
        key=lambda n: (-cluster.budgets[n.id], -n.bandwidth_gbps, own_level(n.id), n.id),
    )
    comm = [
        [
            round(allreduce_us(k, h, cluster.message_bytes) * cluster.allreduces_per_token * 1e6)
            for h in level_hops
        ]
        for k in range(1, len(order) + 1)
    ]
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
        comm_ps=comm,
        pair_level=pair_level,
        allow_unused=c.allow_unused_nodes,
        time_limit_s=c.time_limit_s,
    )


def summary(spec: ModelSpec, costs: UnitCosts) -> ModelSummary:
    return ModelSummary(
        model_type=spec.model_type,
        family=spec.family,
        num_layers=spec.num_layers,
        full_attention_layers=spec.full_layers,
        linear_attention_layers=spec.lin_layers,
        q_heads=spec.q_heads,
        kv_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        ffn_dim=spec.ffn_dim,
        ffn_block=spec.ffn_block,
        experts=spec.experts,
        experts_per_token=spec.experts_per_token,
        linear_k_heads=spec.lin_k_heads if spec.lin_layers else 0,
        linear_v_heads=spec.lin_v_heads if spec.lin_layers else 0,
        bits=spec.quant.bits if spec.quant else None,
        group_size=spec.quant.group_size if spec.quant else None,
        weight_bytes=costs.total_weight,
    )


def fluid_bound_ms(costs: UnitCosts, bandwidths: list[float]) -> float:
    """Best case ignoring memory, granularity and the network: k ranks each read the
    replicated bytes, and the sharded bytes spread over their bandwidth in proportion."""
    fastest = sorted(bandwidths, reverse=True)
    return min(fluid_used_ms(costs, fastest[:k]) for k in range(1, len(fastest) + 1))


def fluid_used_ms(costs: UnitCosts, bandwidths: list[float]) -> float:
    """The fluid bound over exactly these ranks: what `compute_ms` is measured against."""
    sharded = sum((costs.read[u] + costs.cache[u]) * costs.total_units[u] for u in UNITS)
    return (sharded + len(bandwidths) * costs.replicated_read) / sum(bandwidths) / 1e6


@dataclass
class _Candidate:
    sharding: str
    ranks: list[RankPlan]
    ring: list[str]
    estimates: Estimates


def _candidate(
    sharding: str,
    shares: list[NodeShare],
    request: PlanRequest,
    spec: ModelSpec,
    costs: UnitCosts,
    cluster: Cluster,
) -> _Candidate:
    c = request.constraints
    by_id = {s.node_id: s for s in shares}
    ring = cluster.ring(list(by_id))
    ranks = rank_plans(
        spec, costs, [by_id[n] for n in ring], cluster.nodes, c.headroom, c.overhead_bytes
    )
    compute = max(r.decode_ms for r in ranks)
    bottleneck = max(ranks, key=lambda r: (r.decode_ms, -r.rank)).rank
    comm = cluster.allreduce_ms(ring)
    decode = compute + comm
    return _Candidate(
        sharding=sharding,
        ranks=ranks,
        ring=ring,
        estimates=Estimates(
            decode_ms_per_token=round(decode, 6),
            tokens_per_s=round(1e3 / decode, 3) if decode > 0 else 0.0,
            bottleneck_rank=bottleneck,
            compute_ms=round(compute, 6),
            allreduce_ms=round(comm, 6),
            fluid_bound_ms=round(
                fluid_bound_ms(costs, [n.bandwidth_gbps for n in cluster.nodes.values()]), 6
            ),
            fluid_bound_used_ms=round(
                fluid_used_ms(costs, [cluster.nodes[n].bandwidth_gbps for n in ring]), 6
            ),
        ),
    )


def _fits(candidate: _Candidate) -> bool:
    return all(r.memory_bytes.total <= r.budget_bytes for r in candidate.ranks)


def beyond_model_range(
    spec: ModelSpec, costs: UnitCosts, cluster: Cluster, overhead_bytes: int
) -> list[str]:
    """Reasons the request's sizes do not fit the CP-SAT model's 64-bit integers (bytes and
    picoseconds), e.g. a bandwidth typed in the wrong unit; empty when they fit."""
    reasons = []
    held = (
        costs.replicated_weight
        + overhead_bytes
        + sum((costs.weight[u] + costs.cache[u]) * costs.total_units[u] for u in UNITS)
    )
    if held > MODEL_RANGE:
        reasons.append(f"the model needs {held / 1e9:.4g} GB: beyond what the planner can model")
    read = costs.replicated_read + sum(
        (costs.read[u] + costs.cache[u]) * costs.total_units[u] for u in UNITS
    )
    for n in sorted(cluster.nodes.values(), key=lambda n: n.id):
        ps = read * 1e3 / n.bandwidth_gbps
        if not ps <= MODEL_RANGE:
            reasons.append(
                f"node {n.id}: one decode token would take {ps / 1e12:.4g} s at "
                f"{n.bandwidth_gbps:g} GB/s: beyond what the planner can model "
                "(bandwidth_gbps is memory GB/s)"
            )
    k = len(cluster.nodes)
    for (a, b), hop in sorted(cluster.hops.items()):
        ps = allreduce_us(k, hop, cluster.message_bytes) * cluster.allreduces_per_token * 1e6
        if a < b and not ps <= MODEL_RANGE:
            reasons.append(
                f"the link between {a} and {b} would take {ps / 1e12:.4g} s of all-reduce a "
                "token: beyond what the planner can model (link bandwidth_gbps is network Gb/s)"
            )
    return reasons


def make_plan(request: PlanRequest) -> Plan:
    started = time.perf_counter()
    spec = read_config(request.model)
    c = request.constraints
    costs = unit_costs(spec, c.context_tokens, c.batch_size, c.kv_cache_bytes_per_element)
    cluster = Cluster.of(request, spec)
    plan_id, model = plan_id_for(request), summary(spec, costs)

    def infeasible(reasons: list[str], time_limited: bool = False) -> Plan:
        return Plan(
            feasible=False,
            status="infeasible",
            plan_id=plan_id,
            model=model,
            reasons=reasons,
            solver=_solver_info(started, None, time_limited),
            sources=figure_sources(request.topology),
        )

    def feasible(chosen: _Candidate, solution: Solution | None, warnings: list[str]) -> Plan:
        optimal = solution is None or solution.status == "optimal"
        return Plan(
            feasible=True,
            status="optimal" if optimal else "feasible",
            plan_id=plan_id,
            model=model,
            sharding="equal" if chosen.sharding == "equal" else "asymmetric",
            ranks=chosen.ranks,
            ring=chosen.ring,
            estimates=chosen.estimates,
            warnings=warnings,
            solver=_solver_info(started, solution, bool(solution and solution.time_limited)),
            sources=figure_sources(request.topology),
        )

    out_of_range = beyond_model_range(spec, costs, cluster, c.overhead_bytes)
    if out_of_range:
        return infeasible(out_of_range)

    # Today's even split over every node, for `equal`, for `auto`, and as a comparison figure.
    eq_shares, eq_reasons = equal_shares(spec, costs, sorted(cluster.nodes))
    equal = _candidate("equal", eq_shares, request, spec, costs, cluster) if eq_shares else None
    if equal is not None and not _fits(equal):
        eq_reasons = diagnose.equal_overflow(equal.ranks, c.headroom)
        equal = None

    if c.sharding == "equal":
        return feasible(equal, None, []) if equal is not None else infeasible(eq_reasons)

    solution = solve(problem_for(request, spec, costs, cluster))
    if solution.status == "infeasible":
        reasons = diagnose.infeasible(request, spec, costs, cluster, solution)
        if c.sharding == "auto":
            reasons += eq_reasons
        return infeasible(reasons, solution.time_limited)
    asym = _candidate("asymmetric", solution.shares, request, spec, costs, cluster)
    warnings = []
    if solution.time_limited:
        warnings.append(
            f"solver stopped at the {c.time_limit_s:g}s time limit: this is the best plan found, "
            f"within {_gap(solution):.1f}% of the proven bound"
        )
    chosen = asym
    if equal is not None:
        if c.sharding == "auto" and (
            equal.estimates.decode_ms_per_token <= asym.estimates.decode_ms_per_token
        ):
            chosen = equal
        chosen.estimates = chosen.estimates.model_copy(
            update={"equal_split_decode_ms": equal.estimates.decode_ms_per_token}
        )
    return feasible(chosen, solution if chosen is asym else None, warnings)


def _solver_info(started: float, solution: Solution | None, time_limited: bool) -> SolverInfo:
    return SolverInfo(
        wall_ms=round((time.perf_counter() - started) * 1e3, 3),
        objective=None if solution is None else _ps_to_ms(solution.objective_ps),
        bound=None if solution is None else _ps_to_ms(solution.bound_ps),
        time_limited=time_limited,
        workers=WORKERS,
        seed=SEED,
        version=SOLVER_VERSION,
    )


def _ps_to_ms(ps: int | None) -> float | None:
    return None if ps is None else round(ps / 1e9, 6)


def _gap(s: Solution) -> float:
    if not s.objective_ps or s.bound_ps is None:
        return 0.0
    return 100 * (s.objective_ps - s.bound_ps) / s.objective_ps
