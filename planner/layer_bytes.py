"""Bytes of each decoder layer's tensors, by the unit they belong to (None: replicated).

One function per block kind (attention, MLA, Gated DeltaNet, dense MLP, MoE) lists what
mlx-lm's classes hold; each matrix is counted with the quantization of its own module path,
so mixed-precision checkpoints (per-module overrides) are counted as loaded.
"""

from __future__ import annotations

from collections import defaultdict

from protocol.model_spec import Attention, ModelSpec, QKNorm, Quant

STATE_BYTES = 4  # Gated DeltaNet keeps its recurrent state in float32
CORRECTION_BIAS_BYTES = 4  # mlx-lm keeps `e_score_correction_bias` in float32 (cast_predicate)
Bytes = dict[str | None, int]


def linear_bytes(out_dim: int, in_dim: int, quant: Quant | None, dtype_bytes: int) -> int:
    """Bytes of an (out, in) weight matrix as MLX holds it (nn.Linear or its quantized form);
    mlx-lm leaves a matrix whose input does not divide into groups unquantized."""
    if quant is None or in_dim % quant.group_size:
        return out_dim * in_dim * dtype_bytes
    return quant.matrix_bytes(out_dim, in_dim, dtype_bytes)


class LayerBytes:
    """Accumulates one layer's bytes per unit."""

    def __init__(self, spec: ModelSpec, layer: int) -> None:
        self.s = spec
        self.layer = layer
        self.out: Bytes = defaultdict(int)

    def mat(self, unit: str | None, module: str, rows: int, cols: int, count: int = 1) -> None:
        quant = self.s.quant_at(self.s.layer_path(self.layer, module))
        self.out[unit] += count * linear_bytes(rows, cols, quant, self.s.dtype_bytes)

    def vec(self, unit: str | None, values: int, item_bytes: int | None = None) -> None:
        self.out[unit] += values * (item_bytes or self.s.dtype_bytes)


def _gqa(b: LayerBytes) -> None:
    s, h, hd = b.s, b.s.hidden, b.s.head_dim
    b.mat("q_head", "self_attn.q_proj", s.q_head_rows, h)
    b.mat("q_head", "self_attn.o_proj", h, hd)
    for name in ("k_proj", "v_proj"):
        b.mat("kv_head", f"self_attn.{name}", hd, h)
    if s.attention_bias:
        b.vec("q_head", s.q_head_rows)
        b.vec("kv_head", 2 * hd)
    if s.sinks:
        b.vec("q_head", 1)
    if s.qk_norm is QKNorm.FULL_WIDTH:
        b.vec("q_head", hd)
        b.vec("kv_head", hd)
    elif s.qk_norm is QKNorm.PER_HEAD:
        b.vec(None, 2 * hd)


def _mla(b: LayerBytes) -> None:
    s, h = b.s, b.s.hidden
    if s.q_lora_rank:
        b.mat(None, "self_attn.q_a_proj", s.q_lora_rank, h)
        b.vec(None, s.q_lora_rank * (2 if s.attention_bias else 1))  # layernorm (+ bias)
        b.mat("q_head", "self_attn.q_b_proj", s.q_head_rows, s.q_lora_rank)
    else:
        b.mat("q_head", "self_attn.q_proj", s.q_head_rows, h)
    latent = s.kv_lora_rank + s.qk_rope_dim
    b.mat(None, "self_attn.kv_a_proj_with_mqa", latent, h)
    b.vec(None, s.kv_lora_rank + (latent if s.attention_bias else 0))
    b.mat("kv_head", "self_attn.embed_q", s.kv_lora_rank, s.qk_nope_dim)
    b.mat("kv_head", "self_attn.unembed_out", s.v_head_dim, s.kv_lora_rank)
    b.mat("q_head", "self_attn.o_proj", h, s.v_head_dim)


