"""The clusters and models of the layouts section (issue 13): uneven Macs in every topology
family, and the baseline layouts priced against the planner's own choice (built by the
planner's seed builders, `planner.layout_seeds`, which its search prices first).

Clusters reuse `bench.planner_families.links` (mesh, ring, chain, islands, switch) over fixed
mixes of machines, so each row names one cluster, not a random draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.cases import Mac, node_dicts
from bench.planner_families import links
from planner import layout_seeds
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


def even_pipeline(cluster: Cluster, num_layers: int) -> list[StageLayout]:
    return layout_seeds.even_pipeline(cluster.ids(), num_layers)


def memory_pipeline(cluster: Cluster, num_layers: int) -> list[StageLayout]:
    memory = [float(m.memory_gb) for m in cluster.macs]
    return layout_seeds.memory_pipeline(cluster.ids(), memory, num_layers)


def equal_tensor(cluster: Cluster, num_layers: int) -> list[StageLayout]:
    return [StageLayout(tuple(cluster.ids()), num_layers, LayoutSplit.EQUAL)]
