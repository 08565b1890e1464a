"""The continuous batch every rank holds: which sequences decode together and their KV caches.

Rank 0 decides each step (`StepPlan`) and every rank applies it in the same order, so the
batches and prefix-cache entries of all ranks stay identical in shape:

1. sequences leaving (finished or cancelled) are filtered out of the batch; each one's cache
   becomes a prefix-cache entry named by the sequence's id, or is discarded;
2. one chunk of the joining sequence's prompt is prefilled, alone, so a long prompt does not
   stall the batch: the first chunk starts from a prefix-cache entry (moved, or copied then
   trimmed to the tokens it shares); with the last chunk (all but its last token prefilled)
   the sequence is merged into the batch with that last token as its next input;
3. evicted entries are dropped;
4. one forward pass of the whole batch; rank 0 picks a token per sequence, broadcast to all,
   which becomes each sequence's next input. The pass, the choice and the broadcast are one
   lazy graph (`executor.lockstep`): the next step is built on the broadcast tokens before
   anyone reads them, so `inputs` is an array still computing.

A sequence prefilled alone then merged decodes exactly as it would alone (its padding is
masked), which is mlx-lm's own `BatchGenerator` way. Reused from mlx-lm: the batched caches
(`BatchKVCache`/`ArraysCache` merge, extend, filter, extract) and `make_prompt_cache`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.cache import make_prompt_cache

from executor.commands import Command, Header

Evaluate = Callable[..., None]
"""`evaluate(tokens, *arrays)`: evaluate a forward pass of `tokens` tokens (watched)."""


@dataclass(frozen=True)
class StepPlan:
    drops: list[int] = field(default_factory=list)
    """Sequences leaving; -(id + 1) for one whose cache is discarded instead of kept."""
    evicts: list[int] = field(default_factory=list)
    admit: int = -1
    prompt: list[int] = field(default_factory=list)
    """This step's chunk of the joining sequence's prompt (after the prefix-cache hit)."""
    hit: int = -1
    hit_tokens: int = 0
    hit_move: bool = False
    join: bool = True

    def header(self) -> Header:
        return Header(
            Command.STEP,
            drops=len(self.drops),
            evicts=len(self.evicts),
            admit=self.admit,
            hit=self.hit,
            hit_tokens=self.hit_tokens,
            hit_move=int(self.hit_move),
            join=int(self.join),
        )

    def payload(self) -> list[int]:
        return [*self.drops, *self.evicts, *self.prompt]

    @classmethod
    def parse(cls, h: Header, payload: list[int]) -> StepPlan:
        evicts_end = h.drops + h.evicts
        return cls(
            payload[: h.drops],
            payload[h.drops : evicts_end],
            h.admit,
            payload[evicts_end:],
            h.hit,
            h.hit_tokens,
            bool(h.hit_move),
            bool(h.join),
        )


def cache_tokens(cache: list[Any]) -> int:
    """Tokens a single-sequence cache holds (0 for caches that do not count them)."""
    return max((int(getattr(c, "offset", 0)) for c in cache), default=0)


def cache_bytes(cache: list[Any]) -> int:
    return sum(int(c.nbytes) for c in cache)


def trimmable(cache: list[Any]) -> bool:
    return all(c.is_trimmable() for c in cache)


class Batch:
    """One rank's batch: sequence ids in batch order, their merged caches, next inputs, and
    the prefix-cache entries (id → single-sequence cache)."""

    def __init__(self, model: nn.Module, evaluate: Evaluate) -> None:
        self.model = model
        self.evaluate = evaluate
        self.joining: tuple[int, list[Any]] | None = None
        """The sequence being prefilled, chunk by chunk, and its cache so far."""
        self.ids: list[int] = []
        self.cache: list[Any] = []
        self.inputs: mx.array | None = None
        """The token each sequence feeds next, in batch order (int32, lazy)."""
        self.entries: dict[int, list[Any]] = {}

    def apply(self, plan: StepPlan) -> None:
        self._drop(plan.drops)
        if plan.admit >= 0:
            self._admit(plan)
        for entry in plan.evicts:
            del self.entries[entry]

    def _drop(self, drops: list[int]) -> None:
        if not drops:
            return
        leaving = {d if d >= 0 else -d - 1: d >= 0 for d in drops}
        if self.joining is not None and self.joining[0] in leaving:
            self.joining = None  # cancelled before it joined: nothing worth keeping
        for i, seq in enumerate(self.ids):
            if leaving.get(seq):
                self.entries[seq] = [c.extract(i) for c in self.cache]
        keep = [i for i, seq in enumerate(self.ids) if seq not in leaving]
        if len(keep) == len(self.ids):
            return  # only the joining sequence left
        if keep:
            for c in self.cache:
                c.filter(keep)
            assert self.inputs is not None
            self.inputs = self.inputs[mx.array(keep)]
        else:
            self.cache, self.inputs = [], None
        self.ids = [self.ids[i] for i in keep]

    def _start(self, plan: StepPlan) -> list[Any]:
        if plan.hit < 0:
            return make_prompt_cache(self.model)
        entry = (
            self.entries.pop(plan.hit) if plan.hit_move else copy.deepcopy(self.entries[plan.hit])
        )
        extra = cache_tokens(entry) - plan.hit_tokens
        if extra > 0:
            for c in entry:
                c.trim(extra)
        return entry

    def _admit(self, plan: StepPlan) -> None:
        if self.joining is None or self.joining[0] != plan.admit:
            self.joining = (plan.admit, self._start(plan))
        cache = self.joining[1]
        chunk = plan.prompt[:-1] if plan.join else plan.prompt
        if chunk:
            # Evaluate the chunk's output, not just the caches: a rank holding no heads of a
            # layer keeps a cache that does not depend on its input, and would skip all-sums
            # the other ranks wait in.
            out = self.model(mx.array(chunk, dtype=mx.int32)[None], cache=cache)[:, -1, :]
            self.evaluate(len(chunk), out, [c.state for c in cache])
        if not plan.join:
            return
        self.joining = None
        merged = [c.merge([c]) for c in cache]
        if self.cache:
            for mine, theirs in zip(self.cache, merged):
                mine.extend(theirs)
        else:
            self.cache = merged
        self.ids.append(plan.admit)
        last = mx.array(plan.prompt[-1:], dtype=mx.int32)
        self.inputs = last if self.inputs is None else mx.concatenate([self.inputs, last])

    def forward(self) -> mx.array:
        """The batch's next-token logits, one row per sequence (lazy: evaluate it)."""
        assert self.inputs is not None
        logits: mx.array = self.model(self.inputs[:, None], cache=self.cache)[:, -1, :]
        return logits

    def feed(self, tokens: mx.array) -> None:
        """The batch's next inputs: this step's tokens (lazy; rank 0's broadcast)."""
        self.inputs = tokens
