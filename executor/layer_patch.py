"""Patch mlx-lm's decoder layers to run on a rank's slices.

Column-parallel layers keep output rows; row-parallel layers keep input columns and their
block's output is all-summed (`AllSum`). MoE blocks keep their own routing (mlx-lm's code,
operation for operation) and hold whole experts: `LocalExperts` answers for this rank's
experts and gives zeros for the others, so the block's weighted sum is this rank's part and
one all-sum completes it. A rank with an empty range for a block contributes zeros (`Zeros`)
but still takes part in every collective, so every rank steps in lockstep.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from executor.families import ATTENTION_HEAD_ATTRS, Ranges, size
from executor.stage_links import StageLinks
from protocol.model_spec import ModelSpec, QKNorm


def group_sum(x: mx.array, group: Any) -> mx.array:
    """The all-sum over the ranks sharing these layers: the whole group, or the rank's pipeline
    stage (`StageLinks`)."""
    if isinstance(group, StageLinks):
        return group.all_sum(x)
    out: mx.array = mx.distributed.all_sum(x, group=group)
    return out


class AllSum(nn.Module):
    """Runs a block on this rank's slice and sums the partial outputs over the group."""

    def __init__(self, inner: nn.Module, group: Any) -> None:
        super().__init__()
        self.inner = inner
        self.group = group

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        return group_sum(self.inner(x, *args, **kwargs), self.group)


class Zeros(nn.Module):
    """A block this rank holds nothing of: a zero partial output, caches kept in step, and
    the block's other collectives (`norm_sums` statistics all-sums first) joined with zeros."""

    def __init__(self, hidden: int, group: Any, linear: bool = False, norm_sums: int = 0) -> None:
        super().__init__()
        self.hidden = hidden
        self.group = group
        self.linear = linear
        self.norm_sums = norm_sums

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        # Blocks take (x, mask, cache) or, in Ministral 3, (x, attn_scale, mask, cache).
        cache = kwargs["cache"] if "cache" in kwargs else args[-1] if len(args) >= 2 else None
        b, length = x.shape[0], x.shape[1]
        if cache is not None:
            if self.linear:
                cache.advance(length)
            else:
                # Zero KV heads: the cache only advances its offset, which the masks read.
                empty = mx.zeros((b, 0, length, 1), dtype=x.dtype)
                cache.update_and_fetch(empty, empty)
        # Collectives run in the order MLX schedules them, which follows data dependencies
        # only: seeded from x, these cannot run before the previous blocks' all-sums.
        link = (x[..., :1] * 0).astype(mx.float32)
        for _ in range(self.norm_sums):
            link = group_sum(link * 0, self.group)
        out = mx.zeros((b, length, self.hidden), dtype=x.dtype) + (link * 0).astype(x.dtype)
        return group_sum(out, self.group)


class LocalExperts(nn.Module):
    """A SwitchGLU holding experts [first, first + local): picks of other ranks' experts
    give zeros, so the MoE block's weighted sum over picks is this rank's share."""

    def __init__(self, inner: nn.Module, first: int, local: int, hidden: int) -> None:
        super().__init__()
        self.inner = inner
        self.first = first
        self.local = local
        self.hidden = hidden

    def __call__(self, x: mx.array, indices: mx.array) -> mx.array:
        if not self.local:
            return mx.zeros((*indices.shape, self.hidden), dtype=x.dtype)
        mine = (indices >= self.first) & (indices < self.first + self.local)
        y = self.inner(x, mx.clip(indices - self.first, 0, self.local - 1))
        return y * mine[..., None].astype(y.dtype)


class ZeroMLP(nn.Module):
    """A shared expert this rank holds no columns of."""

    def __call__(self, x: mx.array) -> mx.array:
        return mx.zeros_like(x)


