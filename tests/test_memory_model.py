"""The planner's byte model against MLX's real parameter sizes (sum of `nbytes`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import _get_classes

from executor.tiny_models import MIXED_OVERRIDES, QUANTIZATIONS, config_for, quantize_like_convert
from planner.costs import unit_costs
from protocol.config_reader import read_config

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
    "mistral": dict(BASE, model_type="mistral"),
    # The families people build Mac clusters for, as `asymtp make-test-model` writes them.
    "deepseek_v3": config_for("deepseek_v3"),
    "kimi_k2": dict(config_for("deepseek_v3"), model_type="kimi_k2"),
    "deepseek_v3_no_q_lora": config_for("deepseek_v3", q_lora_rank=None),
    "glm4_moe": config_for("glm4_moe"),
    "glm4_moe_no_qk_norm": config_for("glm4_moe", use_qk_norm=False, attention_bias=False),
    "gpt_oss": config_for("gpt_oss"),
    "minimax": config_for("minimax"),
    "mixtral": config_for("mixtral"),
    "ministral3": config_for("ministral3"),
}
QUANTS = ["none", "4bit", "8bit", "mixed"]


def build(cfg: dict[str, Any], quant: str) -> tuple[nn.Module, dict[str, Any]]:
    """An mlx-lm model of `cfg`, quantized the way mlx_lm.convert does (routers at 8 bits;
    `mixed`: 8-bit embeddings and output head beside 4-bit layers)."""
    cfg = dict(cfg, torch_dtype="float32")
    model_cls, args_cls = _get_classes(cfg)
    model = model_cls(args_cls.from_dict(cfg))
    q = QUANTIZATIONS[quant]
    if q is None:
        return model, cfg
    block = quantize_like_convert(model, q, MIXED_OVERRIDES if quant == "mixed" else {})
    return model, dict(cfg, quantization=block)


CASES = [(f, q) for f in FAMILIES for q in QUANTS] + [("gpt_oss", "mxfp4")]


@pytest.mark.parametrize(("family", "quant"), CASES, ids=[f"{f}-{q}" for f, q in CASES])
def test_weight_bytes_equal_mlx_nbytes(family: str, quant: str) -> None:
    model, cfg = build(FAMILIES[family], quant)
    real = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    costs = unit_costs(read_config(cfg), context_tokens=256)
    assert costs.weights_of(costs.total_units) == real


@pytest.mark.parametrize("family", ["llama", "qwen3_next", "deepseek_v3", "gpt_oss", "ministral3"])
def test_kv_cache_bytes_equal_mlx_cache(family: str) -> None:
    model, cfg = build(FAMILIES[family], "none")
    cache = model.make_cache() if hasattr(model, "make_cache") else make_prompt_cache(model)
    tokens = 300  # not a multiple of the cache step: the allocation rounds up
    model(mx.zeros((1, 1), dtype=mx.int32), cache=cache)
    for _ in range(tokens - 1):  # token by token: gpt-oss's sliding layers stop at the window
        mx.eval(model(mx.zeros((1, 1), dtype=mx.int32), cache=cache))
    real = 0
    for c in cache:
        # The allocated buffers, not the filled prefix that `state` returns.
        arrays = [c.keys, c.values] if hasattr(c, "keys") else c.cache
        real += sum(a.nbytes for a in arrays if a is not None)
    costs = unit_costs(read_config(cfg), context_tokens=tokens)
    assert costs.cache_of(costs.total_units) == real


# Safetensors totals of the published checkpoints (decimal GB, as the Hugging Face pages list
# them; MTP layers, which mlx-lm drops on load, excluded): mlx-community/DeepSeek-V3.1-4bit
# 378 GB, mlx-community/Kimi-K2-Instruct-4bit 578 GB, mlx-community/GLM-4.6-4bit 199 GB,
# openai/gpt-oss-120b 65.3 GB (60.8 GiB: MXFP4 experts, the rest bf16),
# mlx-community/MiniMax-M2-4bit 129 GB, and mlx-community/Kimi-K2-Thinking 658 GB (exo's model
# card; Moonshot's native INT4: routed experts 4-bit in groups of 32, the rest bf16).
PUBLISHED_GB = {
    "deepseek-v3.1-4bit": 378,
    "kimi-k2-instruct-4bit": 578,
    "glm-4.6-4bit": 199,
    "gpt-oss-120b": 65.3,
    "minimax-m2-4bit": 129,
    "kimi-k2-thinking": 658,
}
CONFIGS = Path(__file__).resolve().parents[1] / "planner" / "examples" / "configs"


@pytest.mark.parametrize("name", list(PUBLISHED_GB))
def test_planner_total_matches_the_published_checkpoint(name: str) -> None:
    spec = read_config(json.loads((CONFIGS / f"{name}.json").read_text()))
    total_gb = unit_costs(spec, context_tokens=256).total_weight / 1e9
    assert abs(total_gb / PUBLISHED_GB[name] - 1) <= 0.02, f"{name}: {total_gb:.1f} GB"


def test_mla_latent_cache_is_held_whole_by_every_rank() -> None:
    spec = read_config(json.loads((CONFIGS / "kimi-k2-instruct-4bit.json").read_text()))
    costs = unit_costs(spec, context_tokens=131072)
    # 61 layers x (512 latent + 64 rope) x 2 bytes a token, whatever the heads on a rank
    assert costs.replicated_cache == 61 * 576 * 2 * 131072
    assert costs.cache["kv_head"] == 0 and costs.cache["q_head"] == 0


@pytest.mark.parametrize("model_type", ["deepseek_v32", "glm_moe_dsa", "mistral3"])
def test_families_not_sliced_are_refused_with_the_reason(model_type: str) -> None:
    with pytest.raises(ValueError, match=f"model.model_type '{model_type}' is not supported: "):
        read_config(dict(config_for("deepseek_v3"), model_type=model_type))


def test_hugging_face_mxfp4_block_keeps_listed_modules_unquantized() -> None:
    spec = read_config(json.loads((CONFIGS / "gpt-oss-120b.json").read_text()))
    assert spec.quant_at("model.layers.3.self_attn.q_proj") is None
    assert spec.quant_at("model.layers.3.mlp.router") is None
    assert spec.quant_at("lm_head") is None
    expert = spec.quant_at("model.layers.3.mlp.experts.gate_proj")
    assert expert is not None and (expert.bits, expert.group_size) == (4, 32)


def test_compressed_tensors_block_keeps_its_ignore_list_unquantized() -> None:
    """Kimi-K2 Thinking's native INT4, as mlx-lm loads it: only the routed experts packed."""
    spec = read_config(json.loads((CONFIGS / "kimi-k2-thinking.json").read_text()))
    for path in (
        "model.layers.3.self_attn.q_a_proj",
        "model.layers.3.mlp.shared_experts.down_proj",
        "model.layers.0.mlp.gate_proj",  # the dense first layer
        "lm_head",
    ):
        assert spec.quant_at(path) is None, path
    expert = spec.quant_at("model.layers.3.mlp.switch_mlp.gate_proj")
    assert expert is not None and (expert.bits, expert.group_size) == (4, 32)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"format": "float-quantized"}, "quantization_config.format must be one of"),
        (
            {"format": "pack-quantized", "config_groups": {"g": {"weights": {"num_bits": 8}}}},
            "mlx-lm loads pack-quantized as 4-bit groups of 32",
        ),
        ({"format": "pack-quantized", "ignore": ["re:("]}, "is not a regex"),
    ],
)
def test_compressed_tensors_blocks_mlx_cannot_load_are_refused(
    block: dict[str, object], message: str
) -> None:
    cfg = json.loads((CONFIGS / "kimi-k2-thinking.json").read_text())
    cfg["quantization_config"] = {"quant_method": "compressed-tensors", **block}
    with pytest.raises(ValueError, match=message):
        read_config(cfg)
