"""The planner's byte model against MLX's real parameter sizes (sum of `nbytes`)."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten
from mlx_lm.utils import _get_classes

from planner.costs import unit_costs
from protocol.model_spec import read_config

BASE: dict[str, Any] = dict(
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    intermediate_size=256,
    vocab_size=512,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    max_position_embeddings=512,
)
MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=64, norm_topk_prob=True)
HYBRID = dict(
    MOE,
    decoder_sparse_step=1,
    mlp_only_layers=[],
    shared_expert_intermediate_size=64,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=32,
    linear_value_head_dim=32,
    linear_conv_kernel_dim=4,
    full_attention_interval=2,
    partial_rotary_factor=0.25,
)
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": dict(BASE, model_type="llama"),
    "llama_tied_bias": dict(
        BASE, model_type="llama", tie_word_embeddings=True, attention_bias=True, mlp_bias=True
    ),
    "qwen3": dict(BASE, model_type="qwen3"),
    "qwen3_moe": dict(
        BASE, model_type="qwen3_moe", decoder_sparse_step=1, mlp_only_layers=[1], **MOE
    ),
    "qwen3_next": dict(BASE, model_type="qwen3_next", **HYBRID),
    "qwen3_5_moe": dict(BASE, model_type="qwen3_5_moe", **HYBRID),
}
QUANTS: list[dict[str, int] | None] = [
    None,
    {"bits": 4, "group_size": 64},
    {"bits": 8, "group_size": 32},
]


def build(cfg: dict[str, Any], quant: dict[str, int] | None) -> tuple[nn.Module, dict[str, Any]]:
    """An mlx-lm model of `cfg`, quantized the way mlx_lm.convert does (routers at 8 bits)."""
    cfg = dict(cfg, torch_dtype="float32")
    model_cls, args_cls = _get_classes(cfg)
    model = model_cls(args_cls.from_dict(cfg))
    if quant is None:
        return model, cfg
    block: dict[str, Any] = dict(quant)
    predicate = getattr(model, "quant_predicate", None)

    def class_predicate(path: str, module: nn.Module) -> bool | dict[str, int]:
        if not hasattr(module, "to_quantized") or module.weight.shape[-1] % quant["group_size"]:
            return False
        chosen = predicate(path, module) if predicate else True
        if isinstance(chosen, dict):
            block[path] = chosen  # mlx_lm.convert records per-layer overrides like this
        return chosen

    nn.quantize(
        model, group_size=quant["group_size"], bits=quant["bits"], class_predicate=class_predicate
    )
    return model, dict(cfg, quantization=block)


@pytest.mark.parametrize("quant", QUANTS, ids=["float32", "4bit-g64", "8bit-g32"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_weight_bytes_equal_mlx_nbytes(family: str, quant: dict[str, int] | None) -> None:
    model, cfg = build(FAMILIES[family], quant)
    real = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    costs = unit_costs(read_config(cfg), context_tokens=256)
    assert costs.weights_of(costs.total_units) == real


@pytest.mark.parametrize("family", ["llama", "qwen3_next"])
def test_kv_cache_bytes_equal_mlx_cache(family: str) -> None:
    model, cfg = build(FAMILIES[family], None)
    cache = model.make_cache()
    tokens = 300  # not a multiple of the cache step: the allocation rounds up
    model(mx.zeros((1, tokens), dtype=mx.int32), cache=cache)
    real = 0
    for c in cache:
        # The allocated buffers, not the filled prefix that `state` returns.
        arrays = [c.keys, c.values] if hasattr(c, "keys") else c.cache
        real += sum(a.nbytes for a in arrays if a is not None)
    costs = unit_costs(read_config(cfg), context_tokens=tokens)
    assert costs.cache_of(costs.total_units) == real
