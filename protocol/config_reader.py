"""Read a Hugging Face config.json into a `ModelSpec`: shared checks, one reader per family.

A family reader returns only what differs from the Llama-like defaults; adding a family is an
entry in `READERS` (and its slicing rules in `executor.families`), not new control flow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocol.config_values import (
    dtype_bytes,
    get,
    int_list,
    layer_kinds,
    nesting,
    read_bool,
    read_int,
    text_config,
)
from protocol.model_spec import (
    MAX_CONFIG_NESTING,
    MAX_LAYERS,
    Attention,
    ModelConfigError,
    ModelSpec,
    MoENames,
    QKNorm,
)
from protocol.quantization import read_quantization

Fields = dict[str, Any]
Reader = Callable[[dict[str, Any], int], Fields]

# mlx-lm's MODEL_REMAPPING for the names we accept: the model class each one runs.
ALIASES = {
    "qwen3_5": "qwen3_next",
    "qwen3_5_moe": "qwen3_next",
    "kimi_k2": "deepseek_v3",
    "minimax_m2": "minimax",
    "mistral": "llama",
}
REFUSED = {
    "deepseek_v32": "its sparse-attention indexer (a top-k over an index cache) is not sliced",
    "glm_moe_dsa": "GLM-5 runs DeepSeek-V3.2's sparse-attention indexer, which is not sliced",
    "mistral3": "the multimodal wrapper (vision tower) is not supported; a text-only "
    "conversion with model_type mistral runs as llama",
}


def _llama(cfg: dict[str, Any], layers: int) -> Fields:
    bias = read_bool(cfg, "attention_bias", False)
    return {
        "qk_norm": QKNorm.NONE,
        "o_bias": bias,
        "mlp_bias": read_bool(cfg, "mlp_bias", False),
        "tie_embeddings": read_bool(cfg, "tie_word_embeddings", True),
    }


def _qwen3(cfg: dict[str, Any], layers: int) -> Fields:
    return {"qk_norm": QKNorm.PER_HEAD}


def _qwen3_moe(cfg: dict[str, Any], layers: int) -> Fields:
    experts = read_int(cfg, "num_experts", 0, minimum=0)
    dense = frozenset(int_list(cfg, "mlp_only_layers"))
    step = read_int(cfg, "decoder_sparse_step", 1) if experts else 1
    moe = tuple(experts > 0 and i not in dense and (i + 1) % step == 0 for i in range(layers))
    return {"qk_norm": QKNorm.PER_HEAD, **_experts(cfg, experts, moe)}


def _qwen3_next(cfg: dict[str, Any], layers: int) -> Fields:
    experts = read_int(cfg, "num_experts", 0, minimum=0)
    if experts == 0 and cfg["model_type"] == "qwen3_next":
        raise ModelConfigError("model.num_experts must be >= 1 for qwen3_next")
    interval = read_int(cfg, "full_attention_interval", 4)
    if cfg["model_type"] == "qwen3_next":
        moe = _qwen3_moe(cfg, layers)["moe_layers"]
    else:
        moe = tuple(experts > 0 for _ in range(layers))  # Qwen3.5: dense or all MoE
    return {
        **_experts(cfg, experts, moe),
        "qk_norm": QKNorm.PER_HEAD,
        "q_gated": True,
        "linear_layers": tuple((i + 1) % interval != 0 for i in range(layers)),
        "shared_intermediate": read_int(cfg, "shared_expert_intermediate_size", 0, minimum=0),
        "shared_gated": True,
        "lin_k_heads": read_int(cfg, "linear_num_key_heads"),
        "lin_v_heads": read_int(cfg, "linear_num_value_heads"),
        "lin_k_dim": read_int(cfg, "linear_key_head_dim"),
        "lin_v_dim": read_int(cfg, "linear_value_head_dim"),
        "conv_kernel": read_int(cfg, "linear_conv_kernel_dim", 4),
        "prefix": "" if cfg["model_type"] == "qwen3_next" else "language_model.",
    }


def _experts(
    cfg: dict[str, Any],
    experts: int,
    moe: tuple[bool, ...],
    size_key: str = "moe_intermediate_size",
) -> Fields:
    return {
        "experts": experts,
        "moe_layers": moe,
        "experts_per_token": read_int(cfg, "num_experts_per_tok", None if experts else 0),
        "moe_intermediate": read_int(cfg, size_key, None if experts else 0),
    }


def _deepseek_like(cfg: dict[str, Any], layers: int, freq: int) -> Fields:
    """DeepSeek-V3 and GLM-4.x MoE: dense first layers, routed experts with a shared one."""
    experts = read_int(cfg, "n_routed_experts", 0, minimum=0)
    first_dense = read_int(cfg, "first_k_dense_replace", 0, minimum=0)
    moe = tuple(experts > 0 and i >= first_dense and i % freq == 0 for i in range(layers))
    fields = _experts(cfg, experts, moe)
    shared = read_int(cfg, "n_shared_experts", 0, minimum=0)
    fields["shared_intermediate"] = shared * fields["moe_intermediate"]
    fields["score_correction_bias"] = True
    fields["moe_names"] = MoENames(shared="shared_experts", router_linear=False)
    return fields


def _deepseek_v3(cfg: dict[str, Any], layers: int) -> Fields:
    heads = read_int(cfg, "num_attention_heads")
    if get(cfg, "topk_method", "noaux_tc") != "noaux_tc":
        raise ModelConfigError("model.topk_method must be noaux_tc (mlx-lm runs no other)")
    bias = read_bool(cfg, "attention_bias", False)
    return {
        **_deepseek_like(cfg, layers, read_int(cfg, "moe_layer_freq", 1)),
        "attention": Attention.MLA,
        "kv_heads": heads,  # each head's share of kv_b_proj follows its query head
        "qk_norm": QKNorm.NONE,
        "attention_bias": bias,
        "o_bias": bias,
        "q_lora_rank": read_int(cfg, "q_lora_rank", 0, minimum=0),
        "kv_lora_rank": read_int(cfg, "kv_lora_rank"),
        "qk_nope_dim": read_int(cfg, "qk_nope_head_dim"),
        "qk_rope_dim": read_int(cfg, "qk_rope_head_dim"),
        "v_head_dim": read_int(cfg, "v_head_dim"),
        "head_dim": read_int(cfg, "qk_nope_head_dim") + read_int(cfg, "qk_rope_head_dim"),
    }


def _glm4_moe(cfg: dict[str, Any], layers: int) -> Fields:
    qk_norm = read_bool(cfg, "use_qk_norm", False)
    return {
        **_deepseek_like(cfg, layers, 1),
        "qk_norm": QKNorm.PER_HEAD if qk_norm else QKNorm.NONE,
        "o_bias": False,
    }


def _gpt_oss(cfg: dict[str, Any], layers: int) -> Fields:
    experts = read_int(cfg, "num_local_experts")
    kinds = layer_kinds(cfg, layers, ("sliding_attention", "full_attention"))
    fields = _experts(cfg, experts, tuple(True for _ in range(layers)), "intermediate_size")
    return {
        **fields,
        "qk_norm": QKNorm.NONE,
        "attention_bias": True,
        "o_bias": True,
        "sinks": True,
        "sliding_layers": tuple(k == "sliding_attention" for k in kinds),
        "sliding_window": read_int(cfg, "sliding_window", 128),
        "expert_bias": True,
        "router_bias": True,
        "moe_names": MoENames(experts="experts", router="router"),
    }


def _minimax(cfg: dict[str, Any], layers: int) -> Fields:
    experts = read_int(cfg, "num_local_experts")
    fields = _experts(cfg, experts, tuple(True for _ in range(layers)), "intermediate_size")
    qk_norm = read_bool(cfg, "use_qk_norm", True)
    return {
        **fields,
        "qk_norm": QKNorm.FULL_WIDTH if qk_norm else QKNorm.NONE,
        "score_correction_bias": True,
        "moe_names": MoENames(block="block_sparse_moe"),
    }


def _ministral3(cfg: dict[str, Any], layers: int) -> Fields:
    window = read_int(cfg, "sliding_window", 0, minimum=0)
    kinds = ("sliding_attention", "full_attention")
    # Without layer_types every layer attends in full (mlx-lm's default here).
    types = layer_kinds(cfg, layers, kinds) if "layer_types" in cfg else [kinds[1]] * layers
    return {
        "qk_norm": QKNorm.NONE,
        "tie_embeddings": read_bool(cfg, "tie_word_embeddings", True),
        "sliding_layers": tuple(k == kinds[0] for k in types),
        "sliding_window": window,
    }


def _mixtral(cfg: dict[str, Any], layers: int) -> Fields:
    experts = read_int(cfg, "num_local_experts")
    fields = _experts(cfg, experts, tuple(True for _ in range(layers)), "intermediate_size")
    heads = read_int(cfg, "num_attention_heads")
    return {
        **fields,
        "qk_norm": QKNorm.NONE,
        "head_dim": read_int(cfg, "hidden_size") // heads,  # mlx-lm's Mixtral has no head_dim
        "moe_names": MoENames(block="block_sparse_moe"),
    }


READERS: dict[str, Reader] = {
    "llama": _llama,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
    "qwen3_next": _qwen3_next,
    "deepseek_v3": _deepseek_v3,
    "glm4_moe": _glm4_moe,
    "gpt_oss": _gpt_oss,
    "minimax": _minimax,
    "mixtral": _mixtral,
    "ministral3": _ministral3,
}
SUPPORTED_MODEL_TYPES = (
    "llama",
    "qwen3",
    "qwen3_moe",
    "qwen3_next",
    "qwen3_5",
    "qwen3_5_moe",
    "deepseek_v3",
    "kimi_k2",
    "glm4_moe",
    "gpt_oss",
    "minimax",
    "minimax_m2",
    "mixtral",
    "mistral",
    "ministral3",
)


def family_of(model_type: Any) -> str:
    if model_type in REFUSED:
        raise ModelConfigError(
            f"model.model_type {model_type!r} is not supported: {REFUSED[model_type]}"
        )
    family = ALIASES.get(model_type, model_type)
    if family not in READERS:
        raise ModelConfigError(
            f"model.model_type {model_type!r} is not supported; supported: "
            + ", ".join(SUPPORTED_MODEL_TYPES)
        )
    return str(family)


def read_config(config: dict[str, Any]) -> ModelSpec:
    if not isinstance(config, dict):
        raise ModelConfigError("model must be a config.json object")
    if nesting(config) > MAX_CONFIG_NESTING:
        # Real configs nest 3-4 levels; a deeper one cannot even be hashed into a plan_id.
        raise ModelConfigError(f"model nests objects or arrays deeper than {MAX_CONFIG_NESTING}")
    family = family_of(config.get("model_type"))
    cfg = text_config(config)
    hidden = read_int(cfg, "hidden_size")
    layers = read_int(cfg, "num_hidden_layers")
    if layers > MAX_LAYERS:
        raise ModelConfigError(f"model.num_hidden_layers must be <= {MAX_LAYERS}, got {layers}")
    q_heads = read_int(cfg, "num_attention_heads")
    fields: Fields = {
        "model_type": config["model_type"],
        "family": family,
        "hidden": hidden,
        "vocab": read_int(cfg, "vocab_size"),
        "num_layers": layers,
        "tie_embeddings": read_bool(cfg, "tie_word_embeddings", False),
        "dtype_bytes": dtype_bytes(cfg),
        "q_heads": q_heads,
        "kv_heads": read_int(cfg, "num_key_value_heads", q_heads),
        "head_dim": read_int(cfg, "head_dim", hidden // q_heads if hidden >= q_heads else 1),
        "q_gated": False,
        "attention_bias": read_bool(cfg, "attention_bias", False),
        "o_bias": False,
        "mlp_bias": False,
        "linear_layers": tuple(False for _ in range(layers)),
        "moe_layers": tuple(False for _ in range(layers)),
        "intermediate": 0,
        "experts": 0,
        "experts_per_token": 0,
        "moe_intermediate": 0,
        "shared_intermediate": 0,
        "lin_k_heads": 0,
        "lin_v_heads": 0,
        "lin_k_dim": 0,
        "lin_v_dim": 0,
        "conv_kernel": 0,
        "quantization": read_quantization(cfg),
    }
    fields.update(READERS[family](cfg, layers))
    if not fields["experts"] or not all(fields["moe_layers"]):
        fields["intermediate"] = read_int(cfg, "intermediate_size", minimum=0)
    spec = ModelSpec(**fields)
    check_shardable(spec)
    return spec


MAX_FFN_BLOCKS = 16384
"""FFN units a plan places (published models: under 1,000)."""


def check_unit_counts(spec: ModelSpec) -> None:
    """Refuse, by field, more FFN units than any real model has: the planner's work grows with
    them (`config_values.MAX_UNITS` bounds the counts read straight from the config)."""
    if spec.ffn_blocks > MAX_FFN_BLOCKS:
        field = (
            "intermediate_size"
            if spec.ffn_dim == spec.intermediate
            else "shared_expert_intermediate_size"
        )
        raise ModelConfigError(
            f"model.{field} ({spec.ffn_dim}) splits into {spec.ffn_blocks} FFN blocks of "
            f"{spec.ffn_block} columns; at most {MAX_FFN_BLOCKS}"
        )


def check_shardable(spec: ModelSpec) -> None:
    check_unit_counts(spec)
    if spec.q_heads % spec.kv_heads:
        raise ModelConfigError(
            f"model.num_attention_heads ({spec.q_heads}) must be a multiple of "
            f"num_key_value_heads ({spec.kv_heads})"
        )
    if spec.experts and not 1 <= spec.experts_per_token <= spec.experts:
        raise ModelConfigError("model.num_experts_per_tok must be between 1 and num_experts")
    if spec.lin_layers and (spec.lin_k_heads < 1 or spec.lin_v_heads % spec.lin_k_heads):
        raise ModelConfigError(
            f"model.linear_num_value_heads ({spec.lin_v_heads}) must be a positive "
            f"multiple of linear_num_key_heads ({spec.lin_k_heads})"
        )
    if spec.quantization is not None:
        g = spec.quantization.group_size
        # o_proj / out_proj take their input columns per head: a head must be whole groups.
        if spec.full_layers and spec.o_head_cols % g:
            raise ModelConfigError(
                f"model.head_dim ({spec.o_head_cols}) is not a multiple of the quantization "
                f"group_size ({g}); o_proj cannot be split by heads"
            )
        if spec.lin_layers and (spec.v_per_k * spec.lin_v_dim) % g:
            raise ModelConfigError(
                f"model.linear_value_head_dim x heads per key head "
                f"({spec.v_per_k * spec.lin_v_dim}) is not a multiple of group_size ({g})"
            )
