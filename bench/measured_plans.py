"""Bench section `measured`: a plan from measured figures beside one from defaults.

Two nodes on this machine, as `make run` has them: each runs a measurement responder on
127.0.0.1, this machine's memory bandwidth is measured with the agents' MLX kernel, and the
loopback link with the agents' ping-pong and bulk transfer. The topology is drafted from those
facts (`planner.topology_from_facts`) and planned; the same facts without measurements get the
defaults — the chip table's bandwidth (100 GB/s for a chip it does not know) and a Thunderbolt
link's default figures (`planner.calibration.LINK_DEFAULTS`) — and are planned too. Node memory is
simulated (96 GB each) so that a real model's config plans; every other figure is real.

    python -m bench --only measured
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import REPO_ROOT, Section, write_section
from executor.measure_agent import BUDGET_S, Target, measure_links
from executor.measure_memory import measure_in_child
from executor.measure_net import Responder
from executor.node_facts import collect
from planner.calibration import LINK_DEFAULTS, LinkType
from planner.plan import make_plan
from planner.topology_from_facts import build_topology
from protocol.measurements import Measurements
from protocol.plan import Plan
from protocol.schema import NodeFacts, PlanRequest, Topology

MODEL = "llama-3.1-70b-bf16"
NODE_IDS = ("node-a", "node-b")
SIMULATED_MEMORY = 96 * 10**9


def _measured_facts(quick: bool) -> list[NodeFacts]:
    memory = measure_in_child(sys.executable, 120.0, mb=128 if quick else 256)
    responders = {n: Responder(n, 0, "127.0.0.1").start() for n in NODE_IDS}
    try:
        out = []
        for me in NODE_IDS:
            peers = [
                Target(p, "127.0.0.1", r.port, "lo", "loopback")
                for p, r in responders.items()
                if p != me
            ]
            started = time.monotonic()
            links, notes = measure_links(peers, started + BUDGET_S)
            m = Measurements(
                measured_at=round(time.time(), 3),
                took_s=round(time.monotonic() - started, 3),
                memory_bandwidth_gbps=memory.gbps,
                memory_method=memory.method,
                links=links,
                notes=notes,
            )
            base = collect(me, (SIMULATED_MEMORY, SIMULATED_MEMORY))
            out.append(base.model_copy(update={"measurements": m}))
        return out
    finally:
        for r in responders.values():
            r.stop()


def _plan(topology: dict[str, Any]) -> Plan:
    model = json.loads(
        (REPO_ROOT / "planner" / "examples" / "configs" / f"{MODEL}.json").read_text()
    )
    request = PlanRequest(topology=Topology.model_validate(topology), model=model)
    return make_plan(request)


def _defaults(facts: list[NodeFacts]) -> dict[str, Any]:
    bare = [f.model_copy(update={"measurements": None}) for f in facts]
    topology, _ = build_topology(bare)
    # Loopback is no subnet between hosts: the demo used to call these links Thunderbolt.
    topology["links"] = [{"a": NODE_IDS[0], "b": NODE_IDS[1], "kind": "thunderbolt"}]
    return topology


def _row(name: str, topology: dict[str, Any], plan: Plan) -> list[Any]:
    node = topology["nodes"][0]
    link = topology["links"][0]
    est = plan.estimates
    link_key = f"link:{link['a']}-{link['b']}"
    default = LINK_DEFAULTS[LinkType(link.get("kind", "ethernet"))]
    return [
        name,
        f"{node['bandwidth_gbps']:g} ({node['source']})",
        f"{link.get('bandwidth_gbps', default.bandwidth_gbps):g} Gb/s, "
        f"{link.get('latency_us', default.latency_us):g} µs "
        f"({plan.sources.get(link_key, '?')})",
        round(est.compute_ms, 2) if est else None,
        round(est.allreduce_ms, 2) if est else None,
        round(est.tokens_per_s, 3) if est else None,
    ]


def run(results_dir: Path, quick: bool = False) -> Section:
    facts = _measured_facts(quick)
    measured_topology, notes = build_topology(facts)
    default_topology = _defaults(facts)
    measured, default = _plan(measured_topology), _plan(default_topology)
    if not (measured.estimates and default.estimates):
        raise RuntimeError(f"a plan is infeasible: {measured.reasons or default.reasons}")
    ratio = default.estimates.tokens_per_s / measured.estimates.tokens_per_s
    result: Section = {
        "section": "measured",
        "title": "Plans from measured figures vs defaults",
        "headline": [
            {
                "metric": "estimated tok/s, defaults",
                "value": round(default.estimates.tokens_per_s, 3),
                "unit": "tok/s",
            },
            {
                "metric": "estimated tok/s, measured",
                "value": round(measured.estimates.tokens_per_s, 3),
                "unit": "tok/s",
            },
            {"metric": "defaults overstate by", "value": round(ratio, 1), "unit": "×"},
        ],
        "tables": [
            {
                "title": f"{MODEL} on two simulated 96 GB nodes of this machine",
                "columns": [
                    "figures",
                    "node memory GB/s",
                    "link",
                    "compute ms",
                    "all-reduce ms",
                    "tok/s",
                ],
                "rows": [
                    _row("defaults", default_topology, default),
                    _row("measured", measured_topology, measured),
                ],
            }
        ],
        "figures": [],
        "notes": [
            (__doc__ or "").split("\n\n")[1].replace("\n", " "),
            "Draft notes: " + "; ".join(n for n in notes if "measured" in n),
        ],
        "data": {"facts": [json.loads(f.model_dump_json()) for f in facts]},
    }
    write_section(results_dir, result)
    return result
