"""The clusters and models of the layouts section (issue 13): uneven Macs in every topology
family, and the baseline layouts priced against the planner's own choice.

Clusters reuse `bench.planner_families.links` (mesh, ring, chain, islands, switch) over fixed
mixes of machines, so each row names one cluster, not a random draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.cases import Mac, node_dicts
from bench.planner_families import links
from planner.layouts import LayoutSplit, StageLayout

M3_ULTRA = Mac("M3 Ultra", 192, 819)
M1_ULTRA = Mac("M1 Ultra", 128, 800)
M4_MAX = Mac("M4 Max", 128, 546)
M2_MAX = Mac("M2 Max", 96, 400)
M4_PRO_64 = Mac("M4 Pro", 64, 273)
M4_PRO_48 = Mac("M4 Pro", 48, 273)

# A Thunderbolt ring's Macs, repeated: none holds a 70B bf16 model alone.
RING_MIX = (M4_MAX, M4_PRO_64, M2_MAX, M4_PRO_48)
# An RDMA island's (or a switch's) Macs, repeated: a 192 GB Ultra, a 128 GB Max, two Pros.
RDMA_MIX = (M3_ULTRA, M4_MAX, M4_PRO_64, M4_PRO_48)


@dataclass(frozen=True)
class Cluster:
    name: str
    family: str
    """A family of `bench.planner_families.links`."""
    macs: tuple[Mac, ...]

    def topology(self) -> dict[str, Any]:
        nodes = node_dicts(list(self.macs))
        return {"nodes": nodes, "links": links(self.family, [n["id"] for n in nodes])}

    def ids(self) -> list[str]:
        """Node ids in chain order: around the ring, island after island, pair after pair."""
        return [n["id"] for n in node_dicts(list(self.macs))]


def _repeat(mix: tuple[Mac, ...], n: int) -> tuple[Mac, ...]:
    return tuple(mix[i % len(mix)] for i in range(n))


CLUSTERS: tuple[Cluster, ...] = (
    Cluster("RDMA mesh ×2", "mesh", (M3_ULTRA, M4_MAX)),
    Cluster("RDMA mesh ×3", "mesh", (M3_ULTRA, M4_MAX, M4_PRO_64)),
    Cluster("RDMA mesh ×4", "mesh", (M3_ULTRA, M4_MAX, M4_MAX, M4_PRO_64)),
    # Thunderbolt 4 between two Macs without RDMA (M1 Ultra, M2 Max): TCP only.
    Cluster("TB4 TCP pair", "chain", (M1_ULTRA, M2_MAX)),
    Cluster("TB ring ×8", "ring", _repeat(RING_MIX, 8)),
    Cluster("TB ring ×16", "ring", _repeat(RING_MIX, 16)),
    Cluster("TB ring ×32", "ring", _repeat(RING_MIX, 32)),
    Cluster("2 RDMA islands ×4 + Ethernet", "islands", _repeat(RDMA_MIX, 8)),
    Cluster("switch + RDMA pairs ×8", "switch", _repeat(RDMA_MIX, 8)),
)
QUICK_CLUSTERS = ("RDMA mesh ×2", "TB4 TCP pair", "TB ring ×8", "2 RDMA islands ×4 + Ethernet")

# (short name, config file in planner/examples/configs)
MODELS: tuple[tuple[str, str], ...] = (
    ("Llama-3.1-70B bf16", "llama-3.1-70b-bf16.json"),
    ("Qwen3-235B-A22B 4-bit", "qwen3-235b-a22b-4bit.json"),
    ("DeepSeek-V3.1 4-bit", "deepseek-v3.1-4bit.json"),
)
QUICK_MODELS = ("Qwen3-235B-A22B 4-bit", "DeepSeek-V3.1 4-bit")


def even_layers(total: int, parts: int) -> list[int]:
    """`total` layers in `parts` near-equal counts, the first stages taking the remainder."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def proportional_layers(total: int, weights: list[float]) -> list[int]:
    """Layers in proportion to `weights` (largest remainder), each stage at least one:
    llama.cpp's `--tensor-split` over memory, exo's memory-weighted pipeline."""
    share = [total * w / sum(weights) for w in weights]
    counts = [max(1, int(s)) for s in share]
    by_remainder = sorted(range(len(share)), key=lambda i: (counts[i] - share[i], i))
    i = 0
    while sum(counts) < total:
        counts[by_remainder[i % len(counts)]] += 1
        i += 1
    while sum(counts) > total:
        j = max(
            (k for k in range(len(counts)) if counts[k] > 1), key=lambda k: counts[k] - share[k]
        )
        counts[j] -= 1
    return counts


def even_pipeline(cluster: Cluster, num_layers: int) -> list[StageLayout]:
    ids = cluster.ids()
    return [StageLayout((n,), k) for n, k in zip(ids, even_layers(num_layers, len(ids)))]


def memory_pipeline(cluster: Cluster, num_layers: int) -> list[StageLayout]:
    memory = [float(m.memory_gb) for m in cluster.macs]
    counts = proportional_layers(num_layers, memory)
    return [StageLayout((n,), k) for n, k in zip(cluster.ids(), counts)]


def equal_tensor(cluster: Cluster, num_layers: int) -> list[StageLayout]:
    return [StageLayout(tuple(cluster.ids()), num_layers, LayoutSplit.EQUAL)]
