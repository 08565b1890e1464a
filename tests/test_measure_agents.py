"""Real agents on 127.0.0.1 measure each other through the planner: on start, and again when
the planner asks (POST /deployments/NAME/measure); the doctor route answers from their facts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from asymtp.local_cluster import LocalCluster

pytestmark = pytest.mark.slow
NAME = "measured"


def agent_facts(h: httpx.Client) -> dict[str, dict[str, Any]]:
    """node id -> facts, from the peers list."""
    r = h.get(f"/deployments/{NAME}/peers")
    assert r.status_code == 200, r.text
    return {a["node_id"]: a for a in r.json()["agents"]}


def measured_at(h: httpx.Client) -> list[str]:
    """The drafted topology's "NODE: measured at HH:MM:SS.mmm UTC ..." notes, cut there."""
    notes = h.get(f"/deployments/{NAME}/topology").json()["notes"]
    return sorted(n.split(" in ")[0] for n in notes if ": measured at " in n)


def wait(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_agents_measure_on_start_and_on_request(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    with LocalCluster(tmp_path, tmp_path) as c:
        c.start_planner()
        for node in ("left", "right"):
            c.start_agent(node, NAME, 0.05)
        with c.http() as h:

            def measured_topology() -> dict[str, Any] | None:
                r = h.get(f"/deployments/{NAME}/topology")
                if r.status_code != 200:
                    return None
                topo: dict[str, Any] = r.json()["topology"]
                done = [x for x in topo["nodes"] + topo["links"] if x.get("source") == "measured"]
                return topo if len(done) == 3 else None

            topo = wait("both nodes and their link measured", measured_topology)
            (link,) = topo["links"]
            assert link["bandwidth_gbps"] > 0 and link["latency_us"] > 0
            peers = agent_facts(h)
            assert all(p["measure_port"] for p in peers.values())
            assert all(p["measurements"] is None for p in peers.values())  # addresses only

            before = measured_at(h)
            assert len(before) == 2
            asked = h.post(f"/deployments/{NAME}/measure")
            assert asked.status_code == 200 and asked.json()["request"] == 1

            def remeasured() -> bool:
                after = measured_at(h)
                return all(a != b for a, b in zip(after, before, strict=True))

            wait("both agents to measure again on the planner's request", remeasured)
            report = h.get(f"/deployments/{NAME}/doctor").json()
            # Linux: no rdma_ctl, no Thunderbolt: RDMA cannot work, and the doctor says why.
            assert not report["rdma_possible"]
            checks = {f["check"] for f in report["findings"] if f["severity"] == "problem"}
            assert "rdma-enabled" in checks and "reachable" not in checks
            assert report["lines"][-1].startswith(
                "RDMA cannot work: the plan will use the TCP ring"
            )
            cli = [sys.executable, "-m", "asymtp.cli", "doctor", "--planner", c.url]
            env = {**os.environ, "ASYMTP_TOKEN": c.token}
            r = subprocess.run(
                [*cli, "--deployment", NAME], capture_output=True, text=True, env=env, timeout=60
            )
            assert r.returncode == 1, r.stderr  # RDMA cannot work here
            assert r.stdout.splitlines() == report["lines"]
            r = subprocess.run(
                [*cli, "--deployment", "nobody"],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert r.returncode == 2 and "HTTP 404" in r.stderr and len(r.stderr.splitlines()) == 1
            assert h.get("/deployments/nobody/doctor").status_code == 404
            assert h.get("/deployments/Bad_Name/doctor").status_code == 422
