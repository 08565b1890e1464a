"""The architecture facts the planner and the executor share, read from a config.json.

`ModelSpec` is what both sides know about a model: its layer kinds, head and FFN sizes, and
how each module is quantized. `protocol.config_reader.read_config` fills it in, one small
reader per family. Sizes follow mlx-lm's model classes: `q_proj` of Qwen3-Next/3.5 full
attention emits queries and an output gate (twice `n_heads x head_dim`); Multi-head Latent
Attention (DeepSeek-V3, Kimi-K2) keeps one latent KV per token that every rank holds whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from protocol.quantization import ModelConfigError, Quant, Quantization

KV_CACHE_STEP = 256  # mlx-lm's KVCache grows in steps of 256 tokens
MAX_LAYERS = 1024  # the largest published models have under 200; more is a typo
MAX_CONFIG_NESTING = 32
__all__ = ["KV_CACHE_STEP", "ModelConfigError", "ModelSpec", "Quant"]


class Attention(StrEnum):
    GQA = "gqa"  # query heads in groups over K/V heads (MHA and MQA included)
    MLA = "mla"  # multi-head latent attention: heads over one replicated latent KV


class QKNorm(StrEnum):
    NONE = "none"
    PER_HEAD = "per_head"  # one RMSNorm of head_dim applied to each head: replicated
    FULL_WIDTH = "full_width"  # RMSNorm over all heads together (MiniMax): weights by head


@dataclass(frozen=True)
class MoENames:
    """mlx-lm's module names inside a decoder layer's MoE block."""

    block: str = "mlp"
    experts: str = "switch_mlp"
    router: str = "gate"
    shared: str = "shared_expert"
    router_linear: bool = True
    """False where the router is a bare weight (DeepSeek's MoEGate), which MLX never quantizes."""


@dataclass(frozen=True)
class ModelSpec:
    model_type: str
    family: str  # the mlx-lm model class (qwen3_5 shares qwen3_next's layout, kimi_k2 deepseek_v3)
    hidden: int
    vocab: int
    num_layers: int
    tie_embeddings: bool
    dtype_bytes: int
    # attention
    q_heads: int
    kv_heads: int
    head_dim: int
    q_gated: bool
    qk_norm: QKNorm
    attention_bias: bool
    o_bias: bool
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
    quantization: Quantization | None
    # the families added since: defaults keep the Qwen/Llama readers short
    attention: Attention = Attention.GQA
    q_lora_rank: int = 0  # MLA: 0 means a plain q_proj
    kv_lora_rank: int = 0
    qk_nope_dim: int = 0
    qk_rope_dim: int = 0
    v_head_dim: int = 0
    sinks: bool = False  # gpt-oss: one learned logit per query head
    sliding_layers: tuple[bool, ...] = ()
    sliding_window: int = 0
    expert_bias: bool = False
    router_bias: bool = False
    score_correction_bias: bool = False  # DeepSeek/GLM/MiniMax `e_score_correction_bias`
    shared_gated: bool = False  # Qwen's sigmoid `shared_expert_gate`
    moe_names: MoENames = MoENames()
    prefix: str = ""  # "language_model." for Qwen3.5's multimodal wrapper

    # ---- quantization -----------------------------------------------------------------
    @property
    def quant(self) -> Quant | None:
        return self.quantization.default if self.quantization else None

    def quant_at(self, path: str) -> Quant | None:
        """How the module at `path` (mlx-lm's parameter path, no leaf) is stored."""
        return self.quantization.at(path) if self.quantization else None

    def layer_path(self, layer: int, module: str) -> str:
        return f"{self.prefix}model.layers.{layer}.{module}"

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
    def q_head_rows(self) -> int:
        """Rows of the query projection per head."""
        if self.attention is Attention.MLA:
            return self.qk_nope_dim + self.qk_rope_dim
        return self.head_dim * (2 if self.q_gated else 1)

    @property
    def o_head_cols(self) -> int:
        """Input columns of `o_proj` per query head."""
        return self.v_head_dim if self.attention is Attention.MLA else self.head_dim

    @property
    def ffn_dim(self) -> int:
        """The dimension `ffn` ranges cover: the dense MLP's, else the shared expert's."""
        if self.dense_layers and self.intermediate:
            return self.intermediate
        return self.shared_intermediate

    @property
    def ffn_blocks(self) -> int:
        """FFN units: each a block of dense-MLP columns and, in proportion, shared-expert
        columns, both whole quantization groups so `down_proj` splits on group bounds."""
        dense = self.intermediate if self.dense_layers else 0
        dims = [d for d in (dense, self.shared_intermediate if self.n_moe_layers else 0) if d]
        if not dims:
            return 0
        return math.gcd(*(d // _alignment(d, self.quantization) for d in dims))

    @property
    def ffn_block(self) -> int:
        """Columns of `ffn_dim` per FFN unit; `ffn` ranges are multiples of it."""
        return self.ffn_dim // self.ffn_blocks if self.ffn_blocks else 1

    @property
    def shared_block(self) -> int:
        """Shared-expert columns per FFN unit."""
        return self.shared_intermediate // self.ffn_blocks if self.ffn_blocks else 0


def _alignment(dim: int, quant: Quantization | None) -> int:
    if quant is not None and dim % quant.group_size == 0:
        return quant.group_size
    return next(b for b in (64, 32, 16, 8, 4, 2, 1) if dim % b == 0)
