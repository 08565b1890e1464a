"""Inputs shared by the planner and methods sections: Macs, topologies, model configs.

Everything here is deterministic: random clusters come from `random.Random(1000 * n + seed)`,
so a case is named by its node count and seed alone.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import yaml

from bench import REPO_ROOT
from protocol.connectivity import full_mesh
from protocol.schema import GB, PlanRequest

CONFIGS = REPO_ROOT / "planner" / "examples" / "configs"
DEPLOY_EXAMPLES = REPO_ROOT / "deploy" / "examples"


@dataclass(frozen=True)
class Mac:
    chip: str
    memory_gb: int
    bandwidth_gbps: float  # memory GB/s, Apple's published figure

    @property
    def slug(self) -> str:
        return f"{self.chip.lower().replace(' ', '')}-{self.memory_gb}"


MACS: tuple[Mac, ...] = (
    Mac("M1 Ultra", 192, 800),
    Mac("M2 Ultra", 192, 800),
    Mac("M3 Ultra", 512, 819),
    Mac("M4 Max", 128, 546),
    Mac("M5 Max", 128, 614),
    Mac("M4 Pro", 64, 273),
    Mac("M3 Max", 48, 400),
    Mac("M4 Max", 36, 410),
)

# (short name, config file): the three real models of planner/examples/configs
MODELS: tuple[tuple[str, str], ...] = (
    ("Qwen3-235B-A22B 4-bit", "qwen3-235b-a22b-4bit.json"),
    ("Llama-3.1-70B bf16", "llama-3.1-70b-bf16.json"),
    ("Qwen3-Next-80B 8-bit", "qwen3-next-80b-a3b-8bit.json"),
)

FULL_MESH_MAX_NODES = 8  # Thunderbolt 5 full mesh (RDMA, as JACCL needs) up to here


def model_config(file: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONFIGS / file).read_text())
    return data


def random_macs(n: int, seed: int) -> list[Mac]:
    rng = random.Random(1000 * n + seed)
    return [rng.choice(MACS) for _ in range(n)]


def node_dicts(macs: list[Mac]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"n{i:02d}-{m.slug}",
            "memory_gb": m.memory_gb,
            "bandwidth_gbps": m.bandwidth_gbps,
            "chip": m.chip,
        }
        for i, m in enumerate(macs)
    ]


def links_for(ids: list[str]) -> list[dict[str, Any]]:
    """Full RDMA mesh up to 8 nodes; beyond, an Ethernet switch plus a Thunderbolt ring."""
    if len(ids) <= FULL_MESH_MAX_NODES:
        return full_mesh(ids)
    links = full_mesh(ids, "ethernet")
    links += [
        {"a": ids[i], "b": ids[(i + 1) % len(ids)], "kind": "thunderbolt"} for i in range(len(ids))
    ]
    return links


def random_topology(n: int, seed: int) -> dict[str, Any]:
    nodes = node_dicts(random_macs(n, seed))
    return {"nodes": nodes, "links": links_for([x["id"] for x in nodes])}


def request(
    topology: dict[str, Any],
    model: dict[str, Any],
    *,
    context_tokens: int = 8192,
    headroom: float = 0.1,
    **constraints: Any,
) -> PlanRequest:
    return PlanRequest.model_validate(
        {
            "topology": topology,
            "model": model,
            "constraints": {
                "headroom": headroom,
                "context_tokens": context_tokens,
                **constraints,
            },
        }
    )


def deploy_topology(file: str) -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY_EXAMPLES / file).read_text())
    topology: dict[str, Any] = data["topology"]
    return topology


def gb(n_bytes: float) -> float:
    return n_bytes / GB
