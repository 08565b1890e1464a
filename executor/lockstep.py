"""Every rank runs the same forward passes: rank 0 decides, the others follow.

Rank 0 broadcasts a fixed-size `Header`, its payload, then the tokens it sampled, by `all_sum`
of int32 buffers to which the other ranks contribute zeros, so heterogeneous chips never
diverge. Serving uses `STEP`: one step of the continuous batch (sequences leaving, prefix-cache
entries evicted, at most one sequence joining, then one forward pass for the whole batch and
its tokens; see `executor.batching`). A step is launched, not waited for: its tokens'
broadcast is part of its lazy graph and the next step is built on them, so rank 0 reads a
step's tokens (and streams them) while the next one computes, as mlx-lm's `generate_step`
does, and a follower waits only for the next command. `LOGITS`, `GREEDY_BATCH` and
`GENERATE` serve the parity check and the speed benchmark.

An idle rank 0 sends PING every few seconds, so a follower waiting for a command hears from
it regularly and a lost follower is noticed without a request. With a `Watchdog`, every wait
on the group is bounded by a limit that grows with the tokens in flight (a slow machine's long
prefill is work, not a stall), while the watchdog's heartbeats catch a stopped or vanished peer
within seconds whatever the limit.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.cache import make_prompt_cache

from executor.batching import Batch, StepPlan
from executor.commands import HEADER, Command, Header

Choose = Callable[[mx.array], tuple[mx.array, list[mx.array]]]
"""Rank 0: the batch's logits → its tokens (lazy int32, one per row) and arrays to compute
with them (logprobs to report)."""

PREFILL_STEP = 512
STEP_TIMEOUT_S = 60.0
"""The bound of a wait on the group with no tokens in flight (a command, a broadcast)."""
WORK_S_PER_TOKEN = 1.0
"""Added to the bound per token of the forward pass in flight: 1 s/token is far slower than
any machine that can hold the model; a stopped peer is caught by heartbeats long before."""
IDLE_PING_S = 2.0
"""An idle rank 0 pings the group this often."""


def _ints(a: mx.array) -> list[int]:
    """A 1-D integer array as Python ints (mlx's `tolist` is typed for any nesting)."""
    return [int(v) for v in a.astype(mx.int32).tolist()]  # type: ignore[union-attr, arg-type]


class Lockstep:
    def __init__(
        self,
        model: nn.Module,
        group: Any,
        eos_ids: Sequence[int],
        watchdog: Any = None,
        step_timeout_s: float = STEP_TIMEOUT_S,
    ) -> None:
        self.model = model
        self.group = group
        self.rank = group.rank() if group is not None else 0
        self.size = group.size() if group is not None else 1
        self.eos = set(eos_ids)
        self.watchdog = watchdog
        self.step_timeout_s = step_timeout_s
        self.batch = Batch(model, self._eval)
        self.in_flight = 0
        """Tokens of forward passes launched and not yet waited for."""

    def _guard(self, what: str, tokens: int = 0, extra_s: float = 0.0) -> Any:
        if self.watchdog is None or self.size == 1:
            return contextlib.nullcontext()
        limit = self.step_timeout_s + WORK_S_PER_TOKEN * tokens + extra_s
        return self.watchdog.armed(limit, what)

    def _eval(self, tokens: int, *arrays: Any) -> None:
        """Evaluate a forward pass over `tokens` tokens (its all-sums wait on every peer),
        after the passes still computing."""
        tokens += self.in_flight
        with self._guard(f"a forward pass of {tokens} tokens", tokens):
            mx.eval(*arrays)
        self.in_flight = 0

    # ---- broadcast ---------------------------------------------------------------------
    def _bcast(self, values: Sequence[int] | None, n: int, extra_s: float = 0.0) -> list[int]:
        if self.size == 1:
            assert values is not None
            return list(values)
        if n == 0:
            return []
        if self.rank == 0:
            assert values is not None and len(values) == n
            buf = mx.array(list(values), dtype=mx.int32)
        else:
            buf = mx.zeros((n,), dtype=mx.int32)
        with self._guard("a broadcast from rank 0", extra_s=extra_s):
            return _ints(mx.distributed.all_sum(buf, group=self.group))

    def _send(self, header: Header, payload: Sequence[int] = ()) -> None:
        """Rank 0: a command and its payload to every follower."""
        if self.size == 1:
            return
        self._bcast(dataclasses.replace(header, payload=len(payload)).ints(), HEADER)
        self._bcast(list(payload), len(payload))

    def _receive(self) -> tuple[Header, list[int]]:
        """Followers: the next command (rank 0 pings while idle, so the wait is bounded; the
        passes still computing come before it on the stream)."""
        extra_s = 2 * IDLE_PING_S + WORK_S_PER_TOKEN * self.in_flight
        header = Header.parse(self._bcast(None, HEADER, extra_s=extra_s))
        self.in_flight = 0
        return header, self._bcast(None, header.payload)

    # ---- serving: one step of the continuous batch ---------------------------------------
    def step(self, plan: StepPlan, choose: Choose) -> mx.array | None:
        """Rank 0: apply `plan` on every rank, then launch one forward pass of the whole batch;
        rank 0's `choose` turns the batch's logits into its tokens (lazily), broadcast to every
        rank, which feeds them to the next step. Returns the tokens, still computing (None
        with an empty batch): `read` them once the next step is launched."""
        self._post(plan.header(), plan.payload())
        return self._step(plan, choose)

    def _post(self, header: Header, payload: Sequence[int]) -> None:
        """Rank 0: a step's command to every follower, without waiting for its all-sum (the
        step's tokens, read later, come after it on the stream)."""
        if self.size == 1:
            return
        for values in (dataclasses.replace(header, payload=len(payload)).ints(), payload):
            if values:
                buf = mx.array(list(values), dtype=mx.int32)
                self._launch(mx.distributed.all_sum(buf, group=self.group))

    def _step(self, plan: StepPlan, choose: Choose | None) -> mx.array | None:
        self.batch.apply(plan)
        n = len(self.batch.ids)
        if not n:
            return None
        logits = self.batch.forward()
        if choose is not None:
            chosen, extra = choose(logits)
        else:
            # A follower contributes zeros, made to depend on the pass: evaluating the
            # broadcast then runs this pass's all-sums first, in the order rank 0 does.
            chosen, extra = mx.depends(mx.zeros((n,), dtype=mx.int32), logits), []
        tokens = chosen if self.size == 1 else mx.distributed.all_sum(chosen, group=self.group)
        self.batch.feed(tokens)
        self.in_flight += n
        self._launch(tokens, *extra)
        return tokens

    def _launch(self, *arrays: Any) -> None:
        """`mx.async_eval`, watched: it blocks while many tasks are queued, and a peer gone
        mid-send keeps the ring backend retrying inside it."""
        with self._guard(f"a forward pass of {self.in_flight} tokens", self.in_flight):
            mx.async_eval(*arrays)

    def read(self, tokens: mx.array) -> list[int]:
        """Rank 0: the tokens `step` launched (waits for the passes still computing)."""
        with self._guard(f"a forward pass of {self.in_flight} tokens", self.in_flight):
            out = _ints(tokens)
        self.in_flight = 0
        return out

    # ---- parity and benchmarks -----------------------------------------------------------
    def generate(self, prompt: list[int], max_tokens: int) -> Iterator[int]:
        """Rank 0: greedy tokens of one prompt, up to an end-of-sequence token or `max_tokens`.
        Consume it to the end: the followers run every pass of it."""
        self._send(Header(Command.GENERATE, steps=max_tokens), prompt)
        return self._generate(prompt, max_tokens)

    def _generate(self, prompt: list[int], max_tokens: int) -> Iterator[int]:
        cache = make_prompt_cache(self.model)
        tokens = mx.array(prompt, dtype=mx.int32)
        while tokens.size > PREFILL_STEP:
            out = self.model(tokens[:PREFILL_STEP][None], cache=cache)[:, -1, :]
            self._eval(PREFILL_STEP, out, [c.state for c in cache])  # see Batch._admit
            tokens = tokens[PREFILL_STEP:]
        logits = self.model(tokens[None], cache=cache)[:, -1, :]
        for produced in range(1, max_tokens + 1):
            self._eval(int(tokens.size), logits)
            choice = _ints(mx.argmax(logits, axis=-1)) if self.rank == 0 else None
            (tok,) = self._bcast(choice, 1)
            yield tok
            if tok in self.eos or produced == max_tokens:
                return
            tokens = mx.array([[tok]], dtype=mx.int32)
            logits = self.model(tokens, cache=cache)[:, -1, :]

    def logits(self, prompt: list[int]) -> mx.array:
        """Rank 0: full logits of one prompt, computed across the group."""
        self._send(Header(Command.LOGITS), prompt)
        return self._logits(prompt)

    def _logits(self, prompt: list[int]) -> mx.array:
        out = self.model(mx.array(prompt, dtype=mx.int32)[None])
        self._eval(len(prompt), out)
        return out

    def greedy_batch(self, prompts: list[list[int]], steps: int) -> list[list[int]]:
        """Rank 0: `steps` greedy tokens for equal-length prompts decoded together (no early
        stop), one forward pass per step for the whole batch: what parity checks need."""
        if len({len(p) for p in prompts}) != 1:
            raise ValueError("greedy_batch needs prompts of equal length")
        header = Header(Command.GREEDY_BATCH, batch=len(prompts), steps=steps)
        self._send(header, [t for p in prompts for t in p])
        return self._greedy_batch(prompts, steps)

    def _greedy_batch(self, prompts: list[list[int]], steps: int) -> list[list[int]]:
        cache = make_prompt_cache(self.model)
        logits = self.model(mx.array(prompts, dtype=mx.int32), cache=cache)[:, -1, :]
        out: list[list[int]] = [[] for _ in prompts]
        work = len(prompts) * len(prompts[0])
        for step in range(steps):
            self._eval(work, logits)  # this pass's all-sums before the broadcast, on every rank
            choice = _ints(mx.argmax(logits, axis=-1)) if self.rank == 0 else None
            toks = self._bcast(choice, len(prompts))
            for seq, t in zip(out, toks):
                seq.append(t)
            if step + 1 < steps:
                logits = self.model(mx.array(toks, dtype=mx.int32)[:, None], cache=cache)[:, -1, :]
            work = len(prompts)
        return out

    def shutdown(self) -> None:
        self._send(Header(Command.SHUTDOWN))

    def ping(self) -> None:
        """Rank 0: a round trip through the group; raises if a peer is gone."""
        self._send(Header(Command.PING))

    # ---- ranks > 0 -----------------------------------------------------------------------
    def follow(self) -> None:
        """Ranks > 0: serve rank 0's commands until it shuts the group down."""
        while True:
            header, payload = self._receive()
            if header.command == Command.SHUTDOWN:
                return
            if header.command == Command.STEP:
                self._step(StepPlan.parse(header, payload), None)
            elif header.command == Command.GENERATE:
                for _ in self._generate(payload, header.steps):
                    pass
            elif header.command == Command.LOGITS:
                self._logits(payload)
            elif header.command == Command.GREEDY_BATCH:
                width = len(payload) // header.batch
                prompts = [payload[i * width : (i + 1) * width] for i in range(header.batch)]
                self._greedy_batch(prompts, header.steps)
