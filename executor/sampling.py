"""Rank 0's token choice for one sequence of the batch: penalties, sampling, logprobs.

mlx-lm's `make_logits_processors` (penalties), `greedy_sampler` and `apply_top_p` do the work.
Its `make_sampler` draws from MLX's global random state, which the whole batch would share (and
which cannot be swapped per sequence); each sequence draws with its own key instead, split at
every token, so a seeded sequence gives the same tokens whatever else is in the batch, and one
without a seed starts from fresh randomness.

Everything here is lazy: rank 0 builds the batch's choice into the step's graph and reads the
tokens only once the next step is computing (`executor.scheduler`). Plain greedy rows (no
penalties, no logprobs) share one batched argmax.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import cast

import mlx.core as mx
from mlx_lm.sample_utils import apply_top_p, greedy_sampler, make_logits_processors

from executor.engine_api import Sampling, TokenEvent


@dataclass
class Pick:
    """A token chosen (lazily) and what its logprobs report needs."""

    token: mx.array
    logprobs: mx.array | None


class SequenceSampler:
    def __init__(self, sampling: Sampling) -> None:
        self.sampling = sampling
        # Penalties look at the whole completion so far, as OpenAI's do.
        window = max(sampling.max_tokens, 1)
        self.processors = make_logits_processors(
            repetition_penalty=None
            if sampling.repetition_penalty == 1.0
            else sampling.repetition_penalty,
            repetition_context_size=window,
            presence_penalty=sampling.presence_penalty or None,
            presence_context_size=window,
            frequency_penalty=sampling.frequency_penalty or None,
            frequency_context_size=window,
        )
        self.key: mx.array | None = None
        if sampling.temperature > 0:
            seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
            self.key = mx.random.key(seed)
        self.history: mx.array | None = None
        """The completion so far, lazily (its last token may still be computing)."""

    @property
    def plain(self) -> bool:
        """Greedy with no penalties and no logprobs: the batch's shared argmax serves it."""
        return self.key is None and not self.processors and self.sampling.top_logprobs is None

    def pick(self, logits: mx.array, fed: mx.array | None) -> Pick:
        """`logits`: this sequence's row, shape (1, vocab); `fed`: the completion token this
        step feeds (shape (1,), lazy), None on the sequence's first step."""
        if self.processors and fed is not None:
            self.history = fed if self.history is None else mx.concatenate([self.history, fed])
        if self.processors and self.history is not None:
            for process in self.processors:
                logits = process(self.history, logits)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        token = greedy_sampler(logprobs) if self.key is None else self._draw(logprobs)
        wanted = self.sampling.top_logprobs is not None
        return Pick(token.reshape(-1), logprobs[0] if wanted else None)

    def _draw(self, logprobs: mx.array) -> mx.array:
        assert self.key is not None
        self.key, key = mx.random.split(self.key)
        if 0 < self.sampling.top_p < 1:
            logprobs = apply_top_p(logprobs, self.sampling.top_p)
        return mx.random.categorical(logprobs * (1 / self.sampling.temperature), key=key)

    def event(self, token: int, logprobs: mx.array | None) -> TokenEvent:
        """The token as the API sees it (logprobs evaluated by now)."""
        if logprobs is None:
            return TokenEvent(token)
        k = self.sampling.top_logprobs or 0
        top: list[tuple[int, float]] = []
        if k > 0:
            order = mx.argsort(-logprobs)[:k]
            values = logprobs[order]
            top = list(zip(cast(list[int], order.tolist()), cast(list[float], values.tolist())))
        return TokenEvent(token, cast(float, logprobs[token].item()), top)


def choose(
    samplers: list[SequenceSampler], logits: mx.array, fed: list[mx.array | None]
) -> tuple[mx.array, list[Pick]]:
    """The batch's tokens (lazy, one per row of `logits`), each by its sequence's sampler;
    `fed[i]`: the completion token row i feeds this step (None on its first step)."""
    lse = mx.logsumexp(logits, axis=-1, keepdims=True)
    greedy = mx.argmax(logits - lse, axis=-1).astype(mx.int32)
    if all(s.plain for s in samplers):
        return greedy, [Pick(greedy[i : i + 1], None) for i in range(len(samplers))]
    picks = [
        Pick(greedy[i : i + 1], None) if s.plain else s.pick(logits[i : i + 1], fed[i])
        for i, s in enumerate(samplers)
    ]
    return mx.concatenate([p.token.astype(mx.int32) for p in picks]), picks
