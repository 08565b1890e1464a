"""Rank 0's token choice for one sequence of the batch: penalties, sampling, logprobs.

mlx-lm's `make_logits_processors` (penalties), `greedy_sampler` and `apply_top_p` do the work.
Its `make_sampler` draws from MLX's global random state, which the whole batch would share (and
which cannot be swapped per sequence); each sequence draws with its own key instead, split at
every token, so a seeded sequence gives the same tokens whatever else is in the batch, and one
without a seed starts from fresh randomness.
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
        self.completion: list[int] = []

    def pick(self, logits: mx.array) -> Pick:
        """`logits`: this sequence's row, shape (1, vocab)."""
        if self.processors and self.completion:
            history = mx.array(self.completion, dtype=mx.int32)
            for process in self.processors:
                logits = process(history, logits)
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
        self.completion.append(token)
        if logprobs is None:
            return TokenEvent(token)
        k = self.sampling.top_logprobs or 0
        top: list[tuple[int, float]] = []
        if k > 0:
            order = mx.argsort(-logprobs)[:k]
            values = logprobs[order]
            top = list(zip(cast(list[int], order.tolist()), cast(list[float], values.tolist())))
        return TokenEvent(token, cast(float, logprobs[token].item()), top)


def choose(samplers: list[SequenceSampler], logits: mx.array) -> tuple[list[int], list[Pick]]:
    """The batch's tokens, one per row of `logits`, each by its sequence's sampler."""
    picks = [s.pick(logits[i : i + 1]) for i, s in enumerate(samplers)]
    tokens = mx.concatenate([p.token for p in picks])
    mx.eval(tokens, *[p.logprobs for p in picks if p.logprobs is not None])
    return cast(list[int], tokens.tolist()), picks
