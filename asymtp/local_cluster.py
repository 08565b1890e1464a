"""A whole deployment on one machine: a planner and N agents as real processes on loopback.

Used by `make run` (`asymtp.demo`), the end-to-end and fault tests and the benchmarks. Each
process logs to `<workdir>/logs/<name>.log`; `close()` stops agents before the planner.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from asymtp.processes import Proc, Service, free_port, free_port_block
from protocol.deployment import Deployment

__all__ = ["LocalCluster", "Proc", "all_ready", "free_port", "free_port_block", "serving_url"]
ASYMTP = [sys.executable, "-m", "asymtp.cli"]


@dataclass
class LocalCluster:
    workdir: Path
    models_dir: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    planner_port: int = field(default_factory=free_port)
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.planner_port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "ASYMTP_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}

    def http(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout
        )

    # ---- processes -------------------------------------------------------------------------
    @property
    def service(self) -> Service:
        """The planner's runner: `asymtp serve` with the cluster's token, port and database."""
        return Service(
            self.workdir / "planner.sqlite",
            self.planner_port,
            self.token,
            log_path=self.workdir / "logs" / "planner.log",
            entry="asymtp.cli",
        )

    def start_planner(self, timeout: float = 30.0) -> Proc:
        service = self.service.start(timeout)
        assert service.proc is not None
        self.procs["planner"] = service.proc
        return service.proc

    def start_agent(
        self, node_id: str, deployment: str, memory_gb: float, extra: list[str] | None = None
    ) -> Proc:
        cmd = [
            *ASYMTP,
            "agent",
            "--planner",
            self.url,
            "--deployment",
            deployment,
            "--node-id",
            node_id,
            "--models-dir",
            str(self.models_dir),
            "--memory-gb",
            str(memory_gb),
            "--serve-host",
            "127.0.0.1",
            "--signing-key-file",
            str(self.service.key_path),
            *["--measure-port", "0"],  # several agents on one host: each its own free port
            *(extra or []),
        ]
        proc = Proc(node_id, cmd, self.workdir / "logs" / f"{node_id}.log", self.env()).start()
        self.procs[node_id] = proc
        return proc

    def restart(self, name: str, timeout: float = 30.0) -> Proc:
        """Start a stopped process again with its command line (the planner: same port, same
        database); waits for the planner to answer."""
        old = self.procs[name]
        if old.alive:
            return old
        proc = self.procs[name] = Proc(old.name, old.cmd, old.log, old.env, old.cwd).start()
        return proc.wait_healthy(self.url, timeout) if name == "planner" else proc

    def close(self) -> None:
        agents = [p for n, p in self.procs.items() if n != "planner"]
        for p in agents:
            p.signal(signal.SIGTERM)
        for p in agents:
            p.stop()
        if "planner" in self.procs:
            self.procs["planner"].stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # ---- the deployment ----------------------------------------------------------------------
    def deploy(self, name: str, spec: dict[str, Any]) -> Deployment:
        with self.http(timeout=120.0) as h:
            r = h.put(f"/deployments/{name}", json=spec)
        if r.status_code != 200:
            raise RuntimeError(f"PUT /deployments/{name}: HTTP {r.status_code}: {r.text[:2000]}")
        return Deployment.model_validate_json(r.content)

    def deployment(self, name: str) -> Deployment | None:
        with self.http() as h:
            r = h.get(f"/deployments/{name}")
        return Deployment.model_validate_json(r.content) if r.status_code == 200 else None

    def topology(self, name: str) -> dict[str, Any]:
        with self.http() as h:
            r = h.get(f"/deployments/{name}/topology")
        if r.status_code == 404:
            return {}  # no agent has reported yet
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def wait_for(
        self,
        name: str,
        done: Callable[[Deployment], bool],
        timeout: float,
        on_change: Callable[[Deployment], None] | None = None,
        what: str = "the deployment",
    ) -> Deployment:
        """Poll the deployment until `done`; raise with the agents' states and logs if not."""
        deadline = time.monotonic() + timeout
        last: Deployment | None = None
        while time.monotonic() < deadline:
            try:
                d = self.deployment(name)
            except httpx.TransportError:
                d = None  # the planner is restarting
            if d is not None:
                last = d
                if on_change:
                    on_change(d)
                if done(d):
                    return d
            time.sleep(0.25)
        states = {} if last is None else {n: (a.state, a.reason) for n, a in last.agents.items()}
        logs = "\n".join(f"--- {p.name}\n{p.tail(15)}" for p in self.procs.values())
        raise TimeoutError(f"{what} not reached within {timeout:g}s; agents: {states}\n{logs}")


def all_ready(d: Deployment, plan_id: str | None = None, revision: int | None = None) -> bool:
    """Every rank of the current plan reports ready (for this plan and revision)."""
    want = plan_id or d.plan.plan_id
    rev = revision or d.revision
    nodes = [r.node_id for r in d.plan.ranks]
    return all(
        (a := d.agents.get(n)) is not None
        and a.state == "ready"
        and a.plan_id == want
        and a.revision == rev
        for n in nodes
    )


def serving_url(d: Deployment) -> str:
    rank0 = d.plan.ranks[0].node_id
    url = d.agents[rank0].serving
    if not url:
        raise RuntimeError(f"rank 0 ({rank0}) reports no serving URL")
    return url
