"""`make_plan` off the event loop, with an in-process LRU and one solve per distinct request.

The cache is an optimisation, not state: a plan is a pure function of its request, keyed by
`plan_id` (a hash of the request and the solver version). Identical requests arriving while
one is being solved wait for that solve instead of starting another. CP-SAT releases the GIL
while it searches, so a thread per solve keeps the event loop (and `/healthz`) responsive;
`solver_threads` bounds how many run at once and `max_pending_solves` how many may queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

import anyio
import anyio.to_thread

from planner.plan import make_plan, plan_id_for
from protocol.schema import Plan, PlanRequest, plan_json
from service.metrics import Metrics


class Busy(Exception):
    """More solves queued than `max_pending_solves`."""


class Planner:
    def __init__(
        self, metrics: Metrics, cache_size: int, solver_threads: int, max_pending: int
    ) -> None:
        self.metrics = metrics
        self.cache_size = cache_size
        self.max_pending = max_pending
        self._cache: OrderedDict[str, tuple[Plan, str]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[tuple[Plan, str]]] = {}
        self._limiter = anyio.CapacityLimiter(solver_threads)
        self._pending = 0

    async def plan(self, request: PlanRequest) -> tuple[Plan, str]:
        """(plan, its JSON) for `request`."""
        key = plan_id_for(request)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.metrics.cache_lookup(True)
            return hit
        running = self._inflight.get(key)
        if running is not None:
            self.metrics.cache_lookup(True)
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                if not running.cancelled():
                    raise  # this request was cancelled, not the solve it waited for
        self.metrics.cache_lookup(False)
        if self._pending >= self.max_pending:
            self.metrics.rejected_busy += 1
            raise Busy(f"{self._pending} plans are being solved or queued; retry shortly")
        fut: asyncio.Future[tuple[Plan, str]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        self._pending += 1
        try:
            result = await self._solve(request)
        except Exception as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        except BaseException:
            fut.cancel()
            raise
        finally:
            self._pending -= 1
            self._inflight.pop(key, None)
        fut.set_result(result)
        if self.cache_size:
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    async def _solve(self, request: PlanRequest) -> tuple[Plan, str]:
        started = time.perf_counter()
        # The solve goes on even if the client leaves: its result fills the cache.
        with anyio.CancelScope(shield=True):
            plan = await anyio.to_thread.run_sync(make_plan, request, limiter=self._limiter)
        self.metrics.solve(
            "feasible" if plan.feasible else "infeasible", time.perf_counter() - started
        )
        return plan, plan_json(plan) + "\n"
