"""The long-running agent on each node: poll the planner, run this node's rank, report state.

The agent never imports mlx. It runs the rank as a child process (`executor.rank_process`),
because an MLX distributed group lives as long as its process: a new plan, a lost peer or a
deleted deployment means ending the child and, where there is a plan, starting a new one.

    agent ──long-poll──▶ planner  (assignment, ETag = plan_id + revision)
      │ ◀──JSON lines── child rank: loading k/n, joined, ready, failed <reason>
      └─status──▶ planner  (loading with progress, joining, ready, failed, idle)

Faults: an unreachable planner leaves the running rank alone and retries with backoff; a rank
that fails (a peer lost, a corrupt file) is reported and restarted with backoff, so the group
re-forms when the peer comes back; a plan that does not fit this node's free memory is refused
before anything loads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executor.node_facts import collect
from executor.planner_client import Assignment, PlannerClient, PlannerUnavailable

JOIN_TIMEOUT_S = 60.0  # peers coming up out of order get this long to form the group
RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0)
HEARTBEAT_S = 5.0
POLL_WAIT_S = 20


@dataclass
class AgentConfig:
    planner: str
    deployment: str
    node_id: str
    models_dir: Path
    token: str | None = None
    signing_key: str | None = None
    memory_bytes: int | None = None
    """Simulated machine size (demo/tests): reported instead of the real memory."""
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    python: str = sys.executable
    extra_env: dict[str, str] = field(default_factory=dict)


def resolve_model(models_dir: Path, model_path: str) -> Path:
    """The model directory, which must lie under `models_dir` (symlinks resolved)."""
    root = models_dir.resolve()
    path = (root / model_path).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"model path {model_path!r} leaves the models directory {root}")
    if not (path / "config.json").is_file():
        raise ValueError(f"model directory {path} has no config.json")
    return path


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.client = PlannerClient(cfg.planner, cfg.deployment, cfg.node_id, cfg.token, cfg.signing_key)
        self.child: subprocess.Popen[str] | None = None
        self.assignment: Assignment | None = None
        self.state: dict[str, Any] = {"state": "idle"}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.failures = 0
        self.next_start = 0.0
        self.refused: str | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"asymtp-{cfg.node_id}-"))

    # ---- reporting -----------------------------------------------------------------
    def facts(self) -> dict[str, Any]:
        total = self.cfg.memory_bytes
        facts = collect(self.cfg.node_id, (total, total) if total else None)
        return facts.model_dump(mode="json")

    def report(self, state: str, **extra: Any) -> None:
        with self.lock:
            self.state = {"state": state, **extra}
            if self.assignment is not None:
                self.state["plan_id"] = self.assignment.plan_id
            body = dict(self.state)
        log(f"{state} {json.dumps(extra) if extra else ''}")
        try:
            self.client.post_status(body)
        except PlannerUnavailable as e:
            log(f"planner unreachable while reporting {state}: {e}")

    def heartbeat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            with self.lock:
                body = dict(self.state)
            try:
                self.client.post_status(body)
            except PlannerUnavailable:
                pass  # the poll loop logs planner outages once

    # ---- the rank child --------------------------------------------------------------
    def refuse(self, a: Assignment, reason: str) -> None:
        """Not retried: only a new plan can change the answer."""
        self.refused = a.plan_id
        self.report("failed", reason=reason)

    def start_rank(self, a: Assignment) -> None:
        try:
            model_dir = resolve_model(self.cfg.models_dir, a.model_path)
        except ValueError as e:
            self.refuse(a, str(e))
            return
        free = self.cfg.memory_bytes or collect(self.cfg.node_id).available_bytes
        need = a.rank_plan["memory_bytes"]["total"]
        if need > free:
            self.refuse(
                a,
                f"plan needs {need / 1e9:.2f} GB on this node, only {free / 1e9:.2f} GB is "
                "free; refused before loading",
            )
            return
        spec = self.workdir / f"assignment-{a.plan_id[:12]}.json"
        spec.write_text(json.dumps(a.raw))
        cmd = [
            self.cfg.python, "-m", "executor.rank_process",
            "--assignment", str(spec),
            "--model", str(model_dir),
            "--workdir", str(self.workdir),
            "--serve-host", self.cfg.serve_host,
            "--serve-port", str(self.cfg.serve_port),
        ]
        env = {**os.environ, **self.cfg.extra_env}
        log(f"starting rank {a.rank}/{a.world_size} of plan {a.plan_id[:12]}")
        self.child = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env, start_new_session=True
        )
        self.report("loading", progress=0.0, rank=a.rank)
        threading.Thread(target=self.watch_child, args=(self.child,), daemon=True).start()

    def watch_child(self, child: subprocess.Popen[str]) -> None:
        """Forward the child's events; a child that exits or never joins is a failure."""
        assert child.stdout is not None
        reason = "the rank process exited"
        timer = threading.Timer(0, lambda: None)

        def join_timeout() -> None:
            nonlocal reason
            reason = f"peers did not form the group within {JOIN_TIMEOUT_S:g}s"
            child.kill()

        for line in child.stdout:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = ev.get("event")
            if kind == "progress":
                self.report("loading", progress=round(ev["done"] / max(ev["total"], 1), 4),
                            layers=f"{ev['done']}/{ev['total']}")
            elif kind == "loaded":
                timer = threading.Timer(JOIN_TIMEOUT_S, join_timeout)
                timer.daemon = True
                timer.start()
                self.report("joining")
            elif kind == "ready":
                timer.cancel()
                self.failures = 0
                extra = {"serving": ev["url"]} if ev.get("url") else {}
                self.report("ready", **extra)
            elif kind == "failed":
                reason = ev.get("reason", reason)
        timer.cancel()
        child.wait()
        if child is not self.child:
            return  # stopped on purpose for a new plan
        # A rank never exits on its own: whatever the code, this is a failure to retry.
        self.child = None
        self.failures += 1
        delay = RESTART_BACKOFF_S[min(self.failures - 1, len(RESTART_BACKOFF_S) - 1)]
        self.next_start = time.monotonic() + delay
        self.report("failed", reason=reason, retry_in_s=delay)

    def stop_rank(self, why: str) -> None:
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        log(f"stopping rank: {why}")
        child.send_signal(signal.SIGTERM)  # rank 0 drains its in-flight request first
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    # ---- main loop -------------------------------------------------------------------
    def run(self) -> int:
        threading.Thread(target=self.heartbeat, daemon=True).start()
        self.report("idle", facts=self.facts())
        outage_logged = False
        while not self.stop.is_set():
            try:
                update = self.client.poll(self.assignment, wait=POLL_WAIT_S)
                outage_logged = False
            except PlannerUnavailable as e:
                if not outage_logged:
                    log(f"planner unreachable, keeping the current rank and retrying: {e}")
                    outage_logged = True
                self.stop.wait(2.0)
                continue
            except ValueError as e:  # a plan whose signature does not verify
                self.stop_rank("refused plan")
                self.assignment = None
                self.report("failed", reason=str(e))
                self.stop.wait(2.0)
                continue
            if update.changed:
                self.stop_rank("a new plan" if update.assignment else "the deployment is gone")
                self.assignment = update.assignment
                self.failures, self.next_start = 0, 0.0
                if update.assignment is None or update.assignment.rank is None:
                    self.report("idle", facts=self.facts())
                    continue
            a = self.assignment
            runnable = a is not None and a.rank is not None and a.plan_id != self.refused
            if runnable and self.child is None and time.monotonic() >= self.next_start:
                assert a is not None
                self.start_rank(a)
        self.stop_rank("agent stopping")
        return 0


def log(msg: str) -> None:
    print(f"[agent {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
