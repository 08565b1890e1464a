"""`make_plan` off the event loop, with an in-process LRU and one solve per distinct request.

The cache is an optimisation, not state: a plan is a pure function of its request, keyed by
`plan_id` (a hash of the request and the solver version). Identical requests arriving while
one is being solved wait for that solve instead of starting another. CP-SAT releases the GIL
while it searches, so a thread per solve keeps the event loop (and `/healthz`) responsive;
`solver_threads` bounds how many run at once and `max_pending_solves` how many may queue.

A solve still queued when the last request waiting on it leaves (its client disconnected) is
dropped; one already running goes on to its time limit (CP-SAT's own bound) and fills the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import anyio.to_thread
from starlette.requests import Request

from planner.plan import make_plan, plan_id_for
from protocol.plan import Plan, plan_json
from protocol.schema import PlanRequest
from service.metrics import Metrics

T = TypeVar("T")
DISCONNECT_CHECK_S = 0.25
Result = tuple[Plan, str]


class Busy(Exception):
    """More solves queued than `max_pending_solves`."""


@dataclass
class _Solve:
    waiters: int = 0
    started: bool = False
    task: asyncio.Task[Result] | None = field(default=None, repr=False)


class Planner:
    def __init__(
        self, metrics: Metrics, cache_size: int, solver_threads: int, max_pending: int
    ) -> None:
        self.metrics = metrics
        self.cache_size = cache_size
        self.max_pending = max_pending
        self._cache: OrderedDict[str, Result] = OrderedDict()
        self._inflight: dict[str, _Solve] = {}
        self._limiter = anyio.CapacityLimiter(solver_threads)

    @property
    def pending(self) -> int:
        return len(self._inflight)

    async def plan(self, request: PlanRequest) -> Result:
        """(plan, its JSON) for `request`."""
        key = plan_id_for(request)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.metrics.cache_lookup(True)
            return hit
        solve = self._inflight.get(key)
        self.metrics.cache_lookup(solve is not None)
        if solve is None:
            if len(self._inflight) >= self.max_pending:
                self.metrics.rejected_busy += 1
                raise Busy(f"{len(self._inflight)} plans are being solved or queued; retry shortly")
            solve = self._inflight[key] = _Solve()
            solve.task = asyncio.create_task(self._run(key, request, solve))
            solve.task.add_done_callback(_retrieve)
        assert solve.task is not None
        solve.waiters += 1
        try:
            return await asyncio.shield(solve.task)
        finally:
            solve.waiters -= 1
            if solve.waiters == 0 and not solve.started and not solve.task.done():
                solve.task.cancel()  # nobody waits for it and it has not begun: drop it

    async def _run(self, key: str, request: PlanRequest, solve: _Solve) -> Result:
        try:
            async with self._limiter:
                solve.started = True
                # Once begun a solve is not interrupted: its result fills the cache.
                with anyio.CancelScope(shield=True):
                    started = time.perf_counter()
                    plan = await anyio.to_thread.run_sync(make_plan, request)
        finally:
            self._inflight.pop(key, None)
        outcome = "feasible" if plan.feasible else "infeasible"
        self.metrics.solve(outcome, time.perf_counter() - started)
        result = plan, plan_json(plan) + "\n"
        if self.cache_size:
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result


def _retrieve(task: asyncio.Task[Result]) -> None:
    """Mark a solve's failure as seen: its waiters (if any) got it already."""
    if not task.cancelled():
        task.exception()


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None once the client has disconnected (the work is cancelled)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_CHECK_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                return None
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
