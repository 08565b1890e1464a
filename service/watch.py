"""Wake long-polls when a deployment's revision changes, in this process or another.

Waiters register the revision they last read. One task per process re-reads the revisions of
the watched names (one query) every `interval` while anyone waits, and at once when this
process publishes or deletes (`poke`). A change made by another process over the same file is
therefore seen within `interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import anyio.to_thread

log = logging.getLogger("asymtp.service")


class RevisionWatch:
    def __init__(self, read: Callable[[list[str]], dict[str, int]], interval: float) -> None:
        self._read = read
        self._interval = interval
        self._waiters: dict[str, list[tuple[int | None, asyncio.Future[None]]]] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for entries in self._waiters.values():
            for _, fut in entries:
                if not fut.done():
                    fut.set_result(None)

    def poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def wait(self, name: str, known: int | None, timeout: float) -> None:
        """Return when `name`'s revision differs from `known` (None: absent), or at timeout."""
        if timeout <= 0:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (known, fut)
        idle = not self._waiters
        self._waiters.setdefault(name, []).append(entry)
        if idle:
            self.poke()
        try:
            await asyncio.wait({fut}, timeout=timeout)
        finally:
            entries = self._waiters.get(name, [])
            if entry in entries:
                entries.remove(entry)
            if not entries:
                self._waiters.pop(name, None)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._waiters:
                await self._wake.wait()
            self._wake.clear()
            names = sorted(self._waiters)
            try:
                revisions = await anyio.to_thread.run_sync(self._read, names)
            except Exception:  # the database is busy or gone: waiters time out, we retry
                log.exception("reading deployment revisions")
                revisions = None
            if revisions is not None:
                for name in names:
                    for known, fut in self._waiters.get(name, []):
                        if revisions.get(name) != known and not fut.done():
                            fut.set_result(None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