class FullWidthRMSNorm(nn.Module):
    """RMSNorm over all heads when each rank holds some (MiniMax's q/k norm): the squared sums
    are all-summed, as mlx-lm's `ShardedRMSNorm` does, but divided by the full width (ranks
    hold unequal widths) and counting a copied KV head once: the rank holding the head's
    first query counts it, the others skip their first `skip` columns."""

    def __init__(self, norm: nn.Module, full_width: int, skip: int, group: Any) -> None:
        super().__init__()
        self.weight = norm.weight
        self.eps = norm.eps
        self.full_width = full_width
        self.skip = skip
        self.group = group

    def __call__(self, x: mx.array) -> mx.array:
        xf = x.astype(mx.float32)
        norm2 = xf[..., self.skip :].square().sum(-1, keepdims=True)
        norm2 = group_sum(norm2, self.group)
        scale = mx.rsqrt(norm2 / self.full_width + self.eps)
        return (xf * scale * self.weight).astype(x.dtype)


def _full_width_norms(attn: nn.Module, spec: ModelSpec, ranges: Ranges, group: Any) -> None:
    hd = spec.head_dim
    q0, k0 = ranges.q_heads[0], ranges.kv_heads[0]
    # Only a rank whose queries start inside a group holds a copy: of its first KV head.
    copied = q0 > k0 * spec.q_per_kv
    attn.q_norm = FullWidthRMSNorm(attn.q_norm, spec.q_heads * hd, 0, group)
    attn.k_norm = FullWidthRMSNorm(attn.k_norm, spec.kv_heads * hd, hd if copied else 0, group)


def set_attention_heads(attn: nn.Module, q: int, kv: int) -> None:
    for names, value in zip(ATTENTION_HEAD_ATTRS, (q, kv)):
        for n in names:
            if hasattr(attn, n):
                setattr(attn, n, value)


def set_deltanet_heads(la: nn.Module, spec: ModelSpec, ranges: Ranges) -> None:
    nk, nv = size(ranges.linear_k_heads), size(ranges.linear_v_heads)
    la.num_k_heads = nk
    la.num_v_heads = nv
    la.key_dim = nk * spec.lin_k_dim
    la.value_dim = nv * spec.lin_v_dim
    la.conv_dim = 2 * la.key_dim + la.value_dim
    la.conv1d.groups = la.conv_dim


def _patch_attention(layer: nn.Module, spec: ModelSpec, ranges: Ranges, group: Any) -> None:
    hidden = spec.hidden
    full_width = spec.qk_norm is QKNorm.FULL_WIDTH
    if getattr(layer, "is_linear", False):
        if size(ranges.linear_k_heads):
            set_deltanet_heads(layer.linear_attn, spec, ranges)
            layer.linear_attn = AllSum(layer.linear_attn, group)
        else:
            layer.linear_attn = Zeros(hidden, group, linear=True)
    elif size(ranges.q_heads):
        set_attention_heads(layer.self_attn, size(ranges.q_heads), size(ranges.kv_heads))
        if full_width:
            _full_width_norms(layer.self_attn, spec, ranges, group)
        layer.self_attn = AllSum(layer.self_attn, group)
    else:
        layer.self_attn = Zeros(hidden, group, norm_sums=2 if full_width else 0)


def patch_layer(layer: nn.Module, spec: ModelSpec, ranges: Ranges, group: Any) -> None:
    """Point a decoder layer's blocks at their local sizes and add the all-sums."""
    _patch_attention(layer, spec, ranges, group)
    names = spec.moe_names
    attr = names.block if hasattr(layer, names.block) else "mlp"
    block = getattr(layer, attr)
    experts = getattr(block, names.experts, None)
    if experts is not None:
        first, local = ranges.experts[0], size(ranges.experts)
        setattr(block, names.experts, LocalExperts(experts, first, local, spec.hidden))
        if hasattr(block, names.shared) and not size(ranges.ffn):
            setattr(block, names.shared, ZeroMLP())
        setattr(layer, attr, AllSum(block, group))
    elif size(ranges.ffn):
        setattr(layer, attr, AllSum(block, group))
    else:
        setattr(layer, attr, Zeros(spec.hidden, group))
