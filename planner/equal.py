"""Today's even split (MLX `shard_linear`, mlx-lm, exo): every dimension cut into N equal parts.

Kept for comparison and for `sharding: equal | auto`. It fails where a dimension does not
divide by N, which is why 3-node clusters and 2-KV-head models on 3 nodes do not run today.
"""

from __future__ import annotations

from planner.costs import Unit, UnitCosts
from planner.problem import NodeShare
from protocol.model_spec import ModelSpec


def equal_shares(
    spec: ModelSpec, costs: UnitCosts, node_ids: list[str]
) -> tuple[list[NodeShare], list[str]]:
    """The even split over `node_ids`, or the reasons it does not exist."""
    n = len(node_ids)
    reasons: list[str] = []
    g = spec.q_per_kv

    def divides(total: int, what: str) -> int:
        if total % n:
            reasons.append(f"equal split: {total} {what} do not divide over {n} ranks")
            return 0
        return total // n

    q_each = divides(spec.q_heads, "query heads")
    if spec.kv_heads >= n:
        kv_each = divides(spec.kv_heads, "KV heads")
        per_group = 0
    elif n % spec.kv_heads:
        reasons.append(
            f"equal split: {n} ranks cannot share {spec.kv_heads} KV heads evenly "
            f"(replication needs the rank count to be a multiple of the KV heads)"
        )
        kv_each, per_group = 0, 0
    else:
        kv_each, per_group = 0, n // spec.kv_heads
    ffn_blocks = costs.total_units[Unit.FFN_BLOCK]
    ffn_each = 0
    if spec.ffn_dim:
        cols = divides(spec.ffn_dim, "FFN columns")
        if cols and ffn_blocks % n:
            # A block is whole quantization groups of the dense MLP and the shared expert.
            reasons.append(
                f"equal split: {cols} FFN columns a rank are not whole blocks of "
                f"{spec.ffn_block} (quantization groups of every FFN the range covers)"
            )
        ffn_each = ffn_blocks // n if not reasons else 0
    experts_each = divides(spec.experts, "experts") if spec.experts else 0
    lin_each = divides(spec.lin_k_heads, "linear-attention key heads") if spec.lin_layers else 0
    if reasons:
        return [], reasons
    shares = []
    for rank, node_id in enumerate(node_ids):
        shares.append(
            NodeShare(
                node_id=node_id,
                kv_groups=kv_each,
                partial_slot=rank // per_group if per_group else None,
                partial_q=q_each if per_group else 0,
                sharded={
                    Unit.FFN_BLOCK: ffn_each,
                    Unit.EXPERT: experts_each,
                    Unit.LIN_K_HEAD: lin_each,
                },
                q_per_kv=g,
            )
        )
    return shares, []
