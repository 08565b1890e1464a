"""Read a Hugging Face config.json into the architecture facts the planner needs.

One function per family says which layers exist; everything else is shared. Sizes follow
mlx-lm's model classes: `q_proj` of Qwen3-Next/3.5 full attention emits queries and an output
gate (twice `n_heads x head_dim`), MoE routers of mlx-community conversions are 8-bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "qwen3", "qwen3_moe", "qwen3_next", "qwen3_5", "qwen3_5_moe")
KV_CACHE_STEP = 256  # mlx-lm's KVCache grows in steps of 256 tokens
MAX_LAYERS = 1024  # the largest published models have under 200; more is a typo
MAX_CONFIG_NESTING = 32


class ModelConfigError(ValueError):
    """A config.json that cannot be planned; the message names the key at fault."""


@dataclass(frozen=True)
class Quant:
    bits: int
    group_size: int


@dataclass(frozen=True)
class ModelSpec:
    model_type: str
    family: str  # llama | qwen3 | qwen3_moe | qwen3_next (qwen3_5 shares its layout)
    hidden: int
    vocab: int
    num_layers: int
    tie_embeddings: bool
    dtype_bytes: int
    # full (softmax) attention
    q_heads: int
    kv_heads: int
    head_dim: int
    q_gated: bool
    qk_norm: bool
    attention_bias: bool
    mlp_bias: bool
    # layer kinds: one entry per layer
    linear_layers: tuple[bool, ...]
    moe_layers: tuple[bool, ...]
    # MLPs
    intermediate: int
    experts: int
    experts_per_token: int
    moe_intermediate: int
    shared_intermediate: int
    # Gated DeltaNet linear attention
    lin_k_heads: int
    lin_v_heads: int
    lin_k_dim: int
    lin_v_dim: int
    conv_kernel: int
    # quantization (None: unquantized)
    quant: Quant | None
    router_quant: Quant | None
    shared_gate_quant: Quant | None

    # ---- derived layout -------------------------------------------------------------
    @property
    def full_layers(self) -> int:
        return sum(1 for lin in self.linear_layers if not lin)

    @property
    def lin_layers(self) -> int:
        return sum(1 for lin in self.linear_layers if lin)

    @property
    def n_moe_layers(self) -> int:
        return sum(self.moe_layers)

    @property
    def dense_layers(self) -> int:
        return self.num_layers - self.n_moe_layers

    @property
    def q_per_kv(self) -> int:
        return self.q_heads // self.kv_heads

    @property
    def v_per_k(self) -> int:
        return self.lin_v_heads // self.lin_k_heads if self.lin_k_heads else 0

    @property
    def ffn_dim(self) -> int:
        """The dimension `ffn` ranges cover: the dense MLP's, else the shared expert's."""
        if self.dense_layers:
            return self.intermediate
        return self.shared_intermediate

    @property
    def ffn_layers(self) -> int:
        return self.dense_layers if self.dense_layers else self.n_moe_layers

    @property
    def ffn_block(self) -> int:
        """FFN columns move in blocks that keep `down_proj`'s input slice group-aligned."""
        if self.ffn_dim == 0:
            return 1
        if self.quant is not None and self.ffn_dim % self.quant.group_size == 0:
            return self.quant.group_size
        for block in (64, 32, 16, 8, 4, 2):
            if self.ffn_dim % block == 0:
                return block
        return 1

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelSpec:
        return read_config(config)


# ---- reading ---------------------------------------------------------------------------


def _get(cfg: dict[str, Any], key: str, default: Any = None, *, required: bool = False) -> Any:
    if key not in cfg or cfg[key] is None:
        if required:
            raise ModelConfigError(f"model.{key} is missing")
        return default
    return cfg[key]


MAX_UNITS = {
    "num_attention_heads": 1024,
    "num_key_value_heads": 1024,
    "num_experts": 4096,
    "num_experts_per_tok": 4096,
    "linear_num_key_heads": 1024,
    "linear_num_value_heads": 1024,
}
"""Unit counts the planner places one by one: published models have at most 128 heads and
512 experts, so more is a typo (or an attack on the planner's time), refused by name."""


