"""`make_plan`: a plan request in, a plan out. A pure function of the request.

The pipeline: a `PlanningContext` (canonical request, model spec, unit costs, cluster, plan
id) built once; the equal split and the solver's split as candidates; the candidate returned
with the status that candidate has earned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from planner import diagnose
from planner.calibration import Collective, effective_bandwidth_gbps
from planner.context import SOLVER_VERSION, Cluster, PlanningContext, plan_id_for
from planner.costs import UnitCosts
from planner.equal import equal_shares
from planner.layout import rank_plans
from planner.problem import NodeShare, Solution
from planner.solver import SEED, WORKERS, solve
from planner.sources import figure_sources
from protocol.measurements import FigureSource
from protocol.model_spec import ModelSpec
from protocol.plan import Estimates, ModelSummary, Plan, RankPlan, SolverInfo
from protocol.schema import PlanRequest

__all__ = ["SOLVER_VERSION", "Cluster", "make_plan", "plan_id_for"]

MODEL_RANGE = 2**55  # bytes and picoseconds the CP-SAT model holds with room to add them
INVARIANT_TOLERANCE_MS = 1e-5  # decode time vs the solver's objective: integer ps vs floats


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


def fluid_bound_ms(costs: UnitCosts, bandwidths: list[float], fixed_ms: float = 0.0) -> float:
    """Best case ignoring memory, granularity and the network: k ranks each read the
    replicated bytes, and the sharded bytes spread over their bandwidth in proportion."""
    fastest = sorted(bandwidths, reverse=True)
    return min(fluid_used_ms(costs, fastest[:k], fixed_ms) for k in range(1, len(fastest) + 1))


def fluid_used_ms(costs: UnitCosts, bandwidths: list[float], fixed_ms: float = 0.0) -> float:
    """The fluid bound over exactly these ranks: what `compute_ms` is measured against."""
    read = costs.sharded_read + len(bandwidths) * costs.replicated_read
    return read / effective_bandwidth_gbps(sum(bandwidths)) / 1e6 + fixed_ms


@dataclass
class _Candidate:
    sharding: str
    ranks: list[RankPlan]
    ring: list[str]
    estimates: Estimates


def _candidate(
    sharding: str, shares: list[NodeShare], ring: list[str], ctx: PlanningContext
) -> _Candidate:
    c, spec, costs, cluster = ctx.request.constraints, ctx.spec, ctx.costs, ctx.cluster
    by_id = {s.node_id: s for s in shares}
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
                fluid_bound_ms(
                    costs,
                    [n.bandwidth_gbps for n in cluster.nodes.values()],
                    cluster.fixed_us / 1e3,
                ),
                6,
            ),
            fluid_bound_used_ms=round(
                fluid_used_ms(
                    costs, [cluster.nodes[n].bandwidth_gbps for n in ring], cluster.fixed_us / 1e3
                ),
                6,
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
    held = costs.replicated_held + overhead_bytes + costs.sharded_held
    if held > MODEL_RANGE:
        reasons.append(f"the model needs {held / 1e9:.4g} GB: beyond what the planner can model")
    read = costs.replicated_read + costs.sharded_read
    for n in sorted(cluster.nodes.values(), key=lambda n: n.id):
        ps = read * 1e3 / effective_bandwidth_gbps(n.bandwidth_gbps)
        if not ps <= MODEL_RANGE:
            reasons.append(
                f"node {n.id}: one decode token would take {ps / 1e12:.4g} s at "
                f"{n.bandwidth_gbps:g} GB/s: beyond what the planner can model "
                "(bandwidth_gbps is memory GB/s)"
            )
    k, pricing = len(cluster.nodes), cluster.pricing
    beyond = {hb: pricing.exact_ps([hb[0]] * k, hb[1]) for hb in pricing.distinct}
    beyond = {hb: ps for hb, ps in beyond.items() if not ps <= MODEL_RANGE}
    for a, b in sorted(pricing.hops) if beyond else []:
        ps = max(
            beyond.get((pricing.hop(a, b, c), c), 0.0) for c in (Collective.RING, pricing.own(a, b))
        )
        if a < b and ps:
            reasons.append(
                f"the link between {a} and {b} would take {ps / 1e12:.4g} s of all-reduce a "
                "token: beyond what the planner can model (link bandwidth_gbps is network Gb/s)"
            )
    return reasons


def make_plan(request: PlanRequest) -> Plan:
    started = time.perf_counter()
    ctx = PlanningContext.of(request)
    # Sources are keyed by the links as the user wrote them (the page looks them up so).
    return _Planning(ctx, started, figure_sources(request.topology)).run()


class _Planning:
    """One request's way through planning; each method one step, each returning the plan."""

    def __init__(
        self, ctx: PlanningContext, started: float, sources: dict[str, FigureSource]
    ) -> None:
        self.ctx = ctx
        self.sources = sources
        self.c = ctx.request.constraints
        self.started = started
        self.model = summary(ctx.spec, ctx.costs)

    def infeasible(self, reasons: list[str], time_limited: bool = False) -> Plan:
        return Plan(
            feasible=False,
            status="infeasible",
            plan_id=self.ctx.plan_id,
            model=self.model,
            reasons=reasons,
            solver=self._info(None, time_limited),
            sources=self.sources,
        )

    def feasible(
        self,
        chosen: _Candidate,
        optimal: bool,
        time_limited: bool,
        solution: Solution | None = None,
        warnings: list[str] | None = None,
    ) -> Plan:
        return Plan(
            feasible=True,
            status="optimal" if optimal else "feasible",
            plan_id=self.ctx.plan_id,
            model=self.model,
            sharding="equal" if chosen.sharding == "equal" else "asymmetric",
            ranks=chosen.ranks,
            ring=chosen.ring,
            estimates=chosen.estimates,
            warnings=warnings or [],
            solver=self._info(solution, time_limited, chosen.sharding != "equal"),
            sources=self.sources,
        )

    def _info(self, solution: Solution | None, time_limited: bool, own: bool = True) -> SolverInfo:
        """The solver's figures; its objective only when the plan is the solver's own."""
        return SolverInfo(
            wall_ms=round((time.perf_counter() - self.started) * 1e3, 3),
            objective=_ps_to_ms(solution.objective_ps) if solution and own else None,
            bound=None if solution is None else _ps_to_ms(solution.bound_ps),
            time_limited=time_limited,
            workers=WORKERS,
            seed=SEED,
            version=SOLVER_VERSION,
        )

    def equal(self) -> tuple[_Candidate | None, bool, list[str]]:
        """Today's even split over every node (and whether its ring is proven cheapest), or
        the reasons it does not exist or fit."""
        ctx = self.ctx
        shares, reasons = equal_shares(ctx.spec, ctx.costs, sorted(ctx.cluster.nodes))
        if not shares:
            return None, True, reasons
        ring, proven = ctx.cluster.best_ring([s.node_id for s in shares], self.seconds_left())
        candidate = _candidate("equal", shares, ring, ctx)
        if not _fits(candidate):
            return None, True, diagnose.equal_overflow(candidate.ranks, self.c.headroom)
        return candidate, proven, []

    def run(self) -> Plan:
        ctx = self.ctx
        out_of_range = beyond_model_range(ctx.spec, ctx.costs, ctx.cluster, self.c.overhead_bytes)
        if out_of_range:
            return self.infeasible(out_of_range)
        equal, ring_proven, eq_reasons = self.equal()
        if self.c.sharding == "equal":
            if equal is None:
                return self.infeasible(eq_reasons)
            return self.feasible(equal, ring_proven, not ring_proven)
        solution = solve(replace(ctx.problem(), time_limit_s=self.seconds_left()))
        if solution.status == "infeasible":
            if equal is not None and solution.time_limited:
                return self.feasible(
                    _with_equal(equal, equal), False, True, solution, [self._limit_warning()]
                )
            reasons = diagnose.infeasible(ctx, solution)
            if self.c.sharding == "auto":
                reasons += eq_reasons
            return self.infeasible(reasons, solution.time_limited)
        return self.chosen(solution, equal)

    def chosen(self, solution: Solution, equal: _Candidate | None) -> Plan:
        asym = _candidate("asymmetric", solution.shares, solution.ring, self.ctx)
        _check_objective(asym, solution)
        limited = solution.time_limited
        warnings = [self._limit_warning(solution)] if limited else []
        chosen = asym
        if equal is not None:
            # `auto` prefers the even split when no slower; a time limit gives the best known.
            no_slower = equal.estimates.decode_ms_per_token <= asym.estimates.decode_ms_per_token
            if no_slower and (self.c.sharding == "auto" or limited):
                chosen = equal
            chosen = _with_equal(chosen, equal)
        return self.feasible(chosen, solution.status == "optimal", limited, solution, warnings)

    def seconds_left(self) -> float:
        """The request's time limit covers all of planning, not only the search."""
        return max(self.c.time_limit_s - (time.perf_counter() - self.started), 0.001)

    def _limit_warning(self, solution: Solution | None = None) -> str:
        limit = self.c.time_limit_s
        if solution is None:
            return f"solver stopped at the {limit:g}s time limit before any split: the equal split"
        return (
            f"solver stopped at the {limit:g}s time limit: this is the best plan found, "
            f"within {_gap(solution):.1f}% of the proven bound"
        )


def _with_equal(chosen: _Candidate, equal: _Candidate) -> _Candidate:
    update = {"equal_split_decode_ms": equal.estimates.decode_ms_per_token}
    chosen.estimates = chosen.estimates.model_copy(update=update)
    return chosen


def _check_objective(candidate: _Candidate, solution: Solution) -> None:
    """The plan's decode time is the objective the solver minimised: one model of cost."""
    objective = _ps_to_ms(solution.objective_ps)
    decode = candidate.estimates.decode_ms_per_token
    if objective is None or abs(decode - objective) > INVARIANT_TOLERANCE_MS + 1e-9 * decode:
        raise RuntimeError(f"plan decode time {decode} ms differs from the objective {objective}")


def _ps_to_ms(ps: int | None) -> float | None:
    return None if ps is None else round(ps / 1e9, 6)


def _gap(s: Solution) -> float:
    if not s.objective_ps or s.bound_ps is None:
        return 0.0
    return 100 * (s.objective_ps - s.bound_ps) / s.objective_ps
