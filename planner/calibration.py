"""Every constant of the decode-time model, each with its source, and the functions that use them.

A decode token on a tensor-parallel group costs::

    slowest rank:  bytes it reads / (peak bandwidth × DECODE_BANDWIDTH_EFFICIENCY)
                   + LAYER_FIXED_US × layers
    all-reduces:   2 × layers × ring_allreduce_us(the ring's hops, message bytes)

where the bytes a rank reads include the KV cache it attends over, so decode slows as the
context grows (`planner.costs` counts them; they are read at the same efficiency as weights).

**Peak bandwidth.** A node's `bandwidth_gbps` is a peak figure, like Apple's specifications
(`planner.chips`), whether the user typed it or the chip table filled it in: the efficiency
factor applies to it always, so a user-given figure and a looked-up one mean the same thing. A
node whose figure is `source: measured` (`executor.measure_memory`: a streaming read with MLX)
has it read as STREAM_READ_EFFICIENCY of its peak first (`peak_bandwidth_gbps`). A user who
measured what MLX decode itself achieves gives `peak_equivalent_gbps` of it.

**Links.** A link's own `latency_us` / `bandwidth_gbps` override LINK_DEFAULTS for its kind.
The all-reduce backend is a property of the group, not of its hops, and the planner uses the
runtime's own rule (`protocol.connectivity.runs_jaccl`, which `service.assignments` applies):
JACCL when every pair of the used nodes has a direct RDMA link, else MLX's TCP ring. A JACCL
ring's hops are those direct links; a TCP ring's hops are the cheapest paths between ring
neighbours, every RDMA link on them carrying TCP at no less than Thunderbolt TCP latency
(`tcp_latency_us`). Under one backend a ring costs what its dearest hop would cost in a ring of
the same size made of that hop alone (`ring_allreduce_us`), so the solver prices each arc on
its own, per backend, and takes the maximum over the chosen ones.

**Where it is wired** (every price goes through these functions): `problem.time_coefficient`
and `problem.fluid_time_ps` read at `effective_bandwidth_gbps`; `topology.allreduce_us` is
`uniform_ring_allreduce_us`; `layout.rank_plans` adds `fixed_us` to each rank's `decode_ms`,
and `plan.Cluster.fixed_us` adds it to the solver's per-plan constant, so that the reported
decode time stays the solver's objective (every used rank pays it alike: it adds to the
slowest rank's time exactly once); `plan.fluid_bound_ms` / `fluid_used_ms` and
`plan.beyond_model_range` use the same effective bandwidth and fixed time.

**How the constants were fitted** (`python -m bench.reality_fit` re-derives them). The *fit*
rows of `bench/reality.py` are exo's published runs of Qwen3-235B-A22B 8-bit and DeepSeek-V3.1
4-bit on 1 / 2 / 4 M3 Ultras over Thunderbolt 5 RDMA, with the planner's own byte counts (a hand
count of DeepSeek-V3.1's config, 19.7 GB sharded + 1.05 GB replicated per token, agreed).
The single-node rows, which have no all-reduce, fit DECODE_BANDWIDTH_EFFICIENCY and
LAYER_FIXED_US (they differ in layers per byte read, which separates the two); the multi-node
rows then fit SYNC_US[jaccl]; each step minimises the worst relative error. Worst fit error:
12.4 %. The other rows of that table (Mistral-7B on one Mac, the 32k-context row, Kimi-K2) are
held out. Kimi-K2 Thinking was once estimated a third too fast: exo runs its native INT4
checkpoint (routed experts 4-bit in groups of 32, attention, shared experts, the dense layer and
lm_head in bf16: 34.4 GB read a token on one node against 18.1 GB for the uniform 4-bit conversion), which the
byte model now reads from its compressed-tensors config; no constant changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class LinkType(StrEnum):
    """`protocol.schema.LinkKind` as an enum: the kinds the defaults are for."""

    RDMA = "rdma"
    THUNDERBOLT = "thunderbolt"
    ETHERNET = "ethernet"


class Collective(StrEnum):
    """The all-reduce backend of a group (`protocol.connectivity.runs_jaccl` decides)."""

    JACCL = "jaccl"
    RING = "ring"


@dataclass(frozen=True)
class LinkDefault:
    latency_us: float
    bandwidth_gbps: float
    source: str


LINK_DEFAULTS: dict[LinkType, LinkDefault] = {
    LinkType.RDMA: LinkDefault(
        5.0,
        80.0,
        "RDMA over Thunderbolt 5: send latency ~4-5 µs, 69-75 Gb/s measured, 80 Gb/s nominal "
        "(shared/README.md 'Links', from Jeff Geerling's and exo's Thunderbolt 5 RDMA tests)",
    ),
    LinkType.THUNDERBOLT: LinkDefault(
        170.0,
        40.0,
        "TCP over Thunderbolt: round trip 0.34-0.6 ms on Thunderbolt 5 (shared/README.md "
        "'Links'), so half the best round trip one way; 40 Gb/s is Thunderbolt 4's line rate, "
        "the lower of the two generations the kind covers",
    ),
    LinkType.ETHERNET: LinkDefault(
        250.0,
        10.0,
        "10 GbE (the Mac Studio port) through a switch; the latency is an assumption, no public "
        "measurement found: the same TCP stack as Thunderbolt plus a switch hop",
    ),
}

DECODE_BANDWIDTH_EFFICIENCY = 0.545
"""Share of the peak memory bandwidth that MLX decode achieves on the bytes it must read.
Fitted (module docstring). Independent check, held out: mlx-lm 0.31.1 decodes Mistral-7B 4-bit
on an M3 Ultra at 110-120 tok/s, 62-81 % of the bandwidth-limited rate by that author's count
(https://pokgak.xyz/experiments/mlx-inference-throughput-gap); this model estimates it 7 % low.
The same page measures 4-bit quantized mat-vec products at 22 % of peak on their own."""

STREAM_READ_EFFICIENCY = 0.82
"""Share of the peak memory bandwidth a plain streaming pass over a large array reaches: a 2 GB
copy ran at 669 of 819 GB/s on an M3 Ultra (https://pokgak.xyz/experiments/
mlx-inference-throughput-gap, 'Raw Memory Bandwidth Baseline'). A measured node figure is such a
pass, so it is this share of the peak the rest of the model scales."""

LAYER_FIXED_US = 2.0
"""Per layer and token, paid by every rank whatever its share: kernel launches and the work no
byte count sees. Fitted (module docstring): the single-node rows leave almost nothing to it
once the bandwidth share is fitted, so it is small, and it matters only for small models."""

SYNC_US: dict[Collective, float] = {
    Collective.JACCL: 78.0,
    Collective.RING: 78.0,
}
"""Per all-reduce, once, on top of the hops' wire time: each `all_sum` ends the GPU's command
buffer, hands the buffer to the collective and waits for it. JACCL: fitted (module docstring);
it is what makes exo's runs look like ~100 µs per synchronisation against ~5 µs of raw RDMA
latency. TCP ring: no public tensor-parallel decode over TCP was found (llama.cpp's TCP rows
split layers, not tensors), so it is taken equal to JACCL's: the hand-off is the same, the
ring's slower wire is priced by its hops."""


class HopLike(Protocol):
    @property
    def latency_us(self) -> float: ...
    @property
    def bandwidth_gbps(self) -> float: ...


def effective_bandwidth_gbps(peak_gbps: float) -> float:
    """What decode reads at on a node whose peak memory bandwidth is `peak_gbps` (GB/s)."""
    return peak_gbps * DECODE_BANDWIDTH_EFFICIENCY


def peak_bandwidth_gbps(bandwidth_gbps: float, measured: bool) -> float:
    """The peak figure behind a node's `bandwidth_gbps`: as given, or, for a measured streaming
    read, scaled up by STREAM_READ_EFFICIENCY."""
    return bandwidth_gbps / STREAM_READ_EFFICIENCY if measured else bandwidth_gbps


def peak_equivalent_gbps(decode_gbps: float) -> float:
    """The `bandwidth_gbps` to give a node whose MLX decode was measured to read `decode_gbps`
    (bytes read per token × tokens/s): the peak figure the planner scales back down."""
    return decode_gbps / DECODE_BANDWIDTH_EFFICIENCY


def read_ms(bytes_per_token: float, peak_gbps: float) -> float:
    """Milliseconds to read `bytes_per_token` on a node of peak bandwidth `peak_gbps`."""
    return bytes_per_token / effective_bandwidth_gbps(peak_gbps) / 1e6


def fixed_us(num_layers: int) -> float:
    """Per-token time every rank pays whatever its share (microseconds)."""
    return LAYER_FIXED_US * num_layers


def tcp_latency_us(kind: str, latency_us: float) -> float:
    """One way over a link when it carries TCP: an RDMA link (Thunderbolt 5) then runs the
    TCP stack, at no less than Thunderbolt TCP latency."""
    if kind == LinkType.RDMA:
        return max(latency_us, LINK_DEFAULTS[LinkType.THUNDERBOLT].latency_us)
    return latency_us


def hop_step_us(hop: HopLike, chunk_bytes: float) -> float:
    """One ring step over `hop`: its latency, then `chunk_bytes` at its bandwidth."""
    return hop.latency_us + chunk_bytes * 8 / (hop.bandwidth_gbps * 1e3)


def uniform_ring_allreduce_us(
    k: int, hop: HopLike, message_bytes: int, backend: Collective
) -> float:
    """One all-reduce of `message_bytes` over a ring of k ranks whose every hop is `hop`: the
    backend's synchronisation, then reduce-scatter and all-gather, 2(k-1) steps of a 1/k chunk."""
    if k < 2:
        return 0.0
    chunk = -(-message_bytes // k)
    return SYNC_US[backend] + 2 * (k - 1) * hop_step_us(hop, chunk)


def ring_allreduce_us(hops: Sequence[HopLike], message_bytes: int, backend: Collective) -> float:
    """One all-reduce over the ring whose hops are `hops` (k hops for k ranks; a pair may be
    given as its one hop or as there and back): the dearest of its hops, each priced as a
    ring of k of itself."""
    k = max(len(hops), 2)
    return max((uniform_ring_allreduce_us(k, h, message_bytes, backend) for h in hops), default=0.0)