def _deltanet(b: LayerBytes) -> None:
    """One key head of Gated DeltaNet with its `v_per_k` value heads."""
    s, h, r = b.s, b.s.hidden, b.s.v_per_k
    dk, dv = s.lin_k_dim, s.lin_v_dim
    b.mat("lin_k_head", "linear_attn.in_proj_qkvz", 2 * dk + 2 * r * dv, h)  # q, k, v, gate z
    b.mat("lin_k_head", "linear_attn.in_proj_ba", 2 * r, h)  # b and a
    b.vec("lin_k_head", (2 * dk + r * dv) * s.conv_kernel + 2 * r)  # conv1d, dt_bias, A_log
    b.mat("lin_k_head", "linear_attn.out_proj", h, r * dv)
    b.vec(None, dv)  # the gated RMSNorm


def _glu(b: LayerBytes, unit: str | None, prefix: str, cols: int, count: int = 1) -> None:
    h = b.s.hidden
    b.mat(unit, f"{prefix}.gate_proj", cols, h, count)
    b.mat(unit, f"{prefix}.up_proj", cols, h, count)
    b.mat(unit, f"{prefix}.down_proj", h, cols, count)


def _dense_mlp(b: LayerBytes) -> None:
    s = b.s
    _glu(b, "ffn_block", "mlp", s.ffn_block)
    if s.mlp_bias:
        b.vec("ffn_block", 2 * s.ffn_block)
        b.vec(None, s.hidden)


def _moe(b: LayerBytes) -> None:
    s, n, h, e = b.s, b.s.moe_names, b.s.hidden, b.s.experts
    _glu(b, "expert", f"{n.block}.{n.experts}", s.moe_intermediate)
    if s.expert_bias:
        b.vec("expert", 2 * s.moe_intermediate + h)
    if n.router_linear:
        b.mat(None, f"{n.block}.{n.router}", e, h)
    else:
        b.vec(None, e * h)
    if s.router_bias:
        b.vec(None, e)
    if s.score_correction_bias:
        b.vec(None, e, CORRECTION_BIAS_BYTES)
    if s.shared_intermediate:
        _glu(b, "ffn_block", f"{n.block}.{n.shared}", s.shared_block)
        if s.shared_gated:
            b.mat(None, f"{n.block}.{n.shared}_gate", 1, h)


def layer_bytes(spec: ModelSpec, layer: int) -> Bytes:
    b = LayerBytes(spec, layer)
    b.vec(None, 2 * spec.hidden)  # input and post-attention norms
    if spec.linear_layers[layer]:
        _deltanet(b)
    elif spec.attention is Attention.MLA:
        _mla(b)
    else:
        _gqa(b)
        if spec.o_bias:
            b.vec(None, spec.hidden)
    if spec.moe_layers[layer]:
        _moe(b)
    elif spec.intermediate:
        _dense_mlp(b)
    return dict(b.out)


def allocated_tokens(spec: ModelSpec, layer: int, allocated: int) -> int:
    """Cache slots a layer allocates: sliding-window layers stop at their window."""
    if spec.sliding_layers and spec.sliding_layers[layer]:
        return min(allocated, spec.sliding_window)
    return allocated


def layer_cache(spec: ModelSpec, layer: int, allocated: int, kvb: int) -> Bytes:
    """KV cache or recurrent state bytes of one sequence in one layer, per unit."""
    s = spec
    if s.linear_layers[layer]:
        r = s.v_per_k
        conv = (s.conv_kernel - 1) * (2 * s.lin_k_dim + r * s.lin_v_dim) * kvb
        return {"lin_k_head": conv + r * s.lin_k_dim * s.lin_v_dim * STATE_BYTES}
    tokens = allocated_tokens(s, layer, allocated)
    if s.attention is Attention.MLA:
        # One latent and one rope key per token, whatever the heads: every rank holds it all.
        return {None: (s.kv_lora_rank + s.qk_rope_dim) * tokens * kvb}
    return {"kv_head": 2 * s.head_dim * tokens * kvb}
