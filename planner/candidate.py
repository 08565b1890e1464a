"""A plan candidate from its stages: ranks numbered stage by stage, per-stage and total
estimates. The decode time is Σ stages (slowest rank + all-reduces) + the transfers between
them, the same sum the searches minimise (`planner.stages`)."""

from __future__ import annotations

from dataclasses import dataclass

from planner.calibration import effective_bandwidth_gbps, fixed_us
from planner.context import PlanningContext
from planner.costs import UnitCosts
from planner.layout import rank_plans
from planner.stages import StageSolution, led_by, transfers_ps
from protocol.plan import Estimates, RankPlan, StageEstimate

PS_PER_MS = 1e9


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
class Candidate:
    sharding: str
    ranks: list[RankPlan]
    ring: list[str]
    """Every used node in rank order: stage by stage, each stage in its ring order."""
    estimates: Estimates
    objective_ps: int
    """Σ stages' objectives + transfers: what the reported decode time must equal."""
    stages: list[StageSolution]


def _ms(ps: int) -> float:
    return round(ps / PS_PER_MS, 6)


def build(sharding: str, stages: list[StageSolution], ctx: PlanningContext) -> Candidate:
    c, spec, cluster = ctx.request.constraints, ctx.spec, ctx.cluster
    ranks: list[RankPlan] = []
    entries: list[StageEstimate] = []
    moves = transfers_ps(cluster, [s.ring for s in stages])
    stages = [led_by(s, leader) for s, (_, leader) in zip(stages, moves)]
    transfers = [ps for ps, _ in moves]
    decode_ms, used_bound = 0.0, 0.0
    for number, (stage, transfer) in enumerate(zip(stages, transfers)):
        mine = rank_plans(
            spec,
            stage.costs,
            stage.shares,
            cluster.nodes,
            c.headroom,
            c.overhead_bytes,
            stage=number,
            layers=stage.layers,
            first_rank=len(ranks),
        )
        compute = max(r.decode_ms for r in mine)
        allreduce = _ms(stage.allreduce_ps)
        entries.append(
            StageEstimate(
                stage=number,
                layers=stage.layers,
                ranks=[r.rank for r in mine],
                compute_ms=round(compute, 6),
                allreduce_ms=allreduce,
                transfer_ms=_ms(transfer),
            )
        )
        decode_ms += compute + (stage.allreduce_ps + transfer) / PS_PER_MS
        bws = [cluster.nodes[n].bandwidth_gbps for n in stage.ring]
        used_bound += fluid_used_ms(stage.costs, bws, fixed_us(stage.count) / 1e3)
        ranks += mine
    slowest = max(ranks, key=lambda r: (r.decode_ms, -r.rank))
    all_bw = [n.bandwidth_gbps for n in cluster.nodes.values()]
    estimates = Estimates(
        decode_ms_per_token=round(decode_ms, 6),
        tokens_per_s=round(1e3 / decode_ms, 3) if decode_ms > 0 else 0.0,
        bottleneck_rank=slowest.rank,
        compute_ms=round(sum(e.compute_ms for e in entries), 6),
        allreduce_ms=round(sum(e.allreduce_ms for e in entries), 6),
        fluid_bound_ms=round(fluid_bound_ms(ctx.costs, all_bw, cluster.fixed_us / 1e3), 6),
        fluid_bound_used_ms=round(used_bound, 6),
        transfer_ms=round(sum(e.transfer_ms for e in entries), 6),
        stages=entries,
    )
    objective = sum(s.objective_ps for s in stages) + sum(transfers)
    ring = [n for s in stages for n in s.ring]
    return Candidate(sharding, ranks, ring, estimates, objective, stages)


def fits(candidate: Candidate) -> bool:
    return all(r.memory_bytes.total <= r.budget_bytes for r in candidate.ranks)
