"""Section "service": the planner service under load, and /healthz while a plan solves.

`asymtp serve --workers 2` on a free loopback port with a temporary database; N concurrent
httpx clients (asyncio, one connection each) post 4-node plan requests for a bounded time:

* uncached: every request is new (its `context_tokens` differs), so every one is solved;
* cached: the clients cycle through 4 requests, answered from each worker's plan cache after
  the first solve of each.

It records throughput, p50/p99 latency and errors (any status but 200, any transport error).
Then, on a one-worker server (so the process that solves is the one that answers), it probes
/healthz every 20 ms, idle and while a slow plan (24 uneven nodes, ~1-6 s of CP-SAT) is in
flight: the added latency is what a solve costs the event loop.

Run alone: `python -m bench.service_load [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from asymtp.processes import Service
from bench import REPO_ROOT, RESULTS_DIR, Section, percentile, write_section
from protocol.connectivity import full_mesh

MODEL_CONFIG = REPO_ROOT / "planner" / "examples" / "configs" / "llama-3.1-70b-bf16.json"
HEALTHZ_TARGET_MS = 50.0


@contextlib.contextmanager
def serve(workers: int) -> Iterator[tuple[str, int]]:
    """`asymtp serve` on loopback; yields (base URL, pid), stops it (and its workers) after."""
    folder = Path(tempfile.mkdtemp(prefix="asymtp-bench-"))
    service = Service(folder / "db.sqlite", workers=workers, entry="asymtp.cli")
    service.log_path = folder / "server.log"
    service.start(timeout=90)
    try:
        if workers > 1:
            time.sleep(1.0)  # let every worker finish starting
        assert service.proc is not None and service.proc.popen is not None
        yield service.url, service.proc.popen.pid
    finally:
        service.stop(timeout=20)


def four_node_request(context_tokens: int = 8192) -> dict[str, Any]:
    gb = 10**9
    nodes = [
        {"id": "studio-ultra", "memory_bytes": 192 * gb, "bandwidth_gbps": 800},
        {"id": "mbp-m5max", "memory_bytes": 128 * gb, "bandwidth_gbps": 614},
        {"id": "mini-m4pro", "memory_bytes": 64 * gb, "bandwidth_gbps": 273},
        {"id": "mbp-m3max", "memory_bytes": 48 * gb, "bandwidth_gbps": 300},
    ]
    links = full_mesh(n["id"] for n in nodes)
    return {
        "topology": {"nodes": nodes, "links": links},
        "model": json.loads(MODEL_CONFIG.read_text()),
        "constraints": {"context_tokens": context_tokens, "sharding": "auto"},
    }


def slow_request() -> dict[str, Any]:
    """24 uneven nodes on an RDMA mesh: seconds of CP-SAT, not milliseconds."""
    nodes = [
        {"id": f"n{i:02d}", "memory_gb": 32 + 16 * (i % 5), "bandwidth_gbps": 200 + 50 * (i % 7)}
        for i in range(24)
    ]
    links = full_mesh(n["id"] for n in nodes)
    return {
        "topology": {"nodes": nodes, "links": links},
        "model": json.loads(MODEL_CONFIG.read_text()),
        "constraints": {"time_limit_s": 8},
    }


@dataclass
class LoadResult:
    mix: str
    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    def row(self) -> list[Any]:
        ms = [x * 1e3 for x in self.latencies]
        n = len(ms)
        return [
            self.mix,
            self.clients,
            n + self.errors,
            self.errors,
            round(n / self.seconds, 1) if self.seconds else 0.0,
            round(percentile(ms, 50), 1),
            round(percentile(ms, 90), 1),
            round(percentile(ms, 99), 1),
            round(max(ms), 1) if ms else None,
            round(self.server_cpu_s / n * 1e3, 2) if n else None,
            round(self.client_cpu_s / n * 1e3, 2) if n else None,
        ]


async def load(url: str, mix: str, clients: int, seconds: float, max_requests: int) -> LoadResult:
    result = LoadResult(mix=mix, clients=clients)
    counter = iter(range(10**9))
    cached = [json.dumps(four_node_request(8192 + 256 * k)).encode() for k in range(4)]
    template = four_node_request()
    deadline = time.monotonic() + seconds
    started = time.monotonic()

    def body() -> bytes:
        i = next(counter)
        if mix == "cached":
            return cached[i % len(cached)]
        # One byte more runtime overhead: a new plan_id, the same problem to solve.
        data = copy.deepcopy(template)
        data["constraints"]["overhead_bytes"] = (1 << 30) + 1 + i
        return json.dumps(data).encode()

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            while (
                time.monotonic() < deadline and len(result.latencies) + result.errors < max_requests
            ):
                payload = body()
                t0 = time.perf_counter()
                try:
                    r = await c.post(
                        "/plan", content=payload, headers={"content-type": "application/json"}
                    )
                    status = str(r.status_code)
                except httpx.HTTPError as e:
                    status = type(e).__name__
                elapsed = time.perf_counter() - t0
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == "200":
                    result.latencies.append(elapsed)
                else:
                    result.errors += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = time.monotonic() - started
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the server process and its workers so far."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def measured_load(pid: int, *args: Any) -> LoadResult:
    server0, client0 = cpu_seconds(pid), sum(os.times()[:2])
    result = asyncio.run(load(*args))
    result.server_cpu_s = cpu_seconds(pid) - server0
    result.client_cpu_s = sum(os.times()[:2]) - client0
    return result


def probe_healthz(url: str, seconds: float, during: dict[str, Any] | None = None) -> list[float]:
    """/healthz latencies (s) every 20 ms for `seconds`, or while a slow plan is in flight."""
    out: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as c:
        c.get("/healthz")  # connection up
        if during is None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                c.get("/healthz").raise_for_status()
                out.append(time.perf_counter() - t0)
                time.sleep(0.02)
            return out
        state: dict[str, Any] = {}

        def solve() -> None:
            with httpx.Client(base_url=url, timeout=120) as s:
                state["response"] = s.post("/plan", json=during)

        t = threading.Thread(target=solve)
        t.start()
        time.sleep(0.1)
        while t.is_alive():
            t0 = time.perf_counter()
            c.get("/healthz").raise_for_status()
            out.append(time.perf_counter() - t0)
            time.sleep(0.02)
        t.join()
        plan = state["response"].json()
        during["_wall_ms"] = plan["solver"]["wall_ms"]
        return out


def _stats(values: list[float]) -> list[Any]:
    ms = [v * 1e3 for v in values]
    return [len(ms), round(percentile(ms, 50), 2), round(percentile(ms, 99), 2), round(max(ms), 2)]


def run(results_dir: Path, quick: bool = False) -> Section:
    clients = 8 if quick else 16
    seconds = 4.0 if quick else 12.0
    max_requests = 2000 if quick else 20000
    results: list[LoadResult] = []
    with serve(workers=2) as (url, pid):
        # Warm both workers' imports and the cached requests' first solves.
        asyncio.run(load(url, "cached", 4, 1.0, 200))
        for mix in ("uncached", "cached"):
            results.append(measured_load(pid, url, mix, clients, seconds, max_requests))
    with serve(workers=1) as (url, _):
        idle = probe_healthz(url, 2.0 if quick else 4.0)
        slow = slow_request()
        busy = probe_healthz(url, 0, during=slow)
    uncached, cached = results
    errors = sum(r.errors for r in results)
    idle_p50 = percentile([x * 1e3 for x in idle], 50)
    busy_ms = [x * 1e3 for x in busy]
    added_max = max(busy_ms) - idle_p50
    section: Section = {
        "section": "service",
        "title": "Planner service under load",
        "headline": [
            {"metric": "uncached 4-node plans", "value": uncached.row()[4], "unit": "req/s"},
            {
                "metric": "uncached p50 / p99",
                "value": f"{uncached.row()[5]} / {uncached.row()[7]}",
                "unit": "ms",
            },
            {"metric": "cached 4-node plans", "value": cached.row()[4], "unit": "req/s"},
            {
                "metric": "cached p50 / p99",
                "value": f"{cached.row()[5]} / {cached.row()[7]}",
                "unit": "ms",
            },
            {"metric": "errors", "value": errors, "unit": "requests"},
            {
                "metric": "/healthz during a solve, max added latency",
                "value": round(added_max, 1),
                "unit": f"ms (target ≤ {HEALTHZ_TARGET_MS:g})",
            },
        ],
        "tables": [
            {
                "title": f"POST /plan, 4-node requests, {clients} concurrent clients, `--workers 2`",
                "columns": [
                    "mix",
                    "clients",
                    "requests",
                    "errors",
                    "req/s",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "server CPU ms/req",
                    "client CPU ms/req",
                ],
                "rows": [r.row() for r in results],
            },
            {
                "title": "GET /healthz every 20 ms, one worker",
                "columns": ["condition", "probes", "p50 ms", "p99 ms", "max ms"],
                "rows": [
                    ["idle", *_stats(idle)],
                    [
                        f"while a 24-node plan solves ({slow['_wall_ms'] / 1e3:.1f} s)",
                        *_stats(busy),
                    ],
                ],
            },
        ],
        "figures": [],
        "notes": [
            f"`asymtp serve --workers 2` on 127.0.0.1 with a fresh SQLite file; {clients} "
            f"asyncio httpx clients (one keep-alive connection each) post for {seconds:g} s "
            f"(at most {max_requests} requests) a 4-node request: Llama 3.1 70B bf16 on four "
            "mixed Macs over an RDMA mesh, `sharding: auto`. *Uncached*: each request has a new "
            "`overhead_bytes` (one byte more), hence a new `plan_id`, and is solved; *cached*: the clients cycle "
            "through 4 requests, warmed before timing, so each worker answers from its LRU.",
            "Latency is the client's, from sending the request to the last byte of the plan; "
            "the clients run on the same machine as the server and compete with it for the "
            f"CPUs ({os.cpu_count()} here; the CPU columns split the cost between the server's "
            "processes and the load generator, whose httpx clients cost more than the cached "
            "answers they ask for). An error is any status other than 200 or a "
            "transport error; statuses seen: "
            + "; ".join(f"{r.mix}: {json.dumps(r.statuses, sort_keys=True)}" for r in results)
            + ".",
            "/healthz is probed over one keep-alive connection on a one-worker server (with "
            "two workers the probe could land on the worker that is not solving): idle, then "
            "while one slow plan (24 nodes, Llama 3.1 70B, 8 s limit) solves in the same "
            "process. CP-SAT releases the GIL while it searches and the solve runs in a "
            "worker thread, so the event loop keeps answering; the added latency is the "
            "probe's max during the solve minus its idle median.",
        ],
        "data": {
            "healthz_idle_ms": [round(x * 1e3, 3) for x in idle],
            "healthz_during_solve_ms": [round(x, 3) for x in busy_ms],
            "slow_plan_wall_ms": slow["_wall_ms"],
        },
    }
    write_section(results_dir, section)
    return section


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.service_load", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="fewer clients, shorter runs")
    ap.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    section = run(args.results, quick=args.quick)
    for h in section["headline"]:
        print(f"{h['metric']}: {h['value']} {h['unit']}")
    for table in section["tables"]:
        print(f"\n{table['title']}")
        print(" | ".join(table["columns"]))
        for row in table["rows"]:
            print(" | ".join(str(x) for x in row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
