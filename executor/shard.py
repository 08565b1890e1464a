"""Cut tensors to a rank's ranges and patch mlx-lm modules to run on their slices.

Column-parallel layers keep output rows; row-parallel layers keep input columns and their
block's output is all-summed (`AllSum`); MoE blocks keep whole experts (`ExpertParallelMoE`).
A rank with an empty range for a block contributes zeros (`Zeros`) but still takes part in
the all-sum, so every rank steps in lockstep.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from executor.families import (
    ATTENTION_HEAD_ATTRS,
    Axis,
    Ranges,
    Segments,
    rules_for,
    size,
    split_layer_name,
)
from protocol.model_spec import ModelSpec, Quant

PARAM_LEAVES = ("weight", "scales", "biases", "bias")


class SliceError(ValueError):
    """A slice that cannot be taken (e.g. not aligned to the quantization group)."""


def rule_key(module: str, leaf: str) -> tuple[str, str]:
    """(module path the rule table uses, parameter leaf)."""
    if leaf in PARAM_LEAVES:
        return module, leaf
    return f"{module}.{leaf}", "weight"  # bare arrays such as linear_attn.dt_bias


def _take(a: mx.array, axis: int, segments: Segments) -> mx.array:
    parts = []
    for start, end in segments:
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, end)
        parts.append(a[tuple(index)])
    out = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=axis)
    # A copy, so the full tensor's buffer can be freed once this slice is evaluated.
    return mx.contiguous(out)


def _scale(segments: Segments, num: int, den: int, name: str) -> Segments:
    out = []
    for a, b in segments:
        if (a * num) % den or (b * num) % den:
            raise SliceError(
                f"{name}: columns [{a}, {b}) are not aligned to the quantization "
                f"(a multiple of {den // num if num == 1 else f'{den}/{num}'} is needed)"
            )
        out.append((a * num // den, b * num // den))
    return out


def slice_param(
    name: str,
    leaf: str,
    array: mx.array,
    axis: Axis,
    segments: Segments,
    quant: Quant | None,
    keep_row_parallel_bias: bool,
) -> mx.array:
    if axis == "expert":
        return _take(array, 0, segments)
    if axis == "out":
        return _take(array, 0, segments)
    # Row-parallel: cut input columns; the bias is added after the all-sum, so once.
    if leaf == "bias":
        return array if keep_row_parallel_bias else mx.zeros_like(array)
    if (
        quant is None
        or leaf not in ("weight", "scales", "biases")
        or array.dtype
        not in (
            mx.uint32,
            mx.float16,
            mx.bfloat16,
            mx.float32,
        )
    ):
        return _take(array, array.ndim - 1, segments)
    if leaf == "weight" and array.dtype == mx.uint32:
        return _take(array, array.ndim - 1, _scale(segments, quant.bits, 32, name))
    if leaf in ("scales", "biases"):
        return _take(array, array.ndim - 1, _scale(segments, 1, quant.group_size, name))
    return _take(array, array.ndim - 1, segments)


def quant_for(
    spec_quant: Quant | None, overrides: dict[str, Quant], module_path: str
) -> Quant | None:
    return overrides.get(module_path, spec_quant)


def slice_weights(
    weights: dict[str, mx.array],
    model_type: str,
    spec: ModelSpec,
    ranges: Ranges,
    overrides: dict[str, Quant],
    rank: int,
) -> dict[str, mx.array]:
    """This rank's slice of each named tensor (replicated ones unchanged)."""
    rules = rules_for(model_type)
    out = {}
    for name, array in weights.items():
        _, module, leaf = split_layer_name(name)
        key, leaf_kind = rule_key(module, leaf)
        rule = rules.get(key)
        if rule is None:
            out[name] = array
            continue
        axis, segments_fn = rule
        segments = segments_fn(spec, ranges)
        full_module = name.rpartition(".")[0]
        quant = quant_for(spec.quant, overrides, full_module)
        out[name] = slice_param(name, leaf_kind, array, axis, segments, quant, rank == 0)
    return out


# ---- module patches ---------------------------------------------------------------------


class AllSum(nn.Module):
    """Runs a block on this rank's slice and sums the partial outputs over the group."""

    def __init__(self, inner: nn.Module, group: Any) -> None:
        super().__init__()
        self.inner = inner
        self.group = group

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        return mx.distributed.all_sum(self.inner(x, *args, **kwargs), group=self.group)


