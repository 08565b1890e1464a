"""`make_plan`: a plan request in, a plan out. A pure function of the request.

The pipeline: a `PlanningContext` (canonical request, model spec, unit costs, cluster, plan
id) built once; the equal split and the solver's split as candidates; the candidate returned
with the status that candidate has earned.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from planner import diagnose
from planner.calibration import Collective, effective_bandwidth_gbps
from planner.candidate import Candidate, build, fits
from planner.context import SOLVER_VERSION, Cluster, PlanningContext, plan_id_for
from planner.costs import UnitCosts
from planner.layout_fixed import fixed_layout
from planner.layout_search import search_layouts
from planner.problem import Solution
from planner.solver import SEED, WORKERS, solve
from planner.sources import figure_sources
from planner.stages import LayoutSplit, StageLayout, equal_stage, tensor_stage
from protocol.measurements import FigureSource
from protocol.model_spec import ModelSpec
from protocol.plan import ModelSummary, Plan, SolverInfo
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


def make_layout_plan(request: PlanRequest, layout: Sequence[StageLayout]) -> Plan:
    """The plan of a layout the caller fixes (`planner.layouts.plan_for_layout`)."""
    started = time.perf_counter()
    ctx = PlanningContext.of(request)
    return _Planning(ctx, started, figure_sources(request.topology)).fixed(layout)


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

    def feasible(self, chosen: Candidate, outcome: Outcome, warnings: list[str]) -> Plan:
        own = chosen.sharding != "equal"
        if own:
            _check_objective(chosen)
        return Plan(
            feasible=True,
            status="optimal" if outcome.optimal else "feasible",
            plan_id=self.ctx.plan_id,
            model=self.model,
            sharding="equal" if chosen.sharding == "equal" else "asymmetric",
            ranks=chosen.ranks,
            ring=chosen.ring,
            estimates=chosen.estimates,
            warnings=warnings,
            solver=self._info(
                outcome.bound_ps, outcome.time_limited, chosen.objective_ps if own else None
            ),
            sources=self.sources,
        )

    def _info(
        self, bound_ps: int | None, time_limited: bool, objective_ps: int | None = None
    ) -> SolverInfo:
        """The solver's figures; its objective only when the plan is the solver's own."""
        return SolverInfo(
            wall_ms=round((time.perf_counter() - self.started) * 1e3, 3),
            objective=_ps_to_ms(objective_ps),
            bound=_ps_to_ms(bound_ps),
            time_limited=time_limited,
            workers=WORKERS,
            seed=SEED,
            version=SOLVER_VERSION,
        )

    def equal(self) -> tuple[Candidate | None, bool, list[str]]:
        """Today's even split over every node (and whether its ring is proven cheapest), or
        the reasons it does not exist or fit."""
        ctx = self.ctx
        layers = (0, ctx.spec.num_layers)
        p = ctx.problem()
        stage, reasons = equal_stage(p, ctx.cluster, layers, ctx.spec, self.seconds_left())
        if stage is None:
            return None, True, reasons
        candidate = build("equal", [stage], ctx)
        if not fits(candidate):
            return None, True, diagnose.equal_overflow(candidate.ranks, self.c.headroom)
        return candidate, stage.optimal, []

    def fixed(self, layout: Sequence[StageLayout]) -> Plan:
        """Each stage split as asked over its nodes and layers; optimal when every stage's
        split is proven the fastest for its nodes and layers."""
        stages, reasons = fixed_layout(self.ctx, layout, self.seconds_left)
        if stages is None:
            return self.infeasible(reasons)
        sharding = "equal" if all(s.split is LayoutSplit.EQUAL for s in layout) else "asymmetric"
        candidate = build(sharding, stages, self.ctx)
        limited = any(s.time_limited for s in stages)
        optimal = all(s.optimal for s in stages) and sharding != "equal"
        return self.feasible(candidate, Outcome(optimal, limited, None), [])

    def run(self) -> Plan:
        ctx = self.ctx
        out_of_range = beyond_model_range(ctx.spec, ctx.costs, ctx.cluster, self.c.overhead_bytes)
        if out_of_range:
            return self.infeasible(out_of_range)
        equal, ring_proven, eq_reasons = self.equal()
        if self.c.sharding == "equal" and self.c.parallelism != "pipeline":
            if equal is None:
                return self.infeasible(eq_reasons)
            return self.feasible(equal, Outcome(ring_proven, not ring_proven, None), [])
        if self.c.parallelism == "tensor":
            return self.tensor(equal, eq_reasons)
        return self.layouts(equal, eq_reasons)

    def tensor(self, equal: Candidate | None, eq_reasons: list[str]) -> Plan:
        """One stage over the used nodes: the solver's split against the even one."""
        ctx = self.ctx
        p = replace(ctx.problem(), time_limit_s=self.seconds_left())
        solution = solve(p)
        if solution.status == "infeasible":
            if equal is not None and solution.time_limited:
                outcome = Outcome(False, True, solution.bound_ps)
                return self.feasible(_with_equal(equal, equal), outcome, [self._limit_warning()])
            reasons = diagnose.infeasible(ctx, solution)
            if self.c.sharding == "auto":
                reasons += eq_reasons
            return self.infeasible(reasons, solution.time_limited)
        asym = build("asymmetric", [tensor_stage(ctx, p, solution)], ctx)
        outcome = Outcome(solution.status == "optimal", solution.time_limited, solution.bound_ps)
        return self.chosen(asym, outcome, equal)

    def layouts(self, equal: Candidate | None, eq_reasons: list[str]) -> Plan:
        """Pipelines and hybrids (and, in `auto`, the single stage among them)."""
        ctx = self.ctx
        found = search_layouts(ctx, self.c.parallelism, self.seconds_left())
        if found.stages is None:
            if equal is not None and found.time_limited and self.c.parallelism == "auto":
                outcome = Outcome(False, True, found.bound_ps)
                return self.feasible(_with_equal(equal, equal), outcome, [self._limit_warning()])
            if self.c.parallelism == "pipeline" and not found.time_limited:
                reasons = diagnose.pipeline_infeasible(ctx)
            else:
                reasons = diagnose.infeasible(
                    ctx, Solution("infeasible", time_limited=found.time_limited)
                )
            if self.c.parallelism == "auto" and self.c.sharding == "auto":
                reasons += eq_reasons
            return self.infeasible(reasons, found.time_limited)
        best = build("asymmetric", found.stages, ctx)
        outcome = Outcome(found.optimal, found.time_limited, found.bound_ps)
        return self.chosen(best, outcome, equal if self.c.parallelism == "auto" else None)

    def chosen(self, best: Candidate, outcome: Outcome, equal: Candidate | None) -> Plan:
        limited = outcome.time_limited
        warnings = [self._limit_warning(outcome, best)] if limited else []
        chosen = best
        if equal is not None:
            # `auto` prefers the even split when no slower; a time limit gives the best known.
            no_slower = equal.estimates.decode_ms_per_token <= best.estimates.decode_ms_per_token
            if no_slower and (self.c.sharding == "auto" or limited):
                chosen = equal
            chosen = _with_equal(chosen, equal)
        return self.feasible(chosen, outcome, warnings)

    def seconds_left(self) -> float:
        """The request's time limit covers all of planning, not only the search."""
        return max(self.c.time_limit_s - (time.perf_counter() - self.started), 0.001)

    def _limit_warning(self, outcome: Outcome | None = None, best: Candidate | None = None) -> str:
        limit = self.c.time_limit_s
        if outcome is None or best is None:
            return f"solver stopped at the {limit:g}s time limit before any split: the equal split"
        return (
            f"solver stopped at the {limit:g}s time limit: this is the best plan found, "
            f"within {_gap(best.objective_ps, outcome.bound_ps):.1f}% of the proven bound"
        )


@dataclass(frozen=True)
class Outcome:
    """What the search proved about the plan it returns."""

    optimal: bool
    time_limited: bool
    bound_ps: int | None


def _with_equal(chosen: Candidate, equal: Candidate) -> Candidate:
    update = {"equal_split_decode_ms": equal.estimates.decode_ms_per_token}
    chosen.estimates = chosen.estimates.model_copy(update=update)
    return chosen


def _check_objective(candidate: Candidate) -> None:
    """The plan's decode time is the objective the solver minimised: one model of cost."""
    objective = _ps_to_ms(candidate.objective_ps)
    decode = candidate.estimates.decode_ms_per_token
    if objective is None or abs(decode - objective) > INVARIANT_TOLERANCE_MS + 1e-9 * decode:
        raise RuntimeError(f"plan decode time {decode} ms differs from the objective {objective}")


def _ps_to_ms(ps: int | None) -> float | None:
    return None if ps is None else round(ps / 1e9, 6)


def _gap(objective_ps: int, bound_ps: int | None) -> float:
    if not objective_ps or bound_ps is None:
        return 0.0
    return 100 * (objective_ps - bound_ps) / objective_ps
