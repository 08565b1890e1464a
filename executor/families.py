"""Which tensor splits how, for every supported family: the one place that knows.

A rule names the axis a weight is cut along and the index segments this rank keeps:

- `out`:    column-parallel (output rows), e.g. q_proj rows of this rank's heads;
- `in`:     row-parallel (input columns), the layer's output is all-summed across ranks;
- `expert`: whole experts (axis 0 of the stacked SwitchGLU weights);
- anything not listed is replicated (embeddings, lm_head, norms, routers).

Segments come from the rank's ranges (`Ranges`); a fused matrix such as Qwen3.5's
`in_proj_qkv` ([q | k | v] sections) or the conv1d channels keeps one segment per section.
Module paths are those of mlx-lm's model classes (after `sanitize`), without the
`model.layers.N.` / `language_model.model.layers.N.` prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from protocol.model_spec import ModelSpec
from protocol.schema import Range, RankPlan

Axis = Literal["out", "in", "expert"]
Segments = list[tuple[int, int]]


@dataclass(frozen=True)
class Ranges:
    """A rank's half-open ranges in model units (heads, FFN columns, experts)."""

    q: Range
    kv: Range
    ffn: Range
    expert: Range
    lin_k: Range
    lin_v: Range

    @classmethod
    def of(cls, r: RankPlan) -> Ranges:
        return cls(
            q=r.q_heads,
            kv=r.kv_heads,
            ffn=r.ffn,
            expert=r.experts or (0, 0),
            lin_k=r.linear_k_heads or (0, 0),
            lin_v=r.linear_v_heads or (0, 0),
        )

    @classmethod
    def whole(cls, s: ModelSpec) -> Ranges:
        return cls(
            q=(0, s.q_heads),
            kv=(0, s.kv_heads),
            ffn=(0, s.ffn_dim),
            expert=(0, s.experts),
            lin_k=(0, s.lin_k_heads if s.lin_layers else 0),
            lin_v=(0, s.lin_v_heads if s.lin_layers else 0),
        )


def size(r: Range) -> int:
    return r[1] - r[0]


SegmentFn = Callable[[ModelSpec, Ranges], Segments]


def per(unit: str, width: Callable[[ModelSpec], int]) -> SegmentFn:
    """A contiguous block of `width` rows/columns for each unit in the rank's range."""

    def segments(s: ModelSpec, r: Ranges) -> Segments:
        a, b = getattr(r, unit)
        w = width(s)
        return [(a * w, b * w)]

    return segments


def qkv_sections(s: ModelSpec, r: Ranges) -> Segments:
    """[q | k | v] sections of Gated DeltaNet's fused projection and conv1d channels."""
    dk, dv, nk = s.lin_k_dim, s.lin_v_dim, s.lin_k_heads
    (k0, k1), (v0, v1) = r.lin_k, r.lin_v
    key = nk * dk
    return [
        (k0 * dk, k1 * dk),
        (key + k0 * dk, key + k1 * dk),
        (2 * key + v0 * dv, 2 * key + v1 * dv),
    ]


def _one(_: ModelSpec) -> int:
    return 1


def _head(s: ModelSpec) -> int:
    return s.head_dim


def _q_rows(s: ModelSpec) -> int:
    # Qwen3-Next/3.5 q_proj emits [queries | output gate] per head, head by head.
    return s.head_dim * (2 if s.q_gated else 1)


def _lin_v(s: ModelSpec) -> int:
    return s.lin_v_dim


def _qkvz_rows(s: ModelSpec) -> int:
    # Qwen3-Next lays in_proj_qkvz out per key head: q, k, then its value heads' v and z.
    return 2 * s.lin_k_dim + 2 * s.v_per_k * s.lin_v_dim


def _ba_rows(s: ModelSpec) -> int:
    return 2 * s.v_per_k


