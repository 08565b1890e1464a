"""The one schema: HTTP bodies, CLI files and the executor's input are these models.

Units: node `bandwidth_gbps` is *memory* bandwidth in gigabytes per second (the figure
Apple publishes: M1 Ultra 800); link `bandwidth_gbps` is *network* bandwidth in gigabits per
second (Thunderbolt 5: 80). Memory is in bytes; `memory_gb` is accepted as a convenience
(decimal gigabytes, 1 GB = 10**9 bytes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from annotated_types import GroupedMetadata
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    Strict,
    StrictBool,
    field_validator,
    model_validator,
)

from protocol.config_reader import read_config
from protocol.connectivity import components
from protocol.measurements import FigureSource, InterfaceKind, Measurements, ThunderboltPort
from protocol.model_spec import ModelSpec

GB = 10**9
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_NODES = 256
MAX_LINKS = 4096
MAX_BYTES = 1 << 50  # 1 PiB: anything larger is a typo, not a machine
DEFAULT_OVERHEAD_BYTES = 1 << 30
"""The per-rank overhead of a bare `Constraints()`; a plan request that names none gets
`model_overhead_bytes` of its model instead."""
OVERHEAD_BASE_BYTES = 256 * 10**6
"""A rank process before any weights: Python, MLX, mlx-lm, and on rank 0 the tokenizer and the
HTTP server (100-250 MB measured on Linux CPU ranks)."""
OVERHEAD_PREFILL_TOKENS = 512
OVERHEAD_ACTIVATION_BYTES = 8
"""Per element of the widest per-token activation: float32, a result and its input alive."""


def model_overhead_bytes(spec: ModelSpec) -> int:
    """Runtime memory a rank needs besides weights and KV cache, growing with the model: the
    process itself plus a prefill chunk's widest activation (the logits over the vocabulary,
    the attention scores of all heads, or the MLP's hidden layer)."""
    widest = max(
        spec.vocab,
        spec.q_heads * OVERHEAD_PREFILL_TOKENS,
        spec.intermediate,
        spec.moe_intermediate * spec.experts_per_token,
        spec.hidden,
    )
    return OVERHEAD_BASE_BYTES + OVERHEAD_PREFILL_TOKENS * widest * OVERHEAD_ACTIVATION_BYTES


Range = tuple[NonNegativeInt, NonNegativeInt]
"""A half-open index range `[start, end)`."""

