"""A plan as a table a person reads in a terminal."""

from __future__ import annotations

from protocol.measurements import FigureSource
from protocol.plan import Plan
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


def render(plan: Plan) -> str:
    if not plan.feasible:
        lines = [f"infeasible (plan {plan.plan_id[:12]})"]
        lines += [f"  - {r}" for r in plan.reasons]
        return "\n".join(lines)
    m = plan.model
    unit, scale = _unit(max((r.budget_bytes for r in plan.ranks), default=0))
    header = [
        "rank",
        "node",
        "share",
        "q heads",
        "kv heads",
        "ffn",
        "experts",
        "lin heads",
        f"memory {unit} (used / budget)",
        "decode ms",
    ]
    rows = []
    for r in plan.ranks:
        rows.append(
            [
                str(r.rank),
                r.node_id,
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
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = []
    if m is not None:
        q = f"{m.bits}-bit" if m.bits else "unquantized"
        lines.append(
            f"{m.model_type}, {_size(m.weight_bytes, scale)} {unit} ({q}); "
            f"{plan.sharding} split over {len(plan.ranks)} ranks, status {plan.status}"
        )
    lines.append(fmt.format(*header))
    lines += [fmt.format(*row) for row in rows]
    e = plan.estimates
    if e is not None:
        eq = (
            f"; equal split {e.equal_split_decode_ms:.2f} ms"
            if e.equal_split_decode_ms
            else "; equal split does not fit"
        )
        lines.append(
            f"decode ≈ {e.decode_ms_per_token:.2f} ms/token ({e.tokens_per_s:.1f} tok/s): "
            f"slowest rank {e.compute_ms:.2f} ms + all-reduce {e.allreduce_ms:.2f} ms; "
            f"fluid bound {e.fluid_bound_ms:.2f} ms{eq}"
        )
        lines.append(f"ring: {' -> '.join(plan.ring)}   plan {plan.plan_id[:12]}")
    if plan.sources:
        lines.append("figures: " + sources_text(plan.sources))
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def sources_text(sources: dict[str, FigureSource]) -> str:
    """ "measured: node:a, link:a-b; assumed: node:b" (the kinds in a fixed order)."""
    parts = []
    for kind in FigureSource:
        named = sorted(k for k, v in sources.items() if v == kind)
        if named:
            parts.append(f"{kind.value}: {', '.join(named)}")
    return "; ".join(parts)