def _whole(v: Any, where: str) -> int:
    """An integer, or a float that is one (`4.0`): JSON writers differ."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ModelConfigError(f"{where} must be an integer, got {v!r}")
    return v


def _int(cfg: dict[str, Any], key: str, default: int | None = None, *, minimum: int = 1) -> int:
    v = _whole(_get(cfg, key, default, required=default is None), f"model.{key}")
    if v < minimum:
        raise ModelConfigError(f"model.{key} must be >= {minimum}, got {v}")
    limit = MAX_UNITS.get(key, 10**9)
    if v > limit:
        raise ModelConfigError(f"model.{key} must be <= {limit}, got {v}")
    return v


def _bool(cfg: dict[str, Any], key: str, default: bool) -> bool:
    v = _get(cfg, key, default)
    if not isinstance(v, bool):
        raise ModelConfigError(f"model.{key} must be true or false, got {v!r}")
    return v


_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def _dtype_bytes(cfg: dict[str, Any]) -> int:
    name = cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
    if not isinstance(name, str) or name not in _DTYPE_BYTES:
        raise ModelConfigError(
            f"model.torch_dtype {name!r} is not one of {', '.join(sorted(_DTYPE_BYTES))}"
        )
    return _DTYPE_BYTES[name]


def _quant(block: Any, where: str) -> Quant:
    if not isinstance(block, dict):
        raise ModelConfigError(f"{where} must be an object with bits and group_size")
    bits, group = block.get("bits"), block.get("group_size")
    if isinstance(bits, float) and bits.is_integer():
        bits = int(bits)
    if isinstance(group, float) and group.is_integer():
        group = int(group)
    if isinstance(bits, bool) or bits not in (2, 3, 4, 5, 6, 8):
        raise ModelConfigError(f"{where}.bits must be one of 2, 3, 4, 5, 6, 8, got {bits!r}")
    if isinstance(group, bool) or group not in (32, 64, 128):
        raise ModelConfigError(f"{where}.group_size must be 32, 64 or 128, got {group!r}")
    return Quant(bits=bits, group_size=group)


def _quantization(cfg: dict[str, Any]) -> tuple[Quant | None, Quant | None, Quant | None]:
    block = cfg.get("quantization") or cfg.get("quantization_config")
    if block is None:
        return None, None, None
    main = _quant(block, "model.quantization")
    router, shared_gate = main, main
    for key, override in block.items():
        if not isinstance(override, dict):
            continue
        if key.endswith("mlp.gate"):
            router = _quant(override, f"model.quantization.{key}")
        elif key.endswith("shared_expert_gate"):
            shared_gate = _quant(override, f"model.quantization.{key}")
    return main, router, shared_gate


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    inner = config.get("text_config")
    if isinstance(inner, dict):
        merged = {k: v for k, v in config.items() if k != "text_config"}
        merged.update(inner)
        merged["model_type"] = config.get("model_type", inner.get("model_type"))
        return merged
    return config


def _nesting(value: Any) -> int:
    """How deep objects and arrays nest (iteratively: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if items is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_CONFIG_NESTING:
            break
        stack.extend((x, depth + 1) for x in items)
    return deepest


def read_config(config: dict[str, Any]) -> ModelSpec:
    if not isinstance(config, dict):
        raise ModelConfigError("model must be a config.json object")
    if _nesting(config) > MAX_CONFIG_NESTING:
        # Real configs nest 3-4 levels; a deeper one cannot even be hashed into a plan_id.
        raise ModelConfigError(f"model nests objects or arrays deeper than {MAX_CONFIG_NESTING}")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelConfigError(
            f"model.model_type {model_type!r} is not supported; supported: "
            + ", ".join(SUPPORTED_MODEL_TYPES)
        )
    cfg = _text_config(config)
    family = {"qwen3_5": "qwen3_next", "qwen3_5_moe": "qwen3_next"}.get(model_type, str(model_type))

    hidden = _int(cfg, "hidden_size")
    layers = _int(cfg, "num_hidden_layers")
    if layers > MAX_LAYERS:
        raise ModelConfigError(f"model.num_hidden_layers must be <= {MAX_LAYERS}, got {layers}")
    q_heads = _int(cfg, "num_attention_heads")
    kv_heads = _int(cfg, "num_key_value_heads", q_heads)
    if q_heads % kv_heads:
        raise ModelConfigError(
            f"model.num_attention_heads ({q_heads}) must be a multiple of "
            f"num_key_value_heads ({kv_heads})"
        )
    head_dim = _int(cfg, "head_dim", hidden // q_heads if hidden >= q_heads else 1)
    quant, router_quant, shared_gate_quant = _quantization(cfg)

    hybrid = family == "qwen3_next"
    moe_family = family in ("qwen3_moe", "qwen3_next")
    experts = _int(cfg, "num_experts", 0, minimum=0) if moe_family else 0
    if model_type == "qwen3_next" and experts == 0:
        raise ModelConfigError("model.num_experts must be >= 1 for qwen3_next")

    interval = _int(cfg, "full_attention_interval", 4) if hybrid else 0
    linear = tuple(hybrid and (i + 1) % interval != 0 for i in range(layers))

    mlp_only = _get(cfg, "mlp_only_layers", []) or []
    if not isinstance(mlp_only, list) or not all(isinstance(i, int) for i in mlp_only):
        raise ModelConfigError("model.mlp_only_layers must be a list of layer indices")
    mlp_only = frozenset(mlp_only)
    sparse_step = _int(cfg, "decoder_sparse_step", 1) if experts else 1
    if model_type in ("qwen3_5", "qwen3_5_moe"):
        moe = tuple(experts > 0 for _ in range(layers))
    else:
        moe = tuple(
            experts > 0 and i not in mlp_only and (i + 1) % sparse_step == 0 for i in range(layers)
        )
    any_dense = not all(moe)

    shared = _int(cfg, "shared_expert_intermediate_size", 0, minimum=0) if hybrid else 0
    if any_dense and experts and shared:
        raise ModelConfigError(
            "model has both dense MLP layers (mlp_only_layers/decoder_sparse_step) and a "
            "shared expert; asymtp cannot give both one `ffn` range yet"
        )

    spec = ModelSpec(
        model_type=model_type,
        family=family,
        hidden=hidden,
        vocab=_int(cfg, "vocab_size"),
        num_layers=layers,
        tie_embeddings=_bool(cfg, "tie_word_embeddings", family == "llama"),
        dtype_bytes=_dtype_bytes(cfg),
        q_heads=q_heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        q_gated=hybrid,
        qk_norm=family != "llama",
        attention_bias=_bool(cfg, "attention_bias", False),
        mlp_bias=_bool(cfg, "mlp_bias", False) if family == "llama" else False,
        linear_layers=linear,
        moe_layers=moe,
        intermediate=_int(cfg, "intermediate_size", None if any_dense else 0, minimum=0),
        experts=experts,
        experts_per_token=_int(cfg, "num_experts_per_tok", None if experts else 0, minimum=0),
        moe_intermediate=_int(cfg, "moe_intermediate_size", None if experts else 0, minimum=0),
        shared_intermediate=shared,
        lin_k_heads=_int(cfg, "linear_num_key_heads", None if hybrid else 0, minimum=0),
        lin_v_heads=_int(cfg, "linear_num_value_heads", None if hybrid else 0, minimum=0),
        lin_k_dim=_int(cfg, "linear_key_head_dim", None if hybrid else 0, minimum=0),
        lin_v_dim=_int(cfg, "linear_value_head_dim", None if hybrid else 0, minimum=0),
        conv_kernel=_int(cfg, "linear_conv_kernel_dim", 4 if hybrid else 0, minimum=0),
        quant=quant,
        router_quant=router_quant if experts else None,
        shared_gate_quant=shared_gate_quant if shared else None,
    )
    _check_shardable(spec)
    return spec


MAX_FFN_BLOCKS = 16384
"""FFN blocks a plan places (published models: under 1,000 of 64 columns)."""


def _check_unit_counts(spec: ModelSpec) -> None:
    """Refuse, by field, more units than any real model has: the planner's work grows with
    them (see MAX_UNITS for the counts read straight from the config)."""
    blocks = spec.ffn_dim // spec.ffn_block
    if blocks > MAX_FFN_BLOCKS:
        field = "intermediate_size" if spec.dense_layers else "shared_expert_intermediate_size"
        raise ModelConfigError(
            f"model.{field} ({spec.ffn_dim}) splits into {blocks} FFN blocks of "
            f"{spec.ffn_block} columns; at most {MAX_FFN_BLOCKS}"
        )


def _check_shardable(spec: ModelSpec) -> None:
    _check_unit_counts(spec)
    if spec.experts and not 1 <= spec.experts_per_token <= spec.experts:
        raise ModelConfigError("model.num_experts_per_tok must be between 1 and num_experts")
    if spec.lin_layers and (spec.lin_k_heads < 1 or spec.lin_v_heads % spec.lin_k_heads):
        raise ModelConfigError(
            f"model.linear_num_value_heads ({spec.lin_v_heads}) must be a positive "
            f"multiple of linear_num_key_heads ({spec.lin_k_heads})"
        )
    if spec.quant is not None:
        g = spec.quant.group_size
        # o_proj / out_proj take their input columns per head: a head must be whole groups.
        if spec.full_layers and spec.head_dim % g:
            raise ModelConfigError(
                f"model.head_dim ({spec.head_dim}) is not a multiple of the quantization "
                f"group_size ({g}); o_proj cannot be split by heads"
            )
        if spec.lin_layers and (spec.v_per_k * spec.lin_v_dim) % g:
            raise ModelConfigError(
                f"model.linear_value_head_dim x heads per key head "
                f"({spec.v_per_k * spec.lin_v_dim}) is not a multiple of group_size ({g})"
            )