LinkKind = Literal["rdma", "thunderbolt", "ethernet"]
ShardingMode = Literal["asymmetric", "equal", "auto"]
ParallelismMode = Literal["tensor", "pipeline", "auto"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _whole_number(v: Any) -> Any:
    """4.0 -> 4: JSON writers differ on whole numbers; 4.5 stays and fails as an integer."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


class _WholeInt(GroupedMetadata):
    """An integer as clients send it: no "8192" for 8192 and no true for 1 (strict), but a
    whole-number float is the integer it equals."""

    def __iter__(self) -> Iterator[object]:
        yield Strict()
        yield BeforeValidator(_whole_number)


Whole = _WholeInt()
Number = Strict()
"""On a float field of a request: a number, not a numeric string or a boolean."""


def _finite_positive(v: float, what: str) -> float:
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must be a finite number > 0")
    return v


def _gb_to_bytes(gb: Any, what: str) -> int:
    if isinstance(gb, bool) or not isinstance(gb, int | float):
        raise ValueError(f"{what} must be a number")
    # Compared before any float conversion: a 400-digit integer overflows a float.
    if isinstance(gb, int) and gb > MAX_BYTES // GB:
        raise ValueError(f"{what} must be at most {MAX_BYTES // GB} (1 PiB)")
    if not math.isfinite(gb) or gb <= 0:
        raise ValueError(f"{what} must be a finite number > 0")
    return round(gb * GB)


class Node(StrictModel):
    id: Annotated[str, Field(pattern=NODE_ID_PATTERN)]
    memory_bytes: Annotated[
        int,
        Field(gt=0, le=MAX_BYTES, description="bytes; `memory_gb` (decimal GB) also works"),
        Whole,
    ]
    available_bytes: Annotated[
        int | None,
        Field(gt=0, le=MAX_BYTES, description="bytes; `available_gb` also works; default all"),
        Whole,
    ] = None
    bandwidth_gbps: Annotated[float, Field(gt=0, le=100_000, description="memory GB/s"), Number]
    address: Annotated[str | None, Field(max_length=255)] = None
    chip: Annotated[str | None, Field(max_length=128)] = None
    source: FigureSource | None = None
    """Where `bandwidth_gbps` comes from; None counts as `user`."""

    @model_validator(mode="before")
    @classmethod
    def _memory_gb(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for short, full in (("memory_gb", "memory_bytes"), ("available_gb", "available_bytes")):
                if short in data:
                    gb = data.pop(short)
                    if full in data:
                        raise ValueError(f"give {full} or {short}, not both")
                    data[full] = _gb_to_bytes(gb, short)
        return data

    @field_validator("bandwidth_gbps")
    @classmethod
    def _bw(cls, v: float) -> float:
        return _finite_positive(v, "bandwidth_gbps")

    @model_validator(mode="after")
    def _available_within_memory(self) -> Node:
        if self.available_bytes is not None and self.available_bytes > self.memory_bytes:
            raise ValueError("available_bytes cannot exceed memory_bytes")
        return self

    @property
    def usable_bytes(self) -> int:
        return self.available_bytes if self.available_bytes is not None else self.memory_bytes


class Link(StrictModel):
    a: str
    b: str
    kind: LinkKind = "ethernet"
    bandwidth_gbps: Annotated[
        float | None, Field(gt=0, le=100_000, description="network Gb/s; default by kind"), Number
    ] = None
    latency_us: Annotated[
        float | None, Field(ge=0, le=1_000_000, description="one-way µs; default by kind"), Number
    ] = None
    source: FigureSource | None = None
    """Where the figures come from; None counts as `user` where given, `assumed` where not."""

    @field_validator("bandwidth_gbps")
    @classmethod
    def _bw(cls, v: float | None) -> float | None:
        return None if v is None else _finite_positive(v, "bandwidth_gbps")

    @field_validator("latency_us")
    @classmethod
    def _lat(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("latency_us must be finite")
        return v


class Topology(StrictModel):
    nodes: Annotated[list[Node], Field(min_length=1, max_length=MAX_NODES)]
    links: Annotated[list[Link], Field(max_length=MAX_LINKS)] = []

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        ids = [n.id for n in self.nodes]
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise ValueError(f"duplicate node id {i!r}")
            seen.add(i)
        for k, link in enumerate(self.links):
            for end in (link.a, link.b):
                if end not in seen:
                    raise ValueError(f"links[{k}] names unknown node {end!r}")
            if link.a == link.b:
                raise ValueError(f"links[{k}] joins node {link.a!r} to itself")
        parts = components(ids, ((link.a, link.b) for link in self.links))
        if len(parts) > 1:
            listed = "; ".join(", ".join(sorted(p)) for p in parts)
            raise ValueError(
                f"nodes are not all connected: separate groups {listed}; add links between them"
            )
        return self


class Constraints(StrictModel):
    headroom: Annotated[float, Field(ge=0, lt=1), Number] = 0.1
    """Fraction of each node's usable memory kept free."""
    context_tokens: Annotated[int, Field(ge=1, le=10_000_000), Whole] = 8192
    batch_size: Annotated[int, Field(ge=1, le=4096), Whole] = 1
    """Concurrent sequences whose KV cache must fit."""
    sharding: ShardingMode = "auto"
    parallelism: ParallelismMode = "auto"
    """`tensor`: one stage over the used nodes (every layer split across them); `pipeline`:
    stages of one rank each; `auto`: the fastest of every layout, hybrids included."""
    overhead_bytes: Annotated[int, Field(ge=0, le=MAX_BYTES), Whole] = DEFAULT_OVERHEAD_BYTES
    """Per-rank runtime memory besides weights and cache (framework, activations)."""
    kv_cache_bytes_per_element: Annotated[int | None, Field(ge=1, le=4), Whole] = None
    """Defaults to the model's activation dtype (2 for bf16/fp16, 4 for float32)."""
    time_limit_s: Annotated[float, Field(gt=0, le=120), Number] = 10.0
    allow_unused_nodes: StrictBool = True


class PlanRequest(StrictModel):
    topology: Topology
    model: dict[str, Any]
    """A Hugging Face config.json object (with mlx-community's `quantization` block)."""
    constraints: Constraints = Constraints()

    @field_validator("model")
    @classmethod
    def _model_readable(cls, v: dict[str, Any]) -> dict[str, Any]:
        read_config(v)
        return v

    @model_validator(mode="after")
    def _overhead_for_the_model(self) -> PlanRequest:
        # A fixed guess (1 GB a rank) makes small models on small budgets infeasible and
        # under-counts large ones: unless the request names one, it follows the model.
        if "overhead_bytes" not in self.constraints.model_fields_set:
            overhead = model_overhead_bytes(read_config(self.model))
            constraints = self.constraints.model_copy(update={"overhead_bytes": overhead})
            constraints.model_fields_set.add("overhead_bytes")
            object.__setattr__(self, "constraints", constraints)
        return self


class Interface(StrictModel):
    name: Annotated[str, Field(max_length=64)]
    addresses: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=32)] = []
    """IPv4/IPv6 addresses with prefix length, e.g. `169.254.10.1/16`."""
    kind: InterfaceKind = "other"


class NodeFacts(StrictModel):
    """What an agent reports about its machine, so a topology can be built from the reports."""

    node_id: Annotated[str, Field(pattern=NODE_ID_PATTERN)]
    hostname: Annotated[str, Field(max_length=255)] = ""
    os: Annotated[str, Field(max_length=64)] = ""
    chip: Annotated[str | None, Field(max_length=128)] = None
    memory_bytes: Annotated[int, Field(gt=0, le=MAX_BYTES), Whole]
    available_bytes: Annotated[int, Field(gt=0, le=MAX_BYTES), Whole]
    interfaces: Annotated[list[Interface], Field(max_length=64)] = []
    rdma: StrictBool | None = None
    """RDMA over Thunderbolt enabled (macOS `rdma_ctl status`); None where unknown."""
    os_version: Annotated[str | None, Field(max_length=64)] = None
    """macOS `sw_vers` "26.2 (25C56)"; the kernel release elsewhere."""
    rdma_devices: Annotated[
        list[Annotated[str, Field(max_length=64)]] | None, Field(max_length=64)
    ] = None
    """`ibv_devices` (macOS) or /sys/class/infiniband (Linux); None where not looked at."""
    thunderbolt: Annotated[list[ThunderboltPort] | None, Field(max_length=16)] = None
    """Thunderbolt receptacles (macOS); None where the OS has no such report."""
    measure_port: Annotated[int | None, Field(ge=1, le=65535)] = None
    """Where this agent's measurement responder listens (on all its addresses)."""
    measurements: Measurements | None = None
