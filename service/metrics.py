"""Prometheus text exposition, by hand (a few counters and histograms need no library).

Request, latency, solve and cache figures are per worker process (label `worker`, its pid):
with `--workers 2` a scrape sees the worker that answered it. Deployment and agent counts
come from the shared database and are the same from every worker.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SOLVE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def _labels(pairs: dict[str, str]) -> str:
    if not pairs:
        return ""
    esc = {
        k: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        for k, v in pairs.items()
    }
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str, labels: dict[str, str]) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts):
            running += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f"{name}_bucket{_labels({**labels, 'le': le})} {running}")
        out.append(f"{name}_sum{_labels(labels)} {self.total:.6f}")
        out.append(f"{name}_count{_labels(labels)} {running}")
        return out


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.worker = str(os.getpid())
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.solves: dict[str, Histogram] = {}
        self.cache = {"hit": 0, "miss": 0}
        self.long_polls = 0
        self.pending_solves = 0
        self.rejected_busy = 0

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[method, route, str(status)] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def solve(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self.solves.setdefault(outcome, Histogram(SOLVE_BUCKETS)).observe(seconds)

    def cache_lookup(self, hit: bool) -> None:
        with self._lock:
            self.cache["hit" if hit else "miss"] += 1

    def render(self, deployments: int, agents_by_state: dict[str, int]) -> str:
        w = {"worker": self.worker}
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("asymtp_http_requests_total", "counter", "HTTP requests answered")
            for (method, route, status), n in sorted(self.requests.items()):
                labels = {**w, "method": method, "route": route, "status": status}
                lines.append(f"asymtp_http_requests_total{_labels(labels)} {n}")
            family("asymtp_http_request_duration_seconds", "histogram", "HTTP request latency")
            for route, h in sorted(self.latency.items()):
                lines += h.lines("asymtp_http_request_duration_seconds", {**w, "route": route})
            family("asymtp_plan_solve_seconds", "histogram", "make_plan wall time (cache misses)")
            for outcome, h in sorted(self.solves.items()):
                lines += h.lines("asymtp_plan_solve_seconds", {**w, "outcome": outcome})
            family("asymtp_plan_cache_total", "counter", "plan cache lookups")
            for result, n in sorted(self.cache.items()):
                lines.append(f"asymtp_plan_cache_total{_labels({**w, 'result': result})} {n}")
            family("asymtp_plan_rejected_busy_total", "counter", "plans refused with 429")
            lines.append(f"asymtp_plan_rejected_busy_total{_labels(w)} {self.rejected_busy}")
            family("asymtp_long_polls_waiting", "gauge", "assignment long-polls waiting now")
            lines.append(f"asymtp_long_polls_waiting{_labels(w)} {self.long_polls}")
            family("asymtp_plan_solves_pending", "gauge", "solves running or queued now")
            lines.append(f"asymtp_plan_solves_pending{_labels(w)} {self.pending_solves}")
        family("asymtp_deployments", "gauge", "published deployments")
        lines.append(f"asymtp_deployments {deployments}")
        family("asymtp_agents", "gauge", "agents seen (latest record per node), by state")
        for state in ("idle", "loading", "joining", "ready", "failed"):
            lines.append(f'asymtp_agents{{state="{state}"}} {agents_by_state.get(state, 0)}')
        return "\n".join(lines) + "\n"
