"""Why nothing fits, in numbers a user can act on."""

from __future__ import annotations

from dataclasses import replace

from planner.context import PlanningContext
from planner.costs import UNITS, Unit, UnitCosts, unit_costs
from planner.problem import Solution
from planner.solver import solve
from protocol.model_spec import KV_CACHE_STEP
from protocol.plan import RankPlan

CONTEXT_SEARCH_TIME_S = 1.0


def gb(n: float) -> str:
    """A byte count in the unit that fits it: GB for machines, MB for scaled-down demos."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _pct(headroom: float) -> str:
    return f"{headroom * 100:g}% headroom"


def equal_overflow(ranks: list[RankPlan], headroom: float) -> list[str]:
    return [
        f"equal split: rank {r.rank} ({r.node_id}) needs {gb(r.memory_bytes.total)}, "
        f"the node offers {gb(r.budget_bytes)} after {_pct(headroom)}"
        for r in ranks
        if r.memory_bytes.total > r.budget_bytes
    ]


def _unit_names() -> dict[Unit, str]:
    return {
        Unit.Q_HEAD: "query head",
        Unit.KV_HEAD: "KV head",
        Unit.FFN_BLOCK: "FFN block",
        Unit.EXPERT: "expert",
        Unit.LIN_K_HEAD: "linear-attention head",
    }


def infeasible(ctx: PlanningContext, solution: Solution) -> list[str]:
    c, costs, cluster = ctx.request.constraints, ctx.costs, ctx.cluster
    if solution.time_limited:
        return [
            f"no plan found within the {c.time_limit_s:g}s time limit; "
            "raise constraints.time_limit_s or simplify the topology"
        ]
    fixed = costs.replicated_held + c.overhead_bytes
    budgets = cluster.budgets
    reasons: list[str] = []
    able = {n: b for n, b in budgets.items() if b >= fixed}
    latent = ""
    if costs.replicated_cache:
        latent = f" + {gb(costs.replicated_cache)} latent KV cache for {c.context_tokens} tokens"
    for n in sorted(set(budgets) - set(able)):
        reasons.append(
            f"node {n} offers {gb(budgets[n])} after {_pct(c.headroom)}, less than what every "
            f"rank holds whole ({gb(costs.replicated_weight)} of embeddings, norms and routers"
            f"{latent} + {gb(c.overhead_bytes)} runtime overhead)"
        )
    if costs.replicated_cache:
        reasons.append(replicated_cache_reason(costs, c.context_tokens))
    sharded = costs.sharded_held
    cache = costs.cache_of(costs.total_units)
    k = max(len(able), 1)
    needed = sharded + k * fixed
    offered = sum(able.values())
    if needed > offered or not able:
        reasons.insert(
            0,
            f"needs {gb(needed)} (weights {gb(costs.total_weight)}, KV cache and state "
            f"{gb(cache)} for {c.context_tokens} tokens, {gb(fixed)} held by each of {k} "
            f"ranks), the cluster offers {gb(offered)} after {_pct(c.headroom)}",
        )
    else:
        names = _unit_names()
        biggest = max(
            (u for u in UNITS if costs.total_units[u]),
            key=costs.held,
        )
        reasons.insert(
            0,
            f"the total fits ({gb(needed)} of {gb(offered)}) but no split into whole units "
            f"does: one {names[biggest]} weighs {gb(costs.held(biggest))}",
        )
    largest = largest_context(ctx)
    if largest is not None and largest < c.context_tokens:
        reasons.append(f"largest context that fits: {largest} tokens")
    elif largest is None:
        reasons.append("it does not fit even with a minimal context")
    return reasons


def replicated_cache_reason(costs: UnitCosts, tokens: int) -> str:
    return (
        f"the latent KV cache of multi-head latent attention ({gb(costs.replicated_cache)} for "
        f"{tokens} tokens) is held whole by every rank: more ranks do not shrink it, a shorter "
        "context does"
    )


def largest_context(ctx: PlanningContext) -> int | None:
    """Binary search over the KV-cache steps for the longest context with a feasible split."""
    c = ctx.request.constraints

    def fits(tokens: int) -> bool:
        costs = unit_costs(ctx.spec, tokens, c.batch_size, c.kv_cache_bytes_per_element)
        problem = ctx.problem(costs)
        problem = replace(problem, time_limit_s=CONTEXT_SEARCH_TIME_S, feasibility_only=True)
        return solve(problem).status != "infeasible"

    lo, hi = 1, max(c.context_tokens // KV_CACHE_STEP, 1)
    if not fits(lo * KV_CACHE_STEP):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid * KV_CACHE_STEP):
            lo = mid
        else:
            hi = mid - 1
    return lo * KV_CACHE_STEP


def pipeline_infeasible(ctx: PlanningContext) -> list[str]:
    """Why no pipeline of single nodes holds the model, in numbers."""
    c, spec, cluster = ctx.request.constraints, ctx.spec, ctx.cluster
    nodes, layers = len(cluster.nodes), spec.num_layers
    if not c.allow_unused_nodes and nodes > layers:
        return [
            f"pipeline: {nodes} nodes must each run a stage of one layer or more, and the model "
            f"has {layers} layers; set constraints.allow_unused_nodes to true"
        ]
    whole = ctx.table.costs()
    need = whole.replicated_held + whole.sharded_held
    offer = sum(max(0, b - c.overhead_bytes) for b in cluster.budgets.values())
    return [
        f"pipeline: the layers, embeddings and output head need {gb(need)}; the nodes offer "
        f"{gb(offer)} after {_pct(c.headroom)} and {gb(c.overhead_bytes)} of overhead each "
        "(a layer is never split across nodes in a pipeline)"
    ]
