"""Which tensor splits how, for every supported family: the one place that knows.

A rule names the axis a weight is cut along and the index segments this rank keeps:

- `out`:    column-parallel (output rows, axis 0), e.g. q_proj rows of this rank's heads,
            and per-head stacks such as MLA's `embed_q` or gpt-oss's attention sinks;
- `in`:     row-parallel (input columns), the layer's output is all-summed across ranks;
- `expert`: whole experts (axis 0 of the stacked SwitchGLU weights and biases);
- anything not listed is replicated (embeddings, lm_head, norms, routers, MLA's latent
  projections).

A family is an entry of `FAMILY_RULES`; the planner's side of the same facts is
`planner.layer_bytes`. Slicing needs nothing else; running the slices needs
`executor.layer_patch`, which is family-agnostic.

Segments come from the rank's ranges (`Ranges`); a fused matrix such as Qwen3.5's
`in_proj_qkv` ([q | k | v] sections) or the conv1d channels keeps one segment per section.
Module paths are those of mlx-lm's model classes (after `sanitize`), without the
`model.layers.N.` / `language_model.model.layers.N.` prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from protocol.model_spec import ModelSpec
from protocol.plan import RankPlan
from protocol.schema import Range

Axis = Literal["out", "in", "expert"]
Segments = list[tuple[int, int]]


@dataclass(frozen=True)
class Ranges:
    """A rank's half-open ranges in model units, named as in its `RankPlan`."""

    q_heads: Range
    kv_heads: Range
    ffn: Range
    experts: Range
    linear_k_heads: Range
    linear_v_heads: Range

    @classmethod
    def of(cls, r: RankPlan) -> Ranges:
        return cls(
            q_heads=r.q_heads,
            kv_heads=r.kv_heads,
            ffn=r.ffn,
            experts=r.experts or (0, 0),
            linear_k_heads=r.linear_k_heads or (0, 0),
            linear_v_heads=r.linear_v_heads or (0, 0),
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
    (k0, k1), (v0, v1) = r.linear_k_heads, r.linear_v_heads
    key = nk * dk
    return [
        (k0 * dk, k1 * dk),
        (key + k0 * dk, key + k1 * dk),
        (2 * key + v0 * dv, 2 * key + v1 * dv),
    ]


def shared_columns(s: ModelSpec, r: Ranges) -> Segments:
    """The shared expert's columns: the `ffn` range's blocks, each `shared_block` wide."""
    a, b = r.ffn
    return [(a // s.ffn_block * s.shared_block, b // s.ffn_block * s.shared_block)]


def _one(_: ModelSpec) -> int:
    return 1


def _head(s: ModelSpec) -> int:
    return s.head_dim


def _q_rows(s: ModelSpec) -> int:
    # Qwen3-Next/3.5 q_proj emits [queries | output gate] per head, head by head.
    return s.q_head_rows


def _o_cols(s: ModelSpec) -> int:
    return s.o_head_cols


def _lin_v(s: ModelSpec) -> int:
    return s.lin_v_dim


def _qkvz_rows(s: ModelSpec) -> int:
    # Qwen3-Next lays in_proj_qkvz out per key head: q, k, then its value heads' v and z.
    return 2 * s.lin_k_dim + 2 * s.v_per_k * s.lin_v_dim


def _ba_rows(s: ModelSpec) -> int:
    return 2 * s.v_per_k


Rules = dict[str, tuple[Axis, SegmentFn]]

ATTENTION: Rules = {
    "self_attn.q_proj": ("out", per("q_heads", _q_rows)),
    "self_attn.k_proj": ("out", per("kv_heads", _head)),
    "self_attn.v_proj": ("out", per("kv_heads", _head)),
    "self_attn.o_proj": ("in", per("q_heads", _head)),
}
SINKS: Rules = {"self_attn.sinks": ("out", per("q_heads", _one))}
# MiniMax normalises q and k over all heads at once: each rank holds its heads' weights.
FULL_WIDTH_QK_NORM: Rules = {
    "self_attn.q_norm": ("out", per("q_heads", _head)),
    "self_attn.k_norm": ("out", per("kv_heads", _head)),
}
# Multi-head latent attention: the latent projections (q_a_proj, kv_a_proj_with_mqa and their
# norms) are replicated; each head's slice of q_b_proj and of kv_b_proj's absorbed halves
# (embed_q, unembed_out: one matrix per head, stacked on axis 0) follows its query head.
MLA: Rules = {
    "self_attn.q_proj": ("out", per("q_heads", _q_rows)),
    "self_attn.q_b_proj": ("out", per("q_heads", _q_rows)),
    "self_attn.embed_q": ("out", per("q_heads", _one)),
    "self_attn.unembed_out": ("out", per("q_heads", _one)),
    "self_attn.o_proj": ("in", per("q_heads", _o_cols)),
}
DENSE_MLP: Rules = {
    "mlp.gate_proj": ("out", per("ffn", _one)),
    "mlp.up_proj": ("out", per("ffn", _one)),
    "mlp.down_proj": ("in", per("ffn", _one)),
}


def experts(path: str) -> Rules:
    """Whole experts of a SwitchGLU at `path` (its weights, and biases where it has them)."""
    return {f"{path}.{m}": ("expert", per("experts", _one)) for m in GLU}


def shared_expert(path: str) -> Rules:
    return {
        f"{path}.gate_proj": ("out", shared_columns),
        f"{path}.up_proj": ("out", shared_columns),
        f"{path}.down_proj": ("in", shared_columns),
    }


GLU = ("gate_proj", "up_proj", "down_proj")
GATED_DELTANET_COMMON: Rules = {
    "linear_attn.conv1d": ("out", qkv_sections),
    "linear_attn.dt_bias": ("out", per("linear_v_heads", _one)),
    "linear_attn.A_log": ("out", per("linear_v_heads", _one)),
    "linear_attn.out_proj": ("in", per("linear_v_heads", _lin_v)),
}
QWEN3_NEXT_DELTANET: Rules = {
    "linear_attn.in_proj_qkvz": ("out", per("linear_k_heads", _qkvz_rows)),
    "linear_attn.in_proj_ba": ("out", per("linear_k_heads", _ba_rows)),
    **GATED_DELTANET_COMMON,
}
QWEN3_5_DELTANET: Rules = {
    "linear_attn.in_proj_qkv": ("out", qkv_sections),
    "linear_attn.in_proj_z": ("out", per("linear_v_heads", _lin_v)),
    "linear_attn.in_proj_b": ("out", per("linear_v_heads", _one)),
    "linear_attn.in_proj_a": ("out", per("linear_v_heads", _one)),
    **GATED_DELTANET_COMMON,
}

_DENSE = {**ATTENTION, **DENSE_MLP}
_MOE = {**_DENSE, **experts("mlp.switch_mlp")}
_QWEN_HYBRID = {**_MOE, **shared_expert("mlp.shared_expert")}
_DEEPSEEK_MOE = {**DENSE_MLP, **experts("mlp.switch_mlp"), **shared_expert("mlp.shared_experts")}
FAMILY_RULES: dict[str, Rules] = {
    "llama": _DENSE,
    "qwen3": _DENSE,
    "qwen3_moe": _MOE,
    "qwen3_next": {**_QWEN_HYBRID, **QWEN3_NEXT_DELTANET},
    "qwen3_5": {**_QWEN_HYBRID, **QWEN3_5_DELTANET},
    "qwen3_5_moe": {**_QWEN_HYBRID, **QWEN3_5_DELTANET},
    "deepseek_v3": {**MLA, **_DEEPSEEK_MOE},
    "glm4_moe": {**ATTENTION, **_DEEPSEEK_MOE},
    "gpt_oss": {**ATTENTION, **SINKS, **experts("mlp.experts")},
    "minimax": {**ATTENTION, **FULL_WIDTH_QK_NORM, **experts("block_sparse_moe.switch_mlp")},
    "mixtral": {**ATTENTION, **experts("block_sparse_moe.switch_mlp")},
    "ministral3": _DENSE,
}

# Module attributes that carry the local sizes after slicing, per kind of module.
ATTENTION_HEAD_ATTRS = (
    ("n_heads", "num_attention_heads", "num_heads"),
    ("n_kv_heads", "num_key_value_heads"),
)

# mlx-lm prefixes of the decoder layers.
LAYER_PREFIXES = ("model.layers.", "language_model.model.layers.")


def rules_for(spec: ModelSpec) -> Rules:
    """The family's table: by model class, so aliases (kimi_k2, mistral) share their class's."""
    rules = FAMILY_RULES.get(spec.model_type) or FAMILY_RULES[spec.family]
    return rules


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


# ---- pipeline stages ------------------------------------------------------------------------
# A stage keeps only its decoder layers. Where a family's inner model indexes its layers by
# kind (the first full-attention / sliding / linear layer, whose cache makes the mask), those
# indices must name the kept layers. mlx-lm's `PipelineMixin` models recompute them in their
# own `pipeline()` (`executor.pipeline` calls it); the families below have no `pipeline()` and
# are fixed here; families whose masks come from `cache[0]` need nothing.
LayerIndexFix = Callable[[Any, int, int], None]


def _first(layers: list[Any], want: Callable[[Any], bool]) -> int | None:
    return next((i for i, layer in enumerate(layers) if want(layer)), None)


def _llama_indices(inner: Any, start: int, end: int) -> None:
    inner.layer_types = inner.layer_types[start:end]
    inner.fa_idx = _first(inner.layers, lambda layer: not layer.use_sliding)
    inner.swa_idx = _first(inner.layers, lambda layer: layer.use_sliding)
    if inner.fa_idx is None:
        # mlx-lm's Llama always builds the full-attention mask from its first such layer.
        raise ValueError(f"layers [{start}, {end}) hold no full-attention layer")


LAYER_INDEX_FIXES: dict[str, LayerIndexFix] = {"llama": _llama_indices}
NO_PIPELINE: dict[str, str] = {
    # Its model zips the layers with a per-layer type list and masks from both kinds always.
    "gpt_oss": "gpt-oss runs as one stage (tensor parallelism) only",
}
EMBEDDINGS, OUTPUT_HEAD = "embed_tokens", "lm_head"
"""The modules only pipeline stage 0 holds (the head only on rank 0)."""


def module_named(name: str, module: str) -> bool:
    """Whether tensor `name` belongs to a module called `module` (at any depth)."""
    return f".{module}." in f".{name}"
