"""Small models of every supported family, made here: nothing is downloaded.

A model directory as `mlx_lm.convert` writes it: `config.json` (with the `quantization` block
and its per-layer overrides), `model.safetensors` in mlx-lm's parameter names, and a BPE
tokenizer trained with `tokenizers` on generated text, with a chat template.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mlx.nn as nn

FAMILIES = (
    "llama",
    "qwen3",
    "qwen3_moe",
    "qwen3_next",
    "qwen3_5_moe",
    "deepseek_v3",
    "glm4_moe",
    "gpt_oss",
    "minimax",
    "mixtral",
    "ministral3",
)
QUANTIZATIONS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "4bit": {"bits": 4, "group_size": 64},
    "8bit": {"bits": 8, "group_size": 32},
    "mxfp4": {"bits": 4, "group_size": 32, "mode": "mxfp4"},
    # 4-bit layers beside 8-bit embeddings and output head, as mlx-lm's mixed recipes write
    "mixed": {"bits": 4, "group_size": 64},
}
# Modules a quantization keeps at other settings (a per-module override in config.json).
MIXED_OVERRIDES = {
    "embed_tokens": {"bits": 8, "group_size": 64},
    "lm_head": {"bits": 8, "group_size": 64},
}
CORPUS_WORDS = (
    "mac",
    "studio",
    "ultra",
    "max",
    "memory",
    "tensor",
    "head",
    "expert",
    "ring",
    "token",
    "split",
    "rank",
    "plan",
    "model",
    "layer",
    "cache",
    "bandwidth",
    "cable",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "fits",
    "fast",
    "slow",
    "small",
    "big",
)
"""The words a tiny model's tokenizer is trained on: prompts made of them stay in vocabulary."""
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VOCAB = 512
NON_WORD_SCALE = 0.01
# Random weights give nearly flat logits, where rounding could flip a greedy argmax; a sharper
# output layer keeps float32 greedy parity a test of the sharding. In bf16/fp16 every rounding
# moves a logit by one ulp of its magnitude, so those models keep logits near 1 instead.
LOGIT_SHARPNESS = {"float32": 8.0, "bfloat16": 0.5, "float16": 0.5}

_BASE: dict[str, Any] = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "intermediate_size": 512,
    "vocab_size": VOCAB,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}
_MOE: dict[str, Any] = {
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 64,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "norm_topk_prob": True,
}
_HYBRID: dict[str, Any] = {
    **_MOE,
    "shared_expert_intermediate_size": 256,
    "linear_num_key_heads": 4,
    "linear_num_value_heads": 8,
    "linear_key_head_dim": 32,
    "linear_value_head_dim": 32,
    "linear_conv_kernel_dim": 4,
    "full_attention_interval": 2,
    "partial_rotary_factor": 0.25,
}
_MLA_MOE: dict[str, Any] = {
    # DeepSeek-V3: MLA, one dense first layer, routed experts in 2 groups, 4 shared experts
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "q_lora_rank": 64,
    "kv_lora_rank": 64,
    "qk_nope_head_dim": 64,
    "qk_rope_head_dim": 32,
    "v_head_dim": 64,
    "intermediate_size": 256,
    "moe_intermediate_size": 64,
    "n_routed_experts": 8,
    "n_shared_experts": 4,
    "num_experts_per_tok": 2,
    "n_group": 2,
    "topk_group": 1,
    "routed_scaling_factor": 2.5,
    "norm_topk_prob": True,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
}
_GLM4_MOE: dict[str, Any] = {
    "intermediate_size": 256,
    "moe_intermediate_size": 64,
    "n_routed_experts": 8,
    "n_shared_experts": 4,
    "num_experts_per_tok": 2,
    "n_group": 1,
    "topk_group": 1,
    "routed_scaling_factor": 2.5,
    "norm_topk_prob": True,
    "first_k_dense_replace": 1,
    "use_qk_norm": True,
    "attention_bias": True,
    "partial_rotary_factor": 0.5,
    "rope_scaling": None,
}
_LOCAL_EXPERTS: dict[str, Any] = {
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "intermediate_size": 64,
}
_FAMILY_EXTRAS: dict[str, dict[str, Any]] = {
    "qwen3_moe": _MOE,
    "qwen3_next": _HYBRID,
    "qwen3_5_moe": _HYBRID,
    "deepseek_v3": _MLA_MOE,
    "glm4_moe": _GLM4_MOE,
    # gpt-oss: a window shorter than the test prompts, so the rotating cache wraps
    "gpt_oss": {**_LOCAL_EXPERTS, "sliding_window": 16, "rope_scaling": None},
    "minimax": {
        **_LOCAL_EXPERTS,
        "shared_intermediate_size": 0,
        "rotary_dim": 32,
        "use_qk_norm": True,
        "scoring_func": "sigmoid",
    },
    # Mixtral's head_dim is hidden / heads: 64 here, a whole quantization group
    "ministral3": {
        "layer_types": ["sliding_attention", "full_attention"],
        "sliding_window": 16,
        "rope_parameters": {
            "rope_theta": 10000.0,
            "rope_type": "default",
            "llama_4_scaling_beta": 0.1,
            "original_max_position_embeddings": 4096,
        },
    },
    "mixtral": {
        **_LOCAL_EXPERTS,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
}


def config_for(family: str, dtype: str = "float32", **overrides: Any) -> dict[str, Any]:
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
    cfg: dict[str, Any] = {**_BASE, "model_type": family, "torch_dtype": dtype}
    cfg.update(_FAMILY_EXTRAS.get(family, {}))
    if family not in ("llama", "qwen3", "qwen3_moe", "qwen3_next", "qwen3_5_moe"):
        cfg["num_hidden_layers"] = 2  # the new families' tests: one dense and one MoE layer
    cfg.update(overrides)
    if family == "qwen3_5_moe":
        text = {**cfg, "model_type": "qwen3_5_moe_text"}
        cfg = {
            "model_type": family,
            "torch_dtype": dtype,
            "text_config": text,
            "tie_word_embeddings": cfg["tie_word_embeddings"],
        }
    return cfg


def quantize_like_convert(
    model: nn.Module, q: dict[str, Any], overrides: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """Quantize `model` in place as `mlx_lm.convert` does (the model's own quant_predicate,
    e.g. 8-bit routers, plus `overrides` by module name) and return the config block."""
    import mlx.nn as nn

    block: dict[str, Any] = dict(q)
    predicate = getattr(model, "quant_predicate", None)

    def class_predicate(path: str, module: nn.Module) -> bool | dict[str, Any]:
        if not hasattr(module, "to_quantized") or module.weight.shape[-1] % q["group_size"]:
            return False
        chosen = predicate(path, module) if predicate else True
        own = overrides.get(path.rpartition(".")[2])
        if own is not None and chosen is not False:
            chosen = own
        if isinstance(chosen, dict):
            block[path] = chosen
        return chosen

    nn.quantize(
        model,
        group_size=q["group_size"],
        bits=q["bits"],
        mode=q.get("mode", "affine"),
        class_predicate=class_predicate,
    )
    return block


def _corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(CORPUS_WORDS) for _ in range(rng.randint(4, 16))) + "."
        for _ in range(4000)
    ]