class Zeros(nn.Module):
    """A block this rank holds nothing of: a zero partial output, caches kept in step."""

    def __init__(self, hidden: int, group: Any, linear: bool = False) -> None:
        super().__init__()
        self.hidden = hidden
        self.group = group
        self.linear = linear

    def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
        b, length = x.shape[0], x.shape[1]
        if cache is not None:
            if self.linear:
                cache.advance(length)
            else:
                # Zero KV heads: the cache only advances its offset, which the masks read.
                empty = mx.zeros((b, 0, length, 1), dtype=x.dtype)
                cache.update_and_fetch(empty, empty)
        return mx.distributed.all_sum(
            mx.zeros((b, length, self.hidden), dtype=x.dtype), group=self.group
        )


class ExpertParallelMoE(nn.Module):
    """A Qwen3 MoE block holding experts [first, first + local): the router sees all experts,
    each rank computes only the routed picks that are its own, then one all-sum."""

    def __init__(self, block: nn.Module, first: int, local: int, group: Any, shared: bool) -> None:
        super().__init__()
        self.gate = block.gate
        self.switch_mlp = block.switch_mlp
        if shared:
            self.shared_expert = block.shared_expert
            self.shared_expert_gate = block.shared_expert_gate
        self.has_shared = shared
        self.top_k = block.top_k
        self.norm_topk_prob = block.norm_topk_prob
        self.first = first
        self.local = local
        self.group = group

    def __call__(self, x: mx.array) -> mx.array:
        # The routing below mirrors mlx-lm's Qwen3 MoE blocks operation for operation.
        gates = mx.softmax(self.gate(x), axis=-1, precise=True)
        k = self.top_k
        inds = mx.stop_gradient(mx.argpartition(gates, kth=-k, axis=-1)[..., -k:])
        scores = mx.take_along_axis(gates, inds, axis=-1)
        if self.norm_topk_prob:
            scores = scores / mx.sum(scores, axis=-1, keepdims=True)
        if self.local:
            mine = (inds >= self.first) & (inds < self.first + self.local)
            local_inds = mx.clip(inds - self.first, 0, self.local - 1)
            y = self.switch_mlp(x, local_inds)
            weights = mx.where(mine, scores, mx.zeros_like(scores))
            y = (y * weights[..., None]).sum(axis=-2).astype(y.dtype)
        else:
            y = mx.zeros_like(x)
        if self.has_shared:
            shared = self.shared_expert(x)
            y = y + mx.sigmoid(self.shared_expert_gate(x)) * shared
        return mx.distributed.all_sum(y, group=self.group)


def set_attention_heads(attn: nn.Module, q: int, kv: int) -> None:
    for names, value in zip(ATTENTION_HEAD_ATTRS, (q, kv)):
        for n in names:
            if hasattr(attn, n):
                setattr(attn, n, value)


def set_deltanet_heads(la: nn.Module, spec: ModelSpec, ranges: Ranges) -> None:
    nk, nv = size(ranges.lin_k), size(ranges.lin_v)
    la.num_k_heads = nk
    la.num_v_heads = nv
    la.key_dim = nk * spec.lin_k_dim
    la.value_dim = nv * spec.lin_v_dim
    la.conv_dim = 2 * la.key_dim + la.value_dim
    la.conv1d.groups = la.conv_dim


def patch_layer(layer: nn.Module, spec: ModelSpec, ranges: Ranges, group: Any) -> None:
    """Point a decoder layer's blocks at their local sizes and add the all-sums."""
    hidden = spec.hidden
    if getattr(layer, "is_linear", False):
        if size(ranges.lin_k):
            set_deltanet_heads(layer.linear_attn, spec, ranges)
            layer.linear_attn = AllSum(layer.linear_attn, group)
        else:
            layer.linear_attn = Zeros(hidden, group, linear=True)
    elif size(ranges.q):
        set_attention_heads(layer.self_attn, size(ranges.q), size(ranges.kv))
        layer.self_attn = AllSum(layer.self_attn, group)
    else:
        layer.self_attn = Zeros(hidden, group)

    mlp = layer.mlp
    if hasattr(mlp, "switch_mlp"):
        # The shared expert's columns are this rank's `ffn` range, which may be empty.
        shared = hasattr(mlp, "shared_expert") and size(ranges.ffn) > 0
        layer.mlp = ExpertParallelMoE(mlp, ranges.expert[0], size(ranges.expert), group, shared)
    elif size(ranges.ffn):
        layer.mlp = AllSum(mlp, group)
    else:
        layer.mlp = Zeros(hidden, group)
