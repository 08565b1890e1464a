"""Bytes per unit of work: what a rank holds and reads for each head, FFN block and expert.

Every sharded dimension is counted in *units* (a query head, a KV head, a block of FFN
columns, an expert, a linear-attention key head with its value heads). A rank's memory and
its per-token reads are then linear in its unit counts, which is what keeps the CP-SAT model
linear. Quantized matrices are counted as MLX stores them (`planner.layer_bytes`), each with
its own module's quantization. What every rank holds whole (embeddings, norms, routers, and
Multi-head Latent Attention's latent KV cache) is `replicated_*`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

from planner.layer_bytes import STATE_BYTES, Bytes, layer_bytes, layer_cache, linear_bytes
from protocol.model_spec import KV_CACHE_STEP, ModelSpec


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
__all__ = [
    "SHARDED",
    "STATE_BYTES",
    "UNITS",
    "LayerTable",
    "Unit",
    "UnitCosts",
    "linear_bytes",
    "unit_costs",
]


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
    """Bytes every rank reads per token whole: its replicated weights and cache."""
    replicated_cache: int = 0
    """Cache every rank holds whole (MLA's latent KV): it does not shrink with more ranks."""

    @property
    def replicated_held(self) -> int:
        return self.replicated_weight + self.replicated_cache

    def held(self, u: Unit) -> int:
        """Bytes a rank holds per unit: weights and cache."""
        return self.weight[u] + self.cache[u]

    def per_token(self, u: Unit) -> float:
        """Bytes a rank reads per decode token per unit: weights and the cache attended over."""
        return self.read[u] + self.cache[u]

    def weights_of(self, counts: Mapping[Unit, int]) -> int:
        return self.replicated_weight + sum(self.weight[u] * counts.get(u, 0) for u in UNITS)

    def cache_of(self, counts: Mapping[Unit, int]) -> int:
        return self.replicated_cache + sum(self.cache[u] * counts.get(u, 0) for u in UNITS)

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


def _sum_layers(per_layer: list[Bytes]) -> Bytes:
    total: Bytes = dict.fromkeys([None, *UNITS], 0)
    for layer in per_layer:
        for unit, n in layer.items():
            total[unit] += n
    return total


def _outer(s: ModelSpec) -> tuple[int, int]:
    """(bytes held, bytes read per token) of the embeddings, output head and final norm."""
    dt, h = s.dtype_bytes, s.hidden
    embed = linear_bytes(s.vocab, h, s.quant_at(f"{s.prefix}model.embed_tokens"), dt)
    embed_row = linear_bytes(1, h, s.quant_at(f"{s.prefix}model.embed_tokens"), dt)
    lm_head = (
        0 if s.tie_embeddings else linear_bytes(s.vocab, h, s.quant_at(f"{s.prefix}lm_head"), dt)
    )
    # Tied embeddings are read in full as the output projection.
    out_read = embed if s.tie_embeddings else lm_head
    return embed + lm_head + h * dt, embed_row + out_read + h * dt


@dataclass(frozen=True)
class LayerTable:
    """Each decoder layer's bytes per unit (weights held, cache held), summed as prefixes so
    that the costs of any range of layers (a pipeline stage) are two subtractions."""

    spec: ModelSpec
    batch_size: int
    held: list[Bytes]
    """held[i]: the bytes of layers [0, i)."""
    cache: list[Bytes]

    @classmethod
    def of(
        cls, spec: ModelSpec, context_tokens: int, batch_size: int = 1, kv_bytes: int | None = None
    ) -> LayerTable:
        kvb = kv_bytes or spec.dtype_bytes
        allocated = math.ceil(context_tokens / KV_CACHE_STEP) * KV_CACHE_STEP
        held = [layer_bytes(spec, i) for i in range(spec.num_layers)]
        cache = [layer_cache(spec, i, allocated, kvb) for i in range(spec.num_layers)]
        return cls(spec, batch_size, _prefixes(held), _prefixes(cache))

    def costs(self, layers: tuple[int, int] | None = None, outer: bool = True) -> UnitCosts:
        """The costs of decoder layers `[start, end)` (all by default), with the embeddings,
        output head and final norm when `outer` (pipeline stage 0 holds them)."""
        start, end = layers or (0, self.spec.num_layers)
        held = _between(self.held, start, end)
        cache = _between(self.cache, start, end)
        return _unit_costs(self.spec, held, cache, self.batch_size, outer)


def _prefixes(per_layer: list[Bytes]) -> list[Bytes]:
    out = [_sum_layers([])]
    for layer in per_layer:
        out.append(_sum_layers([out[-1], layer]))
    return out


def _between(prefixes: list[Bytes], start: int, end: int) -> Bytes:
    return {u: prefixes[end][u] - prefixes[start][u] for u in prefixes[end]}


def unit_costs(
    spec: ModelSpec, context_tokens: int, batch_size: int = 1, kv_bytes: int | None = None
) -> UnitCosts:
    """The costs of the whole model on one stage."""
    return LayerTable.of(spec, context_tokens, batch_size, kv_bytes).costs()


def _unit_costs(
    spec: ModelSpec, held: Bytes, cache: Bytes, batch_size: int, outer: bool
) -> UnitCosts:
    total_units = {
        Unit.Q_HEAD: spec.q_heads,
        Unit.KV_HEAD: spec.kv_heads,
        Unit.FFN_BLOCK: spec.ffn_blocks,
        Unit.EXPERT: spec.experts,
        Unit.LIN_K_HEAD: spec.lin_k_heads if spec.lin_layers else 0,
    }
    weight = {u: held[u] for u in UNITS}
    read = {u: float(b) for u, b in weight.items()}
    if spec.experts:
        read[Unit.EXPERT] = weight[Unit.EXPERT] * spec.experts_per_token / spec.experts
    outer_held, outer_read = _outer(spec) if outer else (0, 0)
    replicated_cache = (cache[None] or 0) * batch_size
    replicated_weight = outer_held + (held[None] or 0)
    return UnitCosts(
        total_units=total_units,
        weight=weight,
        read=read,
        cache={u: cache[u] * batch_size for u in UNITS},
        replicated_weight=replicated_weight,
        replicated_read=outer_read + (held[None] or 0) + replicated_cache,
        replicated_cache=replicated_cache,
    )