def write_tokenizer(out: Path, vocab_size: int, seed: int = 0) -> tuple[int, list[int]]:
    """Train a byte-level BPE tokenizer; returns the end-of-turn token id and the ids of the
    tokens that read as whole words (a space and ASCII letters)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "chat_template": CHAT_TEMPLATE,
                "model_max_length": 4096,
            },
            indent=2,
        )
    )
    eos = tok.token_to_id("<|im_end|>")
    assert eos is not None
    wordy = [
        i
        for i in range(tok.get_vocab_size())
        if (text := tok.decode([i])).startswith(" ") and text[1:].isascii() and text[1:].isalpha()
    ]
    return eos, wordy


def build_model(
    out: Path,
    family: str,
    quant: str = "none",
    dtype: str = "float32",
    seed: int = 0,
    **overrides: Any,
) -> Path:
    """Write a small random model of `family` to `out` and return `out`."""
    # mlx is imported here, not at the top: `asymtp`'s argument parser reads this module's
    # tables, and the planner-only commands (and the planner's container) have no mlx.
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    if quant not in QUANTIZATIONS:
        raise ValueError(f"quantization {quant!r} is not one of {', '.join(QUANTIZATIONS)}")
    out.mkdir(parents=True, exist_ok=True)
    cfg = config_for(family, dtype, **overrides)
    eos, wordy = write_tokenizer(out, VOCAB, seed)
    mx.random.seed(seed)
    model_cls, args_cls = _get_classes(cfg)
    model: nn.Module = model_cls(args_cls.from_dict(cfg))
    # Byte fragments and special tokens get near-zero logits, so greedy text reads as words
    # (still nonsense) and runs its full length; not exactly zero, so no two logits tie.
    row_scale = mx.full((VOCAB, 1), NON_WORD_SCALE)
    row_scale[mx.array(wordy)] = 1.0
    for name, module in model.named_modules():
        if name.endswith("lm_head"):
            module.weight = module.weight * row_scale * LOGIT_SHARPNESS[dtype]
    if dtype != "float32":
        model.set_dtype(getattr(mx, dtype))
    q = QUANTIZATIONS[quant]
    if q is not None:
        cfg["quantization"] = quantize_like_convert(
            model, q, MIXED_OVERRIDES if quant == "mixed" else {}
        )
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    cfg["eos_token_id"] = eos
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return out
