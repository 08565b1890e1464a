"""A serving group on this machine: one rank process per share on 127.0.0.1, rank 0 serving
the HTTP API. For tests and the API bench (`bench/api_bench.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from executor.loader import read_json
from executor.parity import free_ports, rank_command
from planner.splits import plan_for_split
from protocol.plan import Plan, plan_json

READY_TIMEOUT_S = 180.0


@dataclass
class Group:
    url: str
    procs: list[subprocess.Popen[str]]
    lines: list[list[str]] = field(default_factory=list)
    """Each rank's stdout lines so far (its JSON events)."""


def _read(proc: subprocess.Popen[str], sink: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sink.append(line.rstrip("\n"))


def _wait_ready(group: Group, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r, p in enumerate(group.procs):
            if p.poll() is not None:
                raise RuntimeError(f"rank {r} exited {p.returncode}: {group.lines[r][-5:]}")
        if any('"ready"' in line and '"url"' in line for line in group.lines[0]):
            return
        time.sleep(0.1)
    raise RuntimeError(f"rank 0 did not serve within {timeout:g}s: {group.lines[0][-5:]}")


@contextmanager
def serving_group(
    model_dir: Path,
    workdir: Path,
    shares: list[float],
    context_tokens: int | None = None,
    api_token: str | None = None,
    sharding: str = "asymmetric",
    batch_size: int = 8,
    max_queue: int | None = None,
    timeout: float = READY_TIMEOUT_S,
    plan: Plan | None = None,
) -> Iterator[Group]:
    """A group serving `model_dir` split by `shares` (or run as `plan` says, e.g. in pipeline
    stages; `shares` is then unused), up to `batch_size` sequences decoding together (the
    plan's KV budget is `context_tokens × batch_size`); ends it on exit."""
    if plan is None:
        plan = plan_for_split(read_json(model_dir / "config.json"), shares, sharding=sharding)
    shares = [r.share for r in plan.ranks]
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "plan.json").write_text(plan_json(plan))
    *ring, serve = free_ports(len(shares) + 1)
    (workdir / "hosts.json").write_text(json.dumps([[f"127.0.0.1:{p}"] for p in ring]))
    extra = ["--batch-size", str(batch_size)]
    extra += ["--context-tokens", str(context_tokens)] if context_tokens else []
    extra += ["--max-queue", str(max_queue)] if max_queue is not None else []
    env = {**os.environ, **({"ASYMTP_API_TOKEN": api_token} if api_token else {})}
    procs = [
        subprocess.Popen(
            [
                *rank_command(model_dir, workdir, r),
                "--serve",
                f"127.0.0.1:{serve}",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for r in range(len(shares))
    ]
    group = Group(f"http://127.0.0.1:{serve}", procs, [[] for _ in procs])
    for p, sink in zip(procs, group.lines):
        threading.Thread(target=_read, args=(p, sink), daemon=True).start()
    try:
        _wait_ready(group, timeout)
        yield group
    finally:
        # Rank 0 first: it drains, then lets the followers go; what remains is ended.
        for p in procs:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
