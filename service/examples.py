"""OpenAPI examples for every request body, built from the real configs in planner/examples."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from protocol.connectivity import full_mesh

GB = 10**9
CONFIGS = Path(__file__).resolve().parent.parent / "planner" / "examples" / "configs"


@cache
def _config(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return data


def _seed_request() -> dict[str, Any]:
    return {
        "topology": {
            "nodes": [
                {
                    "id": "m1-ultra",
                    "memory_bytes": 128 * GB,
                    "bandwidth_gbps": 800,
                    "address": "10.0.0.1",
                },
                {
                    "id": "laptop-48",
                    "memory_bytes": 48 * GB,
                    "bandwidth_gbps": 546,
                    "address": "10.0.0.2",
                },
            ],
            "links": [
                {
                    "a": "m1-ultra",
                    "b": "laptop-48",
                    "kind": "thunderbolt",
                    "bandwidth_gbps": 40,
                    "latency_us": 50,
                }
            ],
        },
        "model": _config("qwen3-235b-a22b-4bit"),
        "constraints": {"headroom": 0.1, "context_tokens": 8192, "sharding": "asymmetric"},
    }


def _four_nodes() -> dict[str, Any]:
    ids = [
        ("studio-ultra", 192, 800, "10.0.0.11"),
        ("mbp-m5max", 128, 614, "10.0.0.12"),
        ("mini-m4pro", 64, 273, "10.0.0.13"),
        ("mbp-m3max", 48, 300, "10.0.0.14"),
    ]
    nodes = [
        {"id": i, "memory_bytes": m * GB, "bandwidth_gbps": bw, "address": a} for i, m, bw, a in ids
    ]
    links = full_mesh(i[0] for i in ids)
    return {
        "topology": {"nodes": nodes, "links": links},
        "model": _config("llama-3.1-70b-bf16"),
        "constraints": {"context_tokens": 16384, "sharding": "auto"},
    }


def _too_small() -> dict[str, Any]:
    return {
        "topology": {
            "nodes": [
                {"id": "mini-a", "memory_bytes": 32 * GB, "bandwidth_gbps": 273},
                {"id": "mini-b", "memory_bytes": 16 * GB, "bandwidth_gbps": 120},
            ],
            "links": [{"a": "mini-a", "b": "mini-b", "kind": "ethernet"}],
        },
        "model": _config("llama-3.1-70b-bf16"),
    }


def plan_request_examples() -> dict[str, dict[str, Any]]:
    return {
        "seed": {
            "summary": "Qwen3-235B-A22B 4-bit on 128 GB + 48 GB (an even split does not fit)",
            "value": _seed_request(),
        },
        "four-nodes": {
            "summary": "Llama 3.1 70B bf16 on four mixed Macs over RDMA",
            "value": _four_nodes(),
        },
        "infeasible": {
            "summary": "Too little memory: 200, feasible false, reasons in numbers",
            "value": _too_small(),
        },
    }


def deployment_spec_examples() -> dict[str, dict[str, Any]]:
    return {
        "seed": {
            "summary": "Publish the seed plan; agents find the model under their models dir",
            "value": {**_seed_request(), "model_path": "mlx-community/Qwen3-235B-A22B-4bit"},
        },
        "four-nodes": {
            "summary": "Four Macs, ring ports 52100-52103, rank 0 serves on 8000",
            "value": {
                **_four_nodes(),
                "model_path": "mlx-community/Meta-Llama-3.1-70B-Instruct-bf16",
                "ring_port": 52100,
                "serve_port": 8000,
            },
        },
    }


def agent_status_examples() -> dict[str, dict[str, Any]]:
    return {
        "facts": {
            "summary": "An idle agent reporting its machine (before any deployment)",
            "value": {
                "state": "idle",
                "facts": {
                    "node_id": "m1-ultra",
                    "hostname": "studio.local",
                    "os": "macOS 26.1",
                    "chip": "Apple M1 Ultra",
                    "memory_bytes": 128 * GB,
                    "available_bytes": 120 * GB,
                    "interfaces": [
                        {"name": "bridge0", "addresses": ["10.0.0.1/24"], "kind": "thunderbolt"}
                    ],
                    "rdma": False,
                },
            },
        },
        "loading": {
            "summary": "Loading its slices",
            "value": {
                "state": "loading",
                "plan_id": "b962c11c",
                "revision": 1,
                "rank": 1,
                "progress": 0.4,
                "detail": "layer 38 of 94",
            },
        },
        "ready": {
            "summary": "Rank 0 ready and serving",
            "value": {
                "state": "ready",
                "plan_id": "b962c11c",
                "revision": 1,
                "rank": 0,
                "serving": "http://10.0.0.1:8000/v1",
            },
        },
        "failed": {
            "summary": "Failed, with the reason",
            "value": {
                "state": "failed",
                "plan_id": "b962c11c",
                "revision": 1,
                "rank": 1,
                "reason": "peer m1-ultra unreachable on 10.0.0.1:52100",
            },
        },
    }
