"""Rank 0's continuous batching: admission, one lockstep step after another, token delivery.

One thread (the only one that touches MLX on rank 0) runs the loop: between two steps it
ends cancelled sequences, admits the next waiting one when the plan's KV budget has room,
decides the prefix-cache hit and evictions, then launches one step across the group
(`Lockstep.step`) and, while it computes, hands each sequence its token of the step before.
So a sequence whose token ended it has already been fed to one more step (its row of that
step is wasted, as in mlx-lm's `BatchGenerator`); one whose token in flight is its last by
`max_tokens` leaves before that. Admission is bounded by tokens: each
sequence reserves its prompt plus its `max_tokens` (at most the plan's `context_tokens`), and
the batch's caches, padded to its longest sequence, may reach (sequences × largest
reservation) tokens, which must stay within `context_tokens × batch_size`, what the plan
reserved KV cache for; the prefix cache lives in what the batch leaves free. Beyond
`max_queue` generations waiting for room, `submit` raises `EngineBusy`.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from executor.batching import StepPlan, cache_bytes, trimmable
from executor.engine_api import Done, EngineBusy, Finish, Generation, GroupBroken, TokenEvent
from executor.lockstep import IDLE_PING_S, PREFILL_STEP
from executor.prefix_cache import PrefixIndex
from executor.sampling import Pick, SequenceSampler, choose

DEFAULT_MAX_QUEUE = 32
RETRY_AFTER_S = 2.0


def _footprint(reserves: list[int]) -> int:
    """Tokens of KV cache a batch may come to hold: every row is padded to the longest."""
    return len(reserves) * max(reserves, default=0)


class SequenceHandle:
    """A generation in flight (`engine_api.Handle`)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.events: queue.Queue[TokenEvent | Done | Exception] = queue.Queue()
        self.cancelled = False
        self._wake = wake

    def __iter__(self) -> Iterator[TokenEvent | Done]:
        while True:
            event = self.events.get()
            if isinstance(event, Exception):
                raise event
            yield event
            if isinstance(event, Done):
                return

    def cancel(self) -> None:
        self.cancelled = True
        self._wake()


@dataclass
class Live:
    id: int
    prompt: list[int]
    sampler: SequenceSampler
    handle: SequenceHandle
    reserve: int
    tokens: list[int] = field(default_factory=list)
    """Tokens picked so far (an end-of-sequence token included)."""
    produced: int = 0
    cached: int = 0
    fed: int = 0
    """Prompt tokens sent to the group so far (cached ones included)."""
    steps: int = 0
    """Decode steps launched with this sequence in the batch."""
    dropped: bool = False
    """Out of the batch (its last token may still be on its way)."""
    ended: bool = False

    @property
    def in_flight(self) -> int:
        """Its tokens launched and not yet read (0 or 1)."""
        return self.steps - len(self.tokens)

    def end(self, finish: Finish) -> None:
        self.ended = True
        self.handle.events.put(Done(finish, len(self.prompt), self.produced, self.cached))


@dataclass(frozen=True)
class Launched:
    """A step computing: its sequences in batch order, its tokens and picks (lazy)."""

    lives: list[Live]
    tokens: mx.array
    picks: list[Pick]


