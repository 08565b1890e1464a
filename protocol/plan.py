"""The planner's answer: a plan's ranks, stages and estimates (the request is in
`protocol.schema`)."""

from __future__ import annotations

from typing import Literal

from pydantic import NonNegativeInt

from protocol.measurements import FigureSource
from protocol.schema import Range, StrictModel


class MemoryBreakdown(StrictModel):
    weights: int
    kv_cache: int
    overhead: int
    total: int


class RankPlan(StrictModel):
    rank: int
    node_id: str
    address: str | None = None
    q_heads: Range
    kv_heads: Range
    ffn: Range
    experts: Range | None = None
    linear_k_heads: Range | None = None
    linear_v_heads: Range | None = None
    share: float
    """This rank's fraction of the sharded weight bytes."""
    memory_bytes: MemoryBreakdown
    budget_bytes: int
    decode_ms: float
    """Time to read this rank's bytes for one decode token at its memory bandwidth."""
    stage: NonNegativeInt = 0
    """The pipeline stage this rank belongs to (see `Plan`)."""
    layers: Range
    """The decoder layers this rank runs, half-open `[start, end)`; the same for every rank of
    its stage."""


class ModelSummary(StrictModel):
    model_type: str
    family: str
    num_layers: int
    full_attention_layers: int
    linear_attention_layers: int
    q_heads: int
    kv_heads: int
    head_dim: int
    ffn_dim: int
    ffn_block: int
    """`ffn` ranges are multiples of this (the quantization group size when quantized)."""
    experts: int
    experts_per_token: int
    linear_k_heads: int
    linear_v_heads: int
    bits: int | None
    group_size: int | None
    weight_bytes: int


class Estimates(StrictModel):
    decode_ms_per_token: float
    tokens_per_s: float
    bottleneck_rank: int
    compute_ms: float
    """Slowest rank's memory-read time per decode token."""
    allreduce_ms: float
    """All-reduce time per decode token over the ring's slowest link."""
    fluid_bound_ms: float
    """Lower bound: every rank reads the replicated bytes, the rest spreads over all bandwidth."""
    fluid_bound_used_ms: float | None = None
    """The same bound over the nodes this plan uses: each reads the replicated bytes, the rest
    spreads over their bandwidth in proportion. `compute_ms` above it is the cost of whole
    units (heads, experts, FFN blocks) and of memory budgets that cap the fastest nodes."""
    equal_split_decode_ms: float | None = None
    """The same estimate for today's even split, where one fits."""
    transfer_ms: float = 0.0
    """Activation transfers between pipeline stages per decode token."""
    stages: list[StageEstimate] = []
    """One entry per pipeline stage, in pipeline order (one entry for a tensor-only plan)."""


class StageEstimate(StrictModel):
    stage: int
    layers: Range
    ranks: list[int]
    compute_ms: float
    """The stage's slowest rank: its memory-read time per decode token over its layers."""
    allreduce_ms: float
    """The stage's all-reduces per decode token (zero for a stage of one rank)."""
    transfer_ms: float
    """Sending this stage's output activation to the next stage (the last stage sends to
    stage 0, which holds the output head); zero for a single stage."""


class SolverInfo(StrictModel):
    wall_ms: float
    objective: float | None = None
    bound: float | None = None
    time_limited: bool = False
    workers: int
    seed: int
    version: str


class Plan(StrictModel):
    """A plan's ranks form pipeline stages. Ranks with the same `layers` form one stage: a
    tensor-parallel group whose slices partition the stage's units exactly as a single-stage
    plan does. Stages partition `[0, num_layers)` in order; ranks are numbered stage by stage
    in pipeline order (rank 0 is in stage 0), and within a stage in its ring order. Stage 0
    holds the embeddings and the output head: the last stage sends its final hidden state back
    to stage 0, so rank 0 computes logits and decides every token itself (one broadcast, as in
    a single stage), tied embeddings are stored once, and the hop back carries one hidden
    vector instead of a vocabulary of logits. A plan with one stage is a tensor-parallel plan;
    a stage of one rank is plain pipeline."""

    feasible: bool
    status: Literal["optimal", "feasible", "infeasible"]
    plan_id: str
    sharding: Literal["asymmetric", "equal"] | None = None
    ranks: list[RankPlan] = []
    ring: list[str] = []
    estimates: Estimates | None = None
    reasons: list[str] = []
    warnings: list[str] = []
    model: ModelSummary | None = None
    solver: SolverInfo
    sources: dict[str, FigureSource] = {}
    """`node:ID` / `link:A-B` -> whether the figures the estimate used were measured,
    assumed (defaults) or given by the user."""


def plan_json(plan: Plan) -> str:
    """The one JSON rendering of a plan: the CLI's `--json`, the HTTP body, a rank's input."""
    return plan.model_dump_json(indent=2)
