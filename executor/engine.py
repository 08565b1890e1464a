"""Rank 0's `Engine` (`executor/engine_api.py`): the model's tokenizer plus the lockstep group
driven by the continuous-batching `Scheduler`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from executor.engine_api import Detokenizer, Generation, ToolFormat
from executor.lockstep import PREFILL_STEP
from executor.scheduler import DEFAULT_MAX_QUEUE, Scheduler, SequenceHandle


class MlxEngine:
    def __init__(
        self,
        lockstep: Any,
        tokenizer: Any,
        model_id: str,
        context_tokens: int,
        batch_size: int = 1,
        max_queue: int = DEFAULT_MAX_QUEUE,
        prefix_cache: bool = True,
        on_fatal: Any = None,
        prefill_step: int = PREFILL_STEP,
    ) -> None:
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.context_tokens = context_tokens
        self.tool_format = (
            ToolFormat(tokenizer.tool_call_start, tokenizer.tool_call_end, tokenizer.tool_parser)
            if getattr(tokenizer, "has_tool_calling", False)
            else None
        )
        # Rank 0 alone decides where a sequence ends: the tokenizer's end-of-turn tokens too.
        lockstep.eos |= set(getattr(tokenizer, "eos_token_ids", None) or ())
        self.scheduler = Scheduler(
            lockstep, context_tokens, batch_size, max_queue, prefix_cache, on_fatal, prefill_step
        )

    def encode(self, text: str) -> list[int]:
        out: list[int] = self.tokenizer.encode(text)
        return out

    def decode(self, tokens: Sequence[int]) -> str:
        out: str = self.tokenizer.decode(list(tokens))
        return out

    def detokenizer(self) -> Detokenizer:
        return LeadingSpace(self.tokenizer.detokenizer, self.decode)

    def chat_tokens(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model has no chat template; use /v1/completions")
        extra = {"tools": tools} if tools else {}
        out: list[int] = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, **extra
        )
        return out

    def submit(self, generation: Generation) -> SequenceHandle:
        return self.scheduler.submit(generation)

    def ping(self) -> None:
        self.scheduler.ping()

    # ---- beyond the contract: for /healthz, /metrics and the process's own life ------------
    @property
    def broken(self) -> str | None:
        """Why the group cannot serve (rank 0's /healthz is then not ok), or None."""
        return self.scheduler.broken

    @property
    def in_flight(self) -> int:
        return self.scheduler.in_flight

    def stats(self) -> dict[str, int]:
        """Prefix-cache counters (hits, misses, cached_tokens, entries, tokens, bytes) and the
        batch's state, for /metrics."""
        s = self.scheduler
        return {
            **{f"prefix_cache_{k}": v for k, v in asdict(s.index.stats).items()},
            "running": len(s.running),
            "waiting": len(s.waiting),
            "steps": s.steps,
        }

    def abort(self, reason: str) -> None:
        self.scheduler.abort(reason)

    def close(self) -> None:
        self.scheduler.close()


class LeadingSpace:
    """mlx-lm's streaming detokenizer (a fresh one per completion), with the completion's first
    space kept where the tokenizer's own `decode` keeps it: mlx-lm drops it, as a chat answer
    wants, but a completion continues its prompt and that space is part of its text."""

    def __init__(self, inner: Any, decode: Callable[[Sequence[int]], str]) -> None:
        self.inner = inner
        self.decode = decode
        self.lead = ""

    def add_token(self, token: int) -> None:
        if not self.inner.tokens:
            self.lead = " " if self.decode([token]).startswith(" ") else ""
        self.inner.add_token(token)

    def finalize(self) -> None:
        self.inner.finalize()

    @property
    def text(self) -> str:
        text: str = self.inner.text
        return self.lead + text if text and not text.startswith(self.lead) else text
