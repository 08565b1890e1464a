"""Turn per-node unit counts into ranks with half-open ranges, memory and time figures."""

from __future__ import annotations

from planner.calibration import fixed_us, read_ms
from planner.costs import Unit, UnitCosts
from planner.problem import NodeShare, budget_bytes
from protocol.model_spec import ModelSpec
from protocol.plan import MemoryBreakdown, RankPlan
from protocol.schema import Node, Range


def _cursor_ranges(sizes: list[int], scale: int = 1) -> list[Range]:
    out, start = [], 0
    for s in sizes:
        out.append((start * scale, (start + s) * scale))
        start += s
    return out


def attention_ranges(shares: list[NodeShare], g: int) -> list[tuple[Range, Range]]:
    """(q_heads, kv_heads) per share: whole groups first, then the split groups' slots."""
    group = 0
    whole: dict[int, tuple[int, int]] = {}
    for i, s in enumerate(shares):
        whole[i] = (group, group + s.kv_groups)
        group += s.kv_groups
    slot_group: dict[int, int] = {}
    for slot in sorted({s.partial_slot for s in shares if s.partial_slot is not None}):
        slot_group[slot] = group
        group += 1
    offset = dict.fromkeys(slot_group, 0)
    out: list[tuple[Range, Range]] = []
    for i, s in enumerate(shares):
        if s.partial_slot is None:
            a, b = whole[i]
            out.append(((a * g, b * g), (a, b)))
        else:
            kv = slot_group[s.partial_slot]
            start = kv * g + offset[s.partial_slot]
            offset[s.partial_slot] += s.partial_q
            out.append(((start, start + s.partial_q), (kv, kv + 1)))
    return out


def rank_plans(
    spec: ModelSpec,
    costs: UnitCosts,
    shares: list[NodeShare],
    nodes: dict[str, Node],
    headroom: float,
    overhead: int,
    stage: int = 0,
    layers: Range | None = None,
    first_rank: int = 0,
) -> list[RankPlan]:
    """Ranks in the order of `shares` (the stage's ring order), numbered from `first_rank`,
    running decoder layers `layers` (all by default); `costs` are those layers' costs."""
    start, end = layers or (0, spec.num_layers)
    attention = attention_ranges(shares, spec.q_per_kv)
    counts = [s.counts() for s in shares]
    ffn = _cursor_ranges([c[Unit.FFN_BLOCK] for c in counts], spec.ffn_block)
    experts = _cursor_ranges([c[Unit.EXPERT] for c in counts])
    lin_k = _cursor_ranges([c[Unit.LIN_K_HEAD] for c in counts])
    lin_v = _cursor_ranges([c[Unit.LIN_K_HEAD] for c in counts], spec.v_per_k or 1)
    sharded_total = costs.sharded_weight or 1
    plans = []
    for i, s in enumerate(shares):
        node = nodes[s.node_id]
        weights = costs.weights_of(counts[i])
        cache = costs.cache_of(counts[i])
        plans.append(
            RankPlan(
                rank=first_rank + i,
                node_id=s.node_id,
                address=node.address,
                q_heads=attention[i][0],
                kv_heads=attention[i][1],
                ffn=ffn[i],
                experts=experts[i] if spec.experts else None,
                linear_k_heads=lin_k[i] if spec.lin_layers else None,
                linear_v_heads=lin_v[i] if spec.lin_layers else None,
                share=round((weights - costs.replicated_weight) / sharded_total, 6),
                memory_bytes=MemoryBreakdown(
                    weights=weights,
                    kv_cache=cache,
                    overhead=overhead,
                    total=weights + cache + overhead,
                ),
                budget_bytes=budget_bytes(node, headroom),
                decode_ms=round(
                    read_ms(costs.read_of(counts[i]), node.bandwidth_gbps)
                    + fixed_us(end - start) / 1e3,
                    6,
                ),
                stage=stage,
                layers=(start, end),
            )
        )
    return plans
