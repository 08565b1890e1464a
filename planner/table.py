"""A plan as a table a person reads in a terminal.

A single-stage (tensor-parallel) plan reads as it always has. A pipeline or hybrid plan adds
each rank's stage and layer range, and one summary line per stage: its layers, its ranks, the
tensor-parallel split inside it and its compute / all-reduce / transfer times.
"""

from __future__ import annotations

from protocol.deployment import Deployment
from protocol.measurements import FigureSource
from protocol.plan import Estimates, Plan, RankPlan, StageEstimate
from protocol.schema import Range


def _r(r: Range | None) -> str:
    if r is None:
        return "-"
    return f"{r[0]}-{r[1]}" if r[1] > r[0] else "none"


def _unit(largest: int) -> tuple[str, float]:
    """GB for real machines; MB for the scaled-down clusters of demos and tests."""
    return ("GB", 1e9) if largest >= 1e9 else ("MB", 1e6)


def _size(n: int, scale: float) -> str:
    return f"{n / scale:.1f}"


def stage_count(plan: Plan) -> int:
    return len({r.stage for r in plan.ranks})


def _columns(plan: Plan, staged: bool, unit: str, scale: float) -> list[list[str]]:
    """The header row, then one row per rank (stage and layers only for a pipeline)."""
    header = ["rank", "node", *(["stage", "layers"] if staged else [])]
    header += ["share", "q heads", "kv heads", "ffn", "experts", "lin heads"]
    header += [f"memory {unit} (used / budget)", "decode ms"]
    rows = [header]
    for r in plan.ranks:
        place = [str(r.stage), _r(r.layers)] if staged else []
        rows.append(
            [
                str(r.rank),
                r.node_id,
                *place,
                f"{r.share * 100:.1f}%",
                _r(r.q_heads),
                _r(r.kv_heads),
                _r(r.ffn),
                _r(r.experts),
                _r(r.linear_k_heads),
                f"{_size(r.memory_bytes.total, scale)} / {_size(r.budget_bytes, scale)}",
                f"{r.decode_ms:.2f}",
            ]
        )
    return rows


def stage_line(stage: StageEstimate, ranks: list[RankPlan]) -> str:
    """`stage 1: layers 40-80 (40), ranks 2,3 split 62/38%; compute … ms + all-reduce …`."""
    members = [r for r in ranks if r.rank in stage.ranks]
    total = sum(r.share for r in members)
    if len(members) > 1 and total > 0:
        split = "/".join(f"{100 * r.share / total:.0f}" for r in members)
        who = f"ranks {','.join(str(r) for r in stage.ranks)} split {split}%"
    else:
        who = f"rank {','.join(str(r) for r in stage.ranks)} alone"
    start, end = stage.layers
    return (
        f"stage {stage.stage}: layers {start}-{end} ({end - start}), {who}; "
        f"compute {stage.compute_ms:.2f} ms + all-reduce {stage.allreduce_ms:.2f} ms "
        f"+ transfer {stage.transfer_ms:.2f} ms"
    )


def _estimate_lines(plan: Plan, e: Estimates, staged: bool) -> list[str]:
    eq = (
        f"; equal split {e.equal_split_decode_ms:.2f} ms"
        if e.equal_split_decode_ms
        else "; equal split does not fit"
    )
    if staged:
        parts = (
            f"stages' compute {sum(s.compute_ms for s in e.stages):.2f} ms + all-reduce "
            f"{sum(s.allreduce_ms for s in e.stages):.2f} ms + transfer {e.transfer_ms:.2f} ms"
        )
    else:
        parts = f"slowest rank {e.compute_ms:.2f} ms + all-reduce {e.allreduce_ms:.2f} ms"
    lines = [stage_line(s, plan.ranks) for s in e.stages] if staged else []
    lines.append(
        f"decode ≈ {e.decode_ms_per_token:.2f} ms/token ({e.tokens_per_s:.1f} tok/s): "
        f"{parts}; fluid bound {e.fluid_bound_ms:.2f} ms{eq}"
    )
    order = "pipeline" if staged else "ring"
    lines.append(f"{order}: {' -> '.join(plan.ring)}   plan {plan.plan_id[:12]}")
    return lines


def render(plan: Plan) -> str:
    if not plan.feasible:
        lines = [f"infeasible (plan {plan.plan_id[:12]})"]
        lines += [f"  - {r}" for r in plan.reasons]
        return "\n".join(lines)
    m = plan.model
    stages = stage_count(plan)
    staged = stages > 1
    unit, scale = _unit(max((r.budget_bytes for r in plan.ranks), default=0))
    rows = _columns(plan, staged, unit, scale)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = []
    if m is not None:
        q = f"{m.bits}-bit" if m.bits else "unquantized"
        layout = f"{stages} pipeline stages" if staged else "one stage"
        lines.append(
            f"{m.model_type}, {_size(m.weight_bytes, scale)} {unit} ({q}); "
            f"{plan.sharding} split over {len(plan.ranks)} ranks"
            f"{f' in {layout}' if staged else ''}, status {plan.status}"
        )
    lines += [fmt.format(*row).rstrip() for row in rows]
    if plan.estimates is not None:
        lines += _estimate_lines(plan, plan.estimates, staged)
    if plan.sources:
        lines.append("figures: " + sources_text(plan.sources))
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def agents_table(d: Deployment) -> str:
    """A deployment's nodes in topology order: the rank, stage and layers the plan gives each,
    and what its agent last reported."""
    ranks = {r.node_id: r for r in d.plan.ranks}
    rows = [["node", "rank", "stage", "layers", "agent"]]
    for n in d.spec.topology.nodes:
        r, a = ranks.get(n.id), d.agents.get(n.id)
        place = [str(r.rank), str(r.stage), _r(r.layers)] if r else ["-", "-", "not used"]
        report: str = "no report yet" if a is None else a.state
        if a is not None and a.reason:
            report += f": {a.reason}"
        rows.append([n.id, *place, report])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    head = f"deployment {d.name}, revision {d.revision}"
    return "\n".join([head, *(fmt.format(*row).rstrip() for row in rows)])


def sources_text(sources: dict[str, FigureSource]) -> str:
    """ "measured: node:a, link:a-b; assumed: node:b" (the kinds in a fixed order)."""
    parts = []
    for kind in FigureSource:
        named = sorted(k for k, v in sources.items() if v == kind)
        if named:
            parts.append(f"{kind.value}: {', '.join(named)}")
    return "; ".join(parts)
