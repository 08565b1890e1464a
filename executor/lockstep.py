"""Every rank runs the same forward passes: rank 0 decides, the others follow.

Rank 0 broadcasts a fixed-size command header, the prompt, then each sampled token, by
`all_sum` of int32 buffers to which the other ranks contribute zeros. A token of -1 ends a
generation early (the client stopped reading); the followers then leave the loop with it.

    header = [command, prompt length, max tokens, temperature x 1e6, top-p x 1e6, seed, 0, 0]
    (GREEDY_BATCH sends the batch size in the temperature field.)

An idle rank 0 sends PING every few seconds, so a follower waiting for a command hears from
it regularly and a lost follower is noticed without a request. With a `Watchdog`, every wait
on the group is bounded: a peer alive but stuck ends in a failure, not a hang.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import make_sampler

GENERATE, LOGITS, SHUTDOWN, GREEDY_BATCH, PING = 1, 2, 3, 4, 5
HEADER = 8
STOP = -1
PREFILL_STEP = 512
MICRO = 1_000_000
STEP_TIMEOUT_S = 60.0  # one forward pass or one wait for rank 0's next command, at most


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

    def _guard(self, what: str) -> Any:
        if self.watchdog is None or self.size == 1:
            return contextlib.nullcontext()
        return self.watchdog.armed(self.step_timeout_s, what)

    def _eval(self, *arrays: Any) -> None:
        with self._guard("a forward pass"):
            mx.eval(*arrays)

    # ---- broadcast ---------------------------------------------------------------------
    def _bcast(self, values: Sequence[int] | None, n: int) -> list[int]:
        if self.size == 1:
            assert values is not None
            return list(values)
        if self.rank == 0:
            assert values is not None and len(values) == n
            buf = mx.array(list(values), dtype=mx.int32)
        else:
            buf = mx.zeros((n,), dtype=mx.int32)
        with self._guard("a broadcast from rank 0"):
            return _ints(mx.distributed.all_sum(buf, group=self.group))

    def _header(self, *fields: int) -> list[int]:
        values = [*fields, *([0] * (HEADER - len(fields)))] if self.rank == 0 else None
        return self._bcast(values, HEADER)

    # ---- model passes --------------------------------------------------------------------
    def _prefill(self, prompt: list[int], cache: list[Any]) -> mx.array:
        tokens = mx.array(prompt, dtype=mx.int32)
        while tokens.size > PREFILL_STEP:
            self.model(tokens[:PREFILL_STEP][None], cache=cache)
            self._eval([c.state for c in cache])
            tokens = tokens[PREFILL_STEP:]
        return self.model(tokens[None], cache=cache)[:, -1, :]

    def _run(
        self,
        prompt: list[int],
        max_tokens: int,
        temp: float,
        top_p: float,
        seed: int,
        state: dict[str, Any] | None = None,
    ) -> Iterator[int]:
        """The generation every rank runs; only rank 0's sampler decides. `state` records the
        cache and the last token yielded, for rank 0 to wind down in step if stopped early."""
        cache = make_prompt_cache(self.model)
        state = {} if state is None else state
        state["cache"] = cache
        sampler = make_sampler(temp=temp, top_p=top_p)
        if self.rank == 0 and temp > 0:
            mx.random.seed(seed)
        logits = self._prefill(prompt, cache)
        produced = 0
        while True:
            # Collectives run when evaluated: finish this pass's all-sums on every rank before
            # the token broadcast, or ranks would enter their collectives in different orders.
            self._eval(logits)
            choice = None
            if self.rank == 0:
                logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
                choice = _ints(sampler(logprobs).reshape(-1))
            (tok,) = self._bcast(choice, 1)
            if tok == STOP:
                return
            produced += 1
            last = tok in self.eos or produced >= max_tokens
            state["pending"] = None if last else tok
            yield tok
            if last:
                return
            logits = self.model(mx.array([[tok]], dtype=mx.int32), cache=cache)[:, -1, :]

    # ---- rank 0 ------------------------------------------------------------------------
    def generate(
        self,
        prompt: list[int],
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> Iterator[int]:
        """Rank 0: run a generation across the group, yielding tokens as they are decided."""
        self._header(
            GENERATE,
            len(prompt),
            max_tokens,
            round(temperature * MICRO),
            round(top_p * MICRO),
            seed,
        )
        self._bcast(prompt, len(prompt))
        state: dict[str, Any] = {}
        finished = False
        try:
            yield from self._run(prompt, max_tokens, temperature, top_p, seed, state)
            finished = True
        finally:
            if not finished and state.get("pending") is not None:
                # Stopped early: the followers will run the forward pass of the last token and
                # then wait for the next one, so run that pass too and send STOP.
                logits = self.model(
                    mx.array([[state["pending"]]], dtype=mx.int32), cache=state["cache"]
                )
                self._eval(logits)
                self._bcast([STOP], 1)

    def logits(self, prompt: list[int]) -> mx.array:
        """Rank 0: full logits of one prompt, computed across the group."""
        self._header(LOGITS, len(prompt))
        self._bcast(prompt, len(prompt))
        out = self.model(mx.array(prompt, dtype=mx.int32)[None])
        self._eval(out)
        return out

    def greedy_batch(self, prompts: list[list[int]], steps: int) -> list[list[int]]:
        """Rank 0: `steps` greedy tokens for equal-length prompts decoded together (no early
        stop), one forward pass per step for the whole batch: what parity checks need."""
        if len({len(p) for p in prompts}) != 1:
            raise ValueError("greedy_batch needs prompts of equal length")
        self._header(GREEDY_BATCH, len(prompts) * len(prompts[0]), steps, len(prompts))
        self._bcast([t for p in prompts for t in p], len(prompts) * len(prompts[0]))
        return self._greedy_batch(prompts, steps)

    def _greedy_batch(self, prompts: list[list[int]], steps: int) -> list[list[int]]:
        cache = make_prompt_cache(self.model)
        logits = self.model(mx.array(prompts, dtype=mx.int32), cache=cache)[:, -1, :]
        out: list[list[int]] = [[] for _ in prompts]
        for step in range(steps):
            self._eval(logits)  # this pass's all-sums before the broadcast, on every rank
            choice = _ints(mx.argmax(logits, axis=-1)) if self.rank == 0 else None
            toks = self._bcast(choice, len(prompts))
            for seq, t in zip(out, toks):
                seq.append(t)
            if step + 1 < steps:
                logits = self.model(mx.array(toks, dtype=mx.int32)[:, None], cache=cache)[:, -1, :]
        return out

    def shutdown(self) -> None:
        if self.size > 1:
            self._header(SHUTDOWN)

    def ping(self) -> None:
        """Rank 0: a round trip through the group; raises if a peer is gone."""
        if self.size > 1:
            self._header(PING)

    # ---- ranks > 0 -----------------------------------------------------------------------
    def follow(self) -> None:
        """Ranks > 0: serve rank 0's commands until it shuts the group down."""
        while True:
            cmd, n, max_tokens, temp, top_p, seed, *_ = self._header()
            if cmd == SHUTDOWN:
                return
            if cmd == PING:
                continue
            prompt = self._bcast(None, n)
            if cmd == GENERATE:
                for _ in self._run(prompt, max_tokens, temp / MICRO, top_p / MICRO, seed):
                    pass
            elif cmd == LOGITS:
                self._eval(self.model(mx.array(prompt, dtype=mx.int32)[None]))
            elif cmd == GREEDY_BATCH:
                batch = temp  # the header's fourth field carries the batch size here
                width = n // batch
                self._greedy_batch(
                    [prompt[i * width : (i + 1) * width] for i in range(batch)], max_tokens
                )
            else:
                raise RuntimeError(f"unknown lockstep command {cmd}")
