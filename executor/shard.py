"""Cut tensors to a rank's ranges: column-parallel layers keep output rows, row-parallel
layers keep input columns (quantized ones on group bounds), MoE blocks keep whole experts.
`executor.layer_patch` then points mlx-lm's modules at the slices."""

from __future__ import annotations

import mlx.core as mx

from executor.families import Axis, Ranges, Segments, rules_for, split_layer_name
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
    if axis in ("expert", "out"):
        return _take(array, 0, segments)
    # Row-parallel: cut input columns; the bias is added after the all-sum, so once.
    if leaf == "bias":
        return array if keep_row_parallel_bias else mx.zeros_like(array)
    last = array.ndim - 1
    if quant is not None and leaf == "weight" and array.dtype == mx.uint32:
        return _take(array, last, _scale(segments, quant.bits, 32, name))
    if quant is not None and leaf in ("scales", "biases"):
        return _take(array, last, _scale(segments, 1, quant.group_size, name))
    return _take(array, last, segments)


def slice_weights(
    weights: dict[str, mx.array], spec: ModelSpec, ranges: Ranges, rank: int
) -> dict[str, mx.array]:
    """This rank's slice of each named tensor (replicated ones unchanged)."""
    rules = rules_for(spec)
    out = {}
    for name, array in weights.items():
        _, module, leaf = split_layer_name(name)
        key, leaf_kind = rule_key(module, leaf)
        rule = rules.get(key)
        if rule is None:
            out[name] = array
            continue
        axis, segments_fn = rule
        quant = spec.quant_at(name.rpartition(".")[0])
        segments = segments_fn(spec, ranges)
        out[name] = slice_param(name, leaf_kind, array, axis, segments, quant, rank == 0)
    return out
