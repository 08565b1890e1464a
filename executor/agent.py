"""The long-running agent on each node: follow the planner, run this node's rank, report.

The agent never imports mlx. It runs its rank as a child process (`executor.rank_process`)
because an MLX group lives as long as its process: a new plan, a lost peer or a deleted
deployment means ending the child and, where there is a plan, starting a new one.

    poller thread ──long-poll (ETag)──▶ planner        new signed assignment → `pending`
    main loop: stop/start the child as the assignment says; restart a failed child with backoff
    child watcher ◀──JSON lines── rank: progress, loaded, joining, ready, failed <reason>
    heartbeat thread ──status──▶ planner                every few seconds, and on each change

Faults: an unreachable planner leaves the running rank alone (it keeps serving) while the
poller retries; a failed rank (peer lost, corrupt file) is reported and restarted with
backoff, so the group re-forms when the peer is back; a plan that does not fit this node's
free memory or names a model outside `--models-dir` is refused before anything loads; an
assignment whose signature does not verify is refused and the current rank kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.events import Failed, Joining, Loaded, Progress, Ready, Refused, parse
from executor.measure_agent import AgentMeasuring
from executor.node_facts import collect
from executor.planner_client import (
    PlannerClient,
    PlannerUnavailable,
    SignatureError,
    Update,
)
from protocol.deployment import AgentStatus, Assignment
from protocol.measurements import Measurements

RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)
HEARTBEAT_S = 3.0
REFUSED_RETRY_S = 2.0
"""After a refused answer, ask again this much later (a misbehaving planner is not hammered)."""
POLL_WAIT_S = 20.0
MAX_REASON_CHARS = 2000
STOP_GRACE_S = 30.0
"""How long a rank gets to finish its request (rank 0) or to be let go by rank 0 (followers)."""


@dataclass
class AgentConfig:
    planner: str
    deployment: str
    node_id: str
    models_dir: Path
    token: str | None = None
    signing_key: bytes = b""
    """Verifies assignments (`protocol.signing.agent_signing_key`)."""
    memory_bytes: int | None = None
    """Simulated machine size (demo, tests): reported and checked instead of the real one."""
    serve_host: str | None = None
    api_token: str | None = None
    """Bearer token rank 0's API asks of clients; needed when it serves beyond loopback."""
    jaccl_devices: Path | None = None
    join_timeout_s: float = 60.0
    python: str = sys.executable
    hf_cache: bool = False
    """Also look up `ORG/NAME` models in the user's Hugging Face cache (never downloads)."""
    measure_port: int | None = None
    """The measurement responder's port (0: a free one); None: this agent does not measure."""


