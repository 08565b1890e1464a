"""Rank 0's serving state between HTTP and the engine: admission (draining, broken, busy),
one pump thread per generation (never asyncio's small shared pool), cancellation when the
client goes away, and an idle ping that notices a lost peer without a request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from math import ceil

from executor.api.errors import APIError
from executor.engine_api import (
    Done,
    Engine,
    EngineBusy,
    Generation,
    GroupBroken,
    Handle,
    TokenEvent,
)

PING_INTERVAL_S = 2.0  # idle rank 0 checks its group this often, so a lost peer shows quickly
DISCONNECT_POLL_S = 0.25

Event = TokenEvent | Done
_Item = Event | APIError


class Serving:
    def __init__(
        self,
        engine: Engine,
        on_fatal: Callable[[str], None] | None = None,
        ping_interval_s: float | None = PING_INTERVAL_S,
    ) -> None:
        self.engine = engine
        self.on_fatal = on_fatal
        self.draining = False
        self.broken: str | None = None
        self.in_flight = 0
        self.served = 0
        self._open: dict[asyncio.Queue[_Item], asyncio.AbstractEventLoop] = {}
        self._stop = threading.Event()
        self._pinger: threading.Thread | None = None
        if ping_interval_s is not None:
            self._pinger = threading.Thread(
                target=self._ping_loop, args=(ping_interval_s,), name="ping", daemon=True
            )
            self._pinger.start()

    def _ping_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if self.broken is None and self.in_flight == 0:
                try:
                    self.engine.ping()
                except Exception as e:  # a peer is gone: the group cannot serve any more
                    self._fatal(str(e) or type(e).__name__)

    def _fatal(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason
            if self.on_fatal:
                self.on_fatal(reason)

    def abort(self, reason: str) -> None:
        """From any thread, when the group is lost while a step is stuck in it: end every open
        response with an error instead of leaving its client hanging."""
        self.broken = reason
        err = APIError(503, f"generation failed: {reason}")
        for q, loop in list(self._open.items()):
            loop.call_soon_threadsafe(q.put_nowait, err)

    def close(self) -> None:
        self._stop.set()
        if self._pinger is not None:
            self._pinger.join()

    def _admit(self, generation: Generation) -> Handle:
        if self.broken is not None:
            raise APIError(503, f"the group is broken ({self.broken}); it will re-form")
        if self.draining:
            raise APIError(503, "this deployment is reloading a new plan; retry shortly")
        try:
            return self.engine.submit(generation)
        except EngineBusy as e:
            wait = str(max(1, ceil(e.retry_after_s)))
            raise APIError(
                429, f"all slots are busy; retry in {wait}s", headers={"Retry-After": wait}
            ) from None
        except GroupBroken as e:
            self._fatal(str(e))
            raise APIError(503, f"the group is broken ({e}); it will re-form") from None
        except ValueError as e:  # the engine's own bound on this request (its context)
            raise APIError(400, str(e)) from None

    async def run(
        self,
        generation: Generation,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> AsyncGenerator[Event, None]:
        """The generation's events. A client gone (the caller closes this iterator, or
        `disconnected()` turns true) cancels it in the engine; so does `should_stop()` (a stop
        string), whose cancelled `Done` still comes, with the counts."""
        handle = self._admit(generation)
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[_Item] = asyncio.Queue()

        def pump() -> None:
            try:
                for ev in handle:
                    loop.call_soon_threadsafe(q.put_nowait, ev)
            except GroupBroken as e:
                self._fatal(str(e))
                loop.call_soon_threadsafe(q.put_nowait, APIError(503, f"generation failed: {e}"))
            except Exception as e:  # an engine bug: the client hears of it rather than hangs
                err = APIError(500, f"generation failed ({type(e).__name__}: {e})")
                loop.call_soon_threadsafe(q.put_nowait, err)

        self.in_flight += 1
        self._open[q] = loop
        finished = False
        threading.Thread(target=pump, name="pump", daemon=True).start()
        try:
            while True:
                item = await self._next(q, disconnected)
                if item is None:
                    return
                if isinstance(item, APIError):
                    raise item
                yield item
                if should_stop():
                    handle.cancel()
                if isinstance(item, Done):
                    finished = True
                    self.served += 1
                    return
        finally:
            if not finished:
                handle.cancel()
            self.in_flight -= 1
            self._open.pop(q, None)

    @staticmethod
    async def _next(
        q: asyncio.Queue[_Item], disconnected: Callable[[], Awaitable[bool]] | None
    ) -> _Item | None:
        """The next item, or None once the client is gone (polled only when there is no
        stream whose closing tells us)."""
        if disconnected is None:
            return await q.get()
        while True:
            try:
                return await asyncio.wait_for(q.get(), DISCONNECT_POLL_S)
            except TimeoutError:
                if await disconnected():
                    return None