ATTENTION: dict[str, tuple[Axis, SegmentFn]] = {
    "self_attn.q_proj": ("out", per("q", _q_rows)),
    "self_attn.k_proj": ("out", per("kv", _head)),
    "self_attn.v_proj": ("out", per("kv", _head)),
    "self_attn.o_proj": ("in", per("q", _head)),
}
DENSE_MLP: dict[str, tuple[Axis, SegmentFn]] = {
    "mlp.gate_proj": ("out", per("ffn", _one)),
    "mlp.up_proj": ("out", per("ffn", _one)),
    "mlp.down_proj": ("in", per("ffn", _one)),
}
EXPERTS: dict[str, tuple[Axis, SegmentFn]] = {
    "mlp.switch_mlp.gate_proj": ("expert", per("expert", _one)),
    "mlp.switch_mlp.up_proj": ("expert", per("expert", _one)),
    "mlp.switch_mlp.down_proj": ("expert", per("expert", _one)),
}
SHARED_EXPERT: dict[str, tuple[Axis, SegmentFn]] = {
    "mlp.shared_expert.gate_proj": ("out", per("ffn", _one)),
    "mlp.shared_expert.up_proj": ("out", per("ffn", _one)),
    "mlp.shared_expert.down_proj": ("in", per("ffn", _one)),
}
GATED_DELTANET_COMMON: dict[str, tuple[Axis, SegmentFn]] = {
    "linear_attn.conv1d": ("out", qkv_sections),
    "linear_attn.dt_bias": ("out", per("lin_v", _one)),
    "linear_attn.A_log": ("out", per("lin_v", _one)),
    "linear_attn.out_proj": ("in", per("lin_v", _lin_v)),
}
QWEN3_NEXT_DELTANET: dict[str, tuple[Axis, SegmentFn]] = {
    "linear_attn.in_proj_qkvz": ("out", per("lin_k", _qkvz_rows)),
    "linear_attn.in_proj_ba": ("out", per("lin_k", _ba_rows)),
    **GATED_DELTANET_COMMON,
}
QWEN3_5_DELTANET: dict[str, tuple[Axis, SegmentFn]] = {
    "linear_attn.in_proj_qkv": ("out", qkv_sections),
    "linear_attn.in_proj_z": ("out", per("lin_v", _lin_v)),
    "linear_attn.in_proj_b": ("out", per("lin_v", _one)),
    "linear_attn.in_proj_a": ("out", per("lin_v", _one)),
    **GATED_DELTANET_COMMON,
}

_DENSE = {**ATTENTION, **DENSE_MLP}
_MOE = {**ATTENTION, **DENSE_MLP, **EXPERTS}
FAMILY_RULES: dict[str, dict[str, tuple[Axis, SegmentFn]]] = {
    "llama": _DENSE,
    "qwen3": _DENSE,
    "qwen3_moe": _MOE,
    "qwen3_next": {**_MOE, **SHARED_EXPERT, **QWEN3_NEXT_DELTANET},
    "qwen3_5": {**_MOE, **SHARED_EXPERT, **QWEN3_5_DELTANET},
    "qwen3_5_moe": {**_MOE, **SHARED_EXPERT, **QWEN3_5_DELTANET},
}

# Module attributes that carry the local sizes after slicing, per kind of module.
ATTENTION_HEAD_ATTRS = (("n_heads", "num_attention_heads"), ("n_kv_heads", "num_key_value_heads"))

# mlx-lm prefixes of the decoder layers.
LAYER_PREFIXES = ("model.layers.", "language_model.model.layers.")


def rules_for(model_type: str) -> dict[str, tuple[Axis, SegmentFn]]:
    return FAMILY_RULES[model_type]


def split_layer_name(name: str) -> tuple[int | None, str, str]:
    """'model.layers.3.self_attn.q_proj.scales' -> (3, 'self_attn.q_proj', 'scales')."""
    for prefix in LAYER_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            index, _, tail = rest.partition(".")
            module, _, leaf = tail.rpartition(".")
            return int(index), module, leaf
    module, _, leaf = name.rpartition(".")
    return None, module, leaf
