"""Bytes per unit of work: what a rank holds and reads for each head, FFN block and expert.

Every sharded dimension is counted in *units* (a query head, a KV head, a block of FFN
columns, an expert, a linear-attention key head with its value heads). A rank's memory and
its per-token reads are then linear in its unit counts, which is what keeps the CP-SAT model
linear. Quantized matrices are counted as MLX stores them: packed weights (`bits/8` bytes a
value) plus one scale and one bias per group, in the model's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TypeVar

from protocol.model_spec import KV_CACHE_STEP, ModelSpec, Quant


class Unit(StrEnum):
    """The units a rank's share is counted in (the plan's ranges are ranges of these)."""

    Q_HEAD = "q_head"
    KV_HEAD = "kv_head"
    FFN_BLOCK = "ffn_block"
    EXPERT = "expert"
    LIN_K_HEAD = "lin_k_head"
    """A linear-attention key head with its value heads."""


UNITS = tuple(Unit)
SHARDED = (Unit.FFN_BLOCK, Unit.EXPERT, Unit.LIN_K_HEAD)
"""Units any node holds any number of; attention goes by KV groups (G query heads and their
KV head), or part of one group with its KV head copied."""
STATE_BYTES = 4  # Gated DeltaNet keeps its recurrent state in float32
V = TypeVar("V")


def linear_bytes(out_dim: int, in_dim: int, quant: Quant | None, dtype_bytes: int) -> int:
    """Bytes of an (out, in) weight matrix as MLX holds it (nn.Linear or its quantized form)."""
    if quant is None or in_dim % quant.group_size:
        return out_dim * in_dim * dtype_bytes
    packed = out_dim * in_dim * quant.bits // 8
    scales_and_biases = 2 * out_dim * (in_dim // quant.group_size) * dtype_bytes
    return packed + scales_and_biases


@dataclass(frozen=True)
class UnitCosts:
    """Per-unit and replicated byte counts for one model and one set of constraints."""

    total_units: dict[Unit, int]
    weight: dict[Unit, int]
    """Bytes of weights a rank holds per unit."""
    read: dict[Unit, float]
    """Bytes a rank reads per decode token per unit (experts by expected activation)."""
    cache: dict[Unit, int]
    """KV cache / linear-attention state bytes per unit at the requested context."""
    replicated_weight: int
    replicated_read: int

    def held(self, u: Unit) -> int:
        """Bytes a rank holds per unit: weights and cache."""
        return self.weight[u] + self.cache[u]

    def per_token(self, u: Unit) -> float:
        """Bytes a rank reads per decode token per unit: weights and the cache attended over."""
        return self.read[u] + self.cache[u]

    def weights_of(self, counts: Mapping[Unit, int]) -> int:
        return self.replicated_weight + sum(self.weight[u] * counts.get(u, 0) for u in UNITS)

    def cache_of(self, counts: Mapping[Unit, int]) -> int:
        return sum(self.cache[u] * counts.get(u, 0) for u in UNITS)

    def read_of(self, counts: Mapping[Unit, int]) -> float:
        """Bytes read per decode token: weights, plus the KV cache/state it attends over."""
        return self.replicated_read + sum(self.per_token(u) * counts.get(u, 0) for u in UNITS)

    @cached_property
    def sharded_held(self) -> int:
        """Bytes of sharded weights and cache held, over all ranks."""
        return sum(self.held(u) * self.total_units[u] for u in UNITS)

    @cached_property
    def sharded_read(self) -> float:
        """Bytes of sharded weights and cache read per token, over all ranks."""
        return sum(self.per_token(u) * self.total_units[u] for u in UNITS)

    @property
    def sharded_weight(self) -> int:
        return sum(self.weight[u] * self.total_units[u] for u in UNITS)

    @property
    def total_weight(self) -> int:
        return self.replicated_weight + self.sharded_weight


def _attention_units(s: ModelSpec) -> tuple[int, int]:
    q, dt, h, hd = s.quant, s.dtype_bytes, s.hidden, s.head_dim
    q_rows = hd * (2 if s.q_gated else 1)
    bias = s.attention_bias
    per_q = (
        linear_bytes(q_rows, h, q, dt) + linear_bytes(h, hd, q, dt) + (q_rows * dt if bias else 0)
    )
    per_kv = 2 * linear_bytes(hd, h, q, dt) + (2 * hd * dt if bias else 0)
    return per_q * s.full_layers, per_kv * s.full_layers


def _ffn_unit(s: ModelSpec) -> int:
    if s.ffn_dim == 0:
        return 0
    b, q, dt, h = s.ffn_block, s.quant, s.dtype_bytes, s.hidden
    per_block = 2 * linear_bytes(b, h, q, dt) + linear_bytes(h, b, q, dt)
    if s.mlp_bias:
        per_block += 2 * b * dt
    return per_block * s.ffn_layers


def _expert_unit(s: ModelSpec) -> int:
    if not s.experts:
        return 0
    q, dt, h, i = s.quant, s.dtype_bytes, s.hidden, s.moe_intermediate
    return (2 * linear_bytes(i, h, q, dt) + linear_bytes(h, i, q, dt)) * s.n_moe_layers


def _linear_attention_unit(s: ModelSpec) -> int:
    """One key head of Gated DeltaNet with its `v_per_k` value heads."""
    if not s.lin_layers:
        return 0
    q, dt, h, r = s.quant, s.dtype_bytes, s.hidden, s.v_per_k
    dk, dv = s.lin_k_dim, s.lin_v_dim
    in_rows = 2 * dk + 2 * r * dv  # q, k, v and the output gate z
    conv_channels = 2 * dk + r * dv
    per_head = (
        linear_bytes(in_rows, h, q, dt)
        + 2 * linear_bytes(r, h, q, dt)  # b and a (in_proj_ba, or in_proj_b + in_proj_a)
        + conv_channels * s.conv_kernel * dt
        + 2 * r * dt  # dt_bias, A_log
        + linear_bytes(h, r * dv, q, dt)
    )
    return per_head * s.lin_layers


def _replicated(s: ModelSpec) -> tuple[int, int]:
    """(bytes held, bytes read per token) of what every rank keeps whole."""
    q, dt, h = s.quant, s.dtype_bytes, s.hidden
    embed = linear_bytes(s.vocab, h, q, dt)
    embed_row = linear_bytes(1, h, q, dt)
    lm_head = 0 if s.tie_embeddings else linear_bytes(s.vocab, h, q, dt)
    norms = h * dt * (1 + 2 * s.num_layers)
    if s.qk_norm:
        norms += 2 * s.head_dim * dt * s.full_layers
    if s.lin_layers:
        norms += s.lin_v_dim * dt * s.lin_layers
    biases = h * dt * s.full_layers if s.attention_bias else 0
    if s.mlp_bias:
        biases += h * dt * s.dense_layers
    routers = 0
    if s.experts:
        routers += linear_bytes(s.experts, h, s.router_quant, dt) * s.n_moe_layers
    if s.shared_intermediate:
        routers += linear_bytes(1, h, s.shared_gate_quant, dt) * s.n_moe_layers
    fixed = norms + biases + routers
    # Tied embeddings are read in full as the output projection.
    out_read = embed if s.tie_embeddings else lm_head
    return embed + lm_head + fixed, embed_row + out_read + fixed


def unit_costs(
    spec: ModelSpec, context_tokens: int, batch_size: int = 1, kv_bytes: int | None = None
) -> UnitCosts:
    kvb = kv_bytes or spec.dtype_bytes
    q_head, kv_head = _attention_units(spec)
    ffn = _ffn_unit(spec)
    expert = _expert_unit(spec)
    lin = _linear_attention_unit(spec)
    weight = {"q_head": q_head, "kv_head": kv_head, "ffn_block": ffn, "expert": expert}
    weight["lin_k_head"] = lin

    read: dict[str, float] = {u: float(b) for u, b in weight.items()}
    if spec.experts:
        read["expert"] = expert * spec.experts_per_token / spec.experts

    allocated = math.ceil(context_tokens / KV_CACHE_STEP) * KV_CACHE_STEP
    kv_cache = 2 * spec.head_dim * allocated * kvb * batch_size * spec.full_layers
    lin_state = 0
    if spec.lin_layers:
        r = spec.v_per_k
        conv = (spec.conv_kernel - 1) * (2 * spec.lin_k_dim + r * spec.lin_v_dim) * kvb
        state = r * spec.lin_k_dim * spec.lin_v_dim * STATE_BYTES
        lin_state = (conv + state) * batch_size * spec.lin_layers
    cache = {"q_head": 0, "kv_head": kv_cache, "ffn_block": 0, "expert": 0}
    cache["lin_k_head"] = lin_state

    total_units = {
        "q_head": spec.q_heads,
        "kv_head": spec.kv_heads,
        "ffn_block": spec.ffn_dim // spec.ffn_block if spec.ffn_dim else 0,
        "expert": spec.experts,
        "lin_k_head": spec.lin_k_heads if spec.lin_layers else 0,
    }
    replicated_weight, replicated_read = _replicated(spec)
    return UnitCosts(
        total_units=_by_unit(total_units),
        weight=_by_unit(weight),
        read=_by_unit(read),
        cache=_by_unit(cache),
        replicated_weight=replicated_weight,
        replicated_read=replicated_read,
    )


def _by_unit(values: Mapping[str, V]) -> dict[Unit, V]:
    return {Unit(u): v for u, v in values.items()}