def resolve_model(models_dir: Path, model_path: str, hf_cache: bool = False) -> Path:
    """The model directory, which must lie under `models_dir` (or the Hugging Face cache when
    allowed); names such as `ORG/NAME@REV` are looked up in the cache layout. ValueError naming
    the cause, whatever is wrong with the path (a name too long for the file system included)."""
    from executor.model_paths import resolve

    try:
        return resolve(models_dir, model_path, hf_cache).path
    except OSError as e:
        raise ValueError(f"model path {model_path[:80]!r}: {e.strerror or e}") from None


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.client = PlannerClient(
            cfg.planner, cfg.deployment, cfg.node_id, cfg.token, cfg.signing_key
        )
        self.assignment: Assignment | None = None
        self.child: subprocess.Popen[str] | None = None
        self.child_rank: int | None = None
        self.status = AgentStatus(state="idle")
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.pending: list[Update | Refused] = []
        self.failures = 0
        self.streak = 0  # failures since the rank was last ready: sets the backoff
        self.last_failure: str | None = None
        self.next_start = 0.0
        self.refused_etag: str | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"asymtp-{cfg.node_id}-"))
        self.measuring: AgentMeasuring | None = None

    # ---- reporting -----------------------------------------------------------------------
    def free_memory(self) -> int:
        if self.cfg.memory_bytes:
            return self.cfg.memory_bytes
        return collect(self.cfg.node_id).available_bytes

    def facts_status(self) -> dict[str, Any]:
        total = self.cfg.memory_bytes
        facts = collect(self.cfg.node_id, (total, total) if total else None)
        return {"facts": self.measuring.facts(facts) if self.measuring else facts}

    def measured(self, m: Measurements) -> None:
        """A measurement round finished: send it with the facts, if this state carries them."""
        memory = f"{m.memory_bandwidth_gbps} GB/s" if m.memory_bandwidth_gbps else "not measured"
        log(f"measured in {m.took_s:g}s: memory {memory}, {len(m.links)} link(s) {m.notes or ''}")
        with self.lock:
            status = self.status
        if status.facts is not None and self.measuring is not None:
            status = status.model_copy(update={"facts": self.measuring.facts(status.facts)})
            with self.lock:
                self.status = status
            self._send(status)

    def report(self, state: str, **fields: Any) -> None:
        a = self.assignment
        base: dict[str, Any] = {
            "state": state,
            "restarts": self.failures,
            "last_failure": self.last_failure,
        }
        if a is not None:
            base.update(plan_id=a.plan_id, revision=a.revision, rank=a.rank)
        status = AgentStatus.model_validate({**base, **fields})
        with self.lock:
            self.status = status
        shown = {k: v for k, v in fields.items() if k != "facts"}
        log(f"{state} {json.dumps(shown) if shown else ''}".rstrip())
        self._send(status)

    def _send(self, status: AgentStatus) -> None:
        # The poller logs outages; the heartbeat sends the state again.
        with contextlib.suppress(PlannerUnavailable):
            self.client.post_status(status)

    def heartbeat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            with self.lock:
                status = self.status
            self._send(status)

    # ---- following the planner -------------------------------------------------------------
    def poller(self) -> None:
        outage = False
        known = None
        while not self.stop.is_set():
            try:
                update = self.client.poll(known, wait=POLL_WAIT_S)
            except PlannerUnavailable as e:
                if not outage:
                    log(f"planner unreachable; the current rank keeps running; retrying: {e}")
                    outage = True
                self.stop.wait(2.0)
                continue
            except SignatureError as e:
                log(f"refused an assignment: {e}")
                self.pending.append(Refused(f"refused: {e}"))
                self.wake.set()
                self.stop.wait(REFUSED_RETRY_S)
                continue
            except Exception as e:  # a bug here must not stop the agent following the planner
                log(f"poll failed: {type(e).__name__}: {e}")
                self.stop.wait(2.0)
                continue
            if outage:
                log("planner reachable again")
                outage = False
            if update.changed:
                known = update.assignment
                self.pending.append(update)
                self.wake.set()
            elif update.assignment is None:
                self.stop.wait(1.0)  # no deployment yet: the server already waited

    # ---- the rank child --------------------------------------------------------------------
    def start_rank(self, a: Assignment) -> None:
        """Start the rank `a` asks for; any error doing so is a `failed` status naming it (the
        agent goes on following the planner)."""
        try:
            self._start_rank(a)
        except Exception as e:
            self.refuse(a, f"cannot start the rank: {type(e).__name__}: {e}")

    def _start_rank(self, a: Assignment) -> None:
        assert a.rank is not None and a.rank_plan is not None
        try:
            model_dir = resolve_model(self.cfg.models_dir, a.model_path, self.cfg.hf_cache)
        except ValueError as e:
            self.refuse(a, str(e))
            return
        need, free = a.rank_plan.memory_bytes.total, self.free_memory()
        if need > free:
            self.refuse(
                a,
                f"plan needs {_size(need)} on this node, only {_size(free)} is free; "
                "refused before loading",
            )
            return
        spec = self.workdir / f"assignment-{a.plan_id[:12]}-r{a.revision}.json"
        spec.write_text(a.model_dump_json())
        cmd = [
            self.cfg.python,
            "-m",
            "executor.rank_process",
            "--exit-with-stdin",
            "--assignment",
            str(spec),
            "--model",
            str(model_dir),
            "--workdir",
            str(self.workdir),
            "--join-timeout",
            str(self.cfg.join_timeout_s),
        ]
        if self.cfg.serve_host:
            cmd += ["--serve-host", self.cfg.serve_host]
        if self.cfg.jaccl_devices:
            cmd += ["--jaccl-devices", str(self.cfg.jaccl_devices)]
        start, end = a.rank_plan.layers
        log(
            f"starting rank {a.rank}/{a.world_size} (stage {a.rank_plan.stage}, layers "
            f"{start}-{end}) of plan {a.plan_id[:12]} (revision {a.revision})"
        )
        child = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            start_new_session=True,
            env={**os.environ, "ASYMTP_API_TOKEN": self.cfg.api_token or ""},  # not in `ps`
        )
        self.child, self.child_rank = child, a.rank
        self.report("loading", progress=0.0)
        threading.Thread(target=self.watch_child, args=(child,), daemon=True).start()

    def refuse(self, a: Assignment, reason: str) -> None:
        """Not retried: only a new plan can change the answer."""
        self.refused_etag = a.etag
        self.report("failed", reason=reason[:MAX_REASON_CHARS])

    def watch_child(self, child: subprocess.Popen[str]) -> None:
        """Forward the child's events; a child that exits on its own is a failure."""
        assert child.stdout is not None
        failed: Failed | None = None
        for line in child.stdout:
            ev = parse(line)
            if child is not self.child or ev is None:
                continue
            if isinstance(ev, Failed):
                failed = ev
            else:
                self.forward(ev)
        code = child.wait()
        if child is not self.child or self.stop.is_set():
            return  # stopped on purpose
        self.child = None
        self.failures += 1
        self.streak += 1
        delay = RESTART_BACKOFF_S[min(self.streak - 1, len(RESTART_BACKOFF_S) - 1)]
        self.next_start = time.monotonic() + delay
        if failed is not None:
            reason = failed.reason
        else:
            reason = "rank 0 closed the group" if code == 0 else "the rank process exited"
        self.last_failure = reason
        self.report("failed", reason=reason, detail=f"restarting in {delay:g}s")
        self.wake.set()

    def forward(self, ev: Progress | Loaded | Joining | Ready) -> None:
        if isinstance(ev, Progress):
            done, total = ev.done, max(ev.total, 1)
            self.report("loading", progress=round(done / total, 4), detail=f"layers {done}/{total}")
        elif isinstance(ev, Loaded):
            self.report("joining", detail="waiting for the peers to form the group")
        elif isinstance(ev, Joining):
            if ev.attempt > 1:
                self.report("joining", detail=f"attempt {ev.attempt}: peers not all up yet")
        else:
            self.streak = 0
            self.report("ready", serving=ev.url)

    def stop_rank(self, why: str, grace_s: float = STOP_GRACE_S) -> None:
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        log(f"stopping rank {self.child_rank}: {why}")
        if self.child_rank == 0:
            child.send_signal(signal.SIGTERM)  # finish the request in flight, release the followers
        # Followers leave when rank 0 shuts the group down; either way the wait is bounded.
        try:
            child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log(f"rank {self.child_rank} did not stop within {STOP_GRACE_S:g}s; killing it")
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    # ---- main loop -------------------------------------------------------------------------
    def apply(self, update: Update | Refused) -> None:
        if isinstance(update, Refused):
            with self.lock:
                running = self.child is not None
            keeps = "; the current rank keeps running" if running else ""
            self.report("failed", reason=f"{update.reason}{keeps}"[:MAX_REASON_CHARS])
            return
        self.stop_rank("a new plan" if update.assignment else "the deployment is gone")
        self.assignment = update.assignment
        self.failures, self.streak, self.next_start, self.refused_etag = 0, 0, 0.0, None
        self.last_failure = None
        a = update.assignment
        if a is None or a.rank is None:
            why = "no deployment" if a is None else f"plan {a.plan_id[:12]} does not use this node"
            self.report("idle", detail=why, **self.facts_status())

    def step(self) -> None:
        """Apply the updates the poller queued, then start the rank if one is due."""
        while self.pending and not self.stop.is_set():
            self.apply(self.pending.pop(0))
        a = self.assignment
        runnable = a is not None and a.rank is not None and a.etag != self.refused_etag
        if runnable and self.child is None and time.monotonic() >= self.next_start:
            assert a is not None
            self.start_rank(a)

    def run(self) -> int:
        def on_signal(*_: Any) -> None:
            self.stop.set()
            self.wake.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        if self.cfg.measure_port is not None:
            base = collect(self.cfg.node_id)
            self.measuring = AgentMeasuring(
                base,
                self.cfg.measure_port,
                self.client.http,
                self.cfg.deployment,
                self.measured,
                self.cfg.python,
            )
        self.report("idle", detail="starting", **self.facts_status())
        threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True).start()
        threading.Thread(target=self.poller, name="poller", daemon=True).start()
        while not self.stop.is_set():
            self.wake.wait(0.5)
            self.wake.clear()
            try:
                self.step()
            except Exception as e:  # the agent outlives any one assignment
                log(f"error following the planner: {type(e).__name__}: {e}")
                self.refused_etag = self.assignment.etag if self.assignment else None
                with contextlib.suppress(Exception):
                    self.report("failed", reason=f"{type(e).__name__}: {e}"[:MAX_REASON_CHARS])
        # A follower leaving breaks the group anyway: only rank 0 gets time to finish a request.
        self.stop_rank("the agent is stopping", STOP_GRACE_S if self.child_rank == 0 else 0.0)
        self.report("idle", detail="agent stopped")
        if self.measuring is not None:
            self.measuring.stop()
        self.client.close()
        # Assignments and ring hostfiles live only as long as the agent.
        shutil.rmtree(self.workdir, ignore_errors=True)
        return 0


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def log(msg: str) -> None:
    print(f"[agent {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