class Scheduler:
    def __init__(
        self,
        lockstep: Any,
        context_tokens: int,
        batch_size: int = 1,
        max_queue: int = DEFAULT_MAX_QUEUE,
        prefix_cache: bool = True,
        on_fatal: Callable[[str], None] | None = None,
        prefill_step: int = PREFILL_STEP,
    ) -> None:
        self.lockstep = lockstep
        self.prefill_step = prefill_step
        self.context_tokens = context_tokens
        self.budget = context_tokens * batch_size
        self.max_queue = max_queue
        self.on_fatal = on_fatal
        self.index = PrefixIndex(prefix_cache, trimmable(make_prompt_cache(lockstep.model)))
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.waiting: deque[Live] = deque()
        self.running: dict[int, Live] = {}
        self.leaving: list[Live] = []
        self.joining: Live | None = None
        """Admitted, its prompt still being prefilled chunk by chunk between decode steps."""
        self.next_id = 0
        self.steps = 0
        self.round_trips = 0
        self.broken: str | None = None
        self.closing = False
        self.launched: Launched | None = None
        self._picks: list[Pick] = []
        self._lives: list[Live] = []
        self.thread = threading.Thread(target=self._loop, name="lockstep", daemon=True)
        self.thread.start()

    # ---- any thread ----------------------------------------------------------------------
    def submit(self, generation: Generation) -> SequenceHandle:
        prompt, sampling = list(generation.prompt), generation.sampling
        if not prompt or len(prompt) >= self.context_tokens:
            raise ValueError(
                f"a prompt of {len(prompt)} tokens does not fit the plan's context of "
                f"{self.context_tokens} tokens with room for one more"
            )
        room = self.context_tokens - len(prompt)
        sampling = dataclasses.replace(sampling, max_tokens=min(sampling.max_tokens, room))
        handle = SequenceHandle(self.wake.set)
        with self.lock:
            if self.broken is not None or self.closing:
                raise GroupBroken(self.broken or "rank 0 is shutting down")
            if self._queued_beyond_budget(live_reserve := len(prompt) + sampling.max_tokens):
                raise EngineBusy(RETRY_AFTER_S)
            live = Live(self.next_id, prompt, SequenceSampler(sampling), handle, live_reserve)
            self.next_id += 1
            self.waiting.append(live)
        self.wake.set()
        return handle

    def _queued_beyond_budget(self, reserve: int) -> bool:
        """Whether a sequence reserving `reserve` tokens would wait for room behind
        `max_queue` others that do (those the budget holds are admitted within a few steps)."""
        reserves = [live.reserve for live in self.running.values()]
        beyond = 0
        for w in self.waiting:
            reserves.append(w.reserve)
            beyond += _footprint(reserves) > self.budget
        return _footprint([*reserves, reserve]) > self.budget and beyond >= self.max_queue

    def ping(self, timeout_s: float = 30.0) -> None:
        """A round trip through the group (or a step, which is one); raises if it is broken."""
        seen = self.round_trips
        self.wake.set()
        deadline = time.monotonic() + timeout_s
        while self.round_trips == seen and self.broken is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.broken is not None:
            raise GroupBroken(self.broken)

    def abort(self, reason: str) -> None:
        """The group is lost (from the watchdog's thread): every open generation ends."""
        with self.lock:
            if self.broken is None:
                self.broken = reason
            lives = {live.id: live for live in [*self.waiting, *self.running.values()]}
            if self.launched is not None:  # those whose last token is on its way
                lives |= {live.id: live for live in self.launched.lives if not live.ended}
            self.waiting.clear()
        for live in lives.values():
            live.handle.events.put(GroupBroken(reason))

    def close(self) -> None:
        """Release the followers (SHUTDOWN) and stop the loop."""
        self.closing = True
        self.wake.set()
        self.thread.join(timeout=60)

    @property
    def in_flight(self) -> int:
        return len(self.waiting) + len(self.running)

    # ---- the lockstep thread ---------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self.closing:
                if not self._has_work():
                    woke = self.wake.wait(IDLE_PING_S)
                    self.wake.clear()
                    if not (woke and self._has_work()) and not self.closing:
                        self.lockstep.ping()
                        self.round_trips += 1
                    continue
                self._step()
            if self.broken is None:
                self.abort("rank 0 is shutting down")
                self.lockstep.shutdown()
        except Exception as e:  # a peer lost: the group cannot serve any more
            reason = str(e) or type(e).__name__
            self.abort(reason)
            if self.on_fatal is not None:
                self.on_fatal(reason)

    def _has_work(self) -> bool:
        return bool(self.waiting or self.running or self.leaving or self.launched)

    def _step(self) -> None:
        before, plan = self.launched, self._plan()
        tokens = self.lockstep.step(plan, self._choose)
        self.steps += 1
        self.round_trips += 1
        self.launched = None if tokens is None else Launched(self._lives, tokens, self._picks)
        for code in plan.drops:
            if code >= 0:
                self.index.weigh(code, cache_bytes(self.lockstep.batch.entries[code]))
        if before is not None:
            self._deliver(before)

    def _plan(self) -> StepPlan:
        self._end_cancelled()
        self._leave_at_length()
        plan = StepPlan(drops=self._leave())
        if self.joining is None:
            with self.lock:
                head = self.waiting[0] if self.waiting else None
                if head is not None and self._fits(head.reserve):
                    self.waiting.popleft()
                else:
                    head = None
            if head is not None:
                plan = self._admit(plan, head)
        if self.joining is not None:
            plan = self._chunk(plan, self.joining)
        footprint = _footprint([live.reserve for live in self.running.values()])
        evicts = self.index.evict(self.budget - footprint)
        return dataclasses.replace(plan, evicts=evicts)

    def _leave(self) -> list[int]:
        """Drop codes for the sequences leaving; their caches become prefix-cache entries."""
        drops = []
        for live in self.leaving:
            live.dropped = True
            with self.lock:  # `abort` reads `running` from the watchdog's thread
                del self.running[live.id]
            if live is self.joining:
                self.joining = None
                drops.append(-live.id - 1)  # cancelled mid-prefill: nothing worth keeping
            elif self.index.enabled:
                # The cache holds the prompt and every token fed: each step fed the token
                # picked by the one before (the first, the prompt's last token).
                self.index.add(live.id, [*live.prompt, *live.tokens[: live.steps - 1]])
                drops.append(live.id)
            else:
                drops.append(-live.id - 1)
        self.leaving = []
        return drops

    def _admit(self, plan: StepPlan, live: Live) -> StepPlan:
        with self.lock:
            self.running[live.id] = live
        self.joining = live
        hit = self.index.lookup(live.prompt)
        if hit is None:
            return plan
        live.cached = live.fed = hit.tokens
        return dataclasses.replace(plan, hit=hit.entry, hit_tokens=hit.tokens, hit_move=hit.move)

    def _chunk(self, plan: StepPlan, live: Live) -> StepPlan:
        """The next chunk of the joining sequence's prompt; with the last, it joins."""
        end = min(live.fed + self.prefill_step, len(live.prompt))
        chunk, live.fed = live.prompt[live.fed : end], end
        join = end == len(live.prompt)
        if join:
            self.joining = None
        return dataclasses.replace(plan, admit=live.id, prompt=chunk, join=join)

    def _fits(self, reserve: int) -> bool:
        return _footprint([*(live.reserve for live in self.running.values()), reserve]) <= (
            self.budget
        )

    def _end_cancelled(self) -> None:
        with self.lock:
            gone = [w for w in self.waiting if w.handle.cancelled]
            for w in gone:
                self.waiting.remove(w)
        for w in gone:
            w.end(Finish.CANCELLED)
        for live in self.running.values():
            if live.handle.cancelled and not live.ended:
                self._finish(live, Finish.CANCELLED)

    def _finish(self, live: Live, finish: Finish) -> None:
        live.end(finish)
        if not live.dropped:
            self.leaving.append(live)

    def _leave_at_length(self) -> None:
        """Sequences whose token in flight is their last by `max_tokens` (or an end token):
        no step needs them any more."""
        for live in self.running.values():
            last = live.produced + 1 >= live.sampler.sampling.max_tokens
            if live.in_flight and last and not live.ended:
                self.leaving.append(live)

    def _choose(self, logits: mx.array) -> tuple[mx.array, list[mx.array]]:
        inputs = self.lockstep.batch.inputs
        self._lives = [self.running[i] for i in self.lockstep.batch.ids]
        fed = [
            inputs[i : i + 1] if live.steps and live.sampler.processors else None
            for i, live in enumerate(self._lives)
        ]
        tokens, self._picks = choose([live.sampler for live in self._lives], logits, fed)
        for live in self._lives:
            live.steps += 1
        return tokens, [p.logprobs for p in self._picks if p.logprobs is not None]

    def _deliver(self, launched: Launched) -> None:
        eos = self.lockstep.eos
        tokens = self.lockstep.read(launched.tokens)
        for live, token, pick in zip(launched.lives, tokens, launched.picks):
            if live.handle.cancelled and not live.ended:
                self._finish(live, Finish.CANCELLED)
            if live.ended:
                continue  # its row of a step launched before it ended
            live.tokens.append(token)
            finish = None
            if token in eos:
                finish = Finish.STOP
            else:
                live.handle.events.put(live.sampler.event(token, pick.logprobs))
                live.produced += 1
                if live.produced >= live.sampler.sampling.max_tokens:
                    finish = Finish.LENGTH
            if finish is not None:
                self._finish(live, finish)
