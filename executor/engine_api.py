"""The contract between rank 0's HTTP API and the lockstep engine that generates.

The API (`executor/api/`) knows nothing of MLX or of the other ranks: it turns requests into
`Generation`s and reads `TokenEvent`s back. The engine (`executor/lockstep.py` and its
batching) decides every token on rank 0 and broadcasts it, so heterogeneous chips never
diverge; several generations may decode in one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Finish(StrEnum):
    STOP = "stop"
    """An end-of-sequence token (never part of the text) or a stop string."""
    LENGTH = "length"
    """`max_tokens`, or the plan's context, reached."""
    CANCELLED = "cancelled"
    """The client went away; its slot is freed at the next step on every rank."""


@dataclass(frozen=True)
class Sampling:
    """How rank 0 picks each token of one generation."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    """None: fresh randomness. The same seed and prompt give the same tokens."""
    top_logprobs: int | None = None
    """None: no logprobs. k ≥ 0: the chosen token's logprob and the k most likely."""
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class Generation:
    prompt: list[int]
    sampling: Sampling


@dataclass(frozen=True)
class TokenEvent:
    token: int
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Done:
    finish: Finish
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    """Prompt tokens served from the prefix cache instead of a prefill."""


@dataclass(frozen=True)
class ToolFormat:
    """How this model's chat template writes a tool call: the markers around one call and
    mlx-lm's parser for the model family (text between the markers → {"name", "arguments"})."""

    start: str
    end: str
    parse: Callable[[str, list[dict[str, Any]] | None], Any]


class Detokenizer(Protocol):
    """Text of a growing list of tokens, one token at a time (mlx-lm's
    `StreamingDetokenizer`): a completion costs time in its length, not its square."""

    @property
    def text(self) -> str:
        """The text so far (a character still incomplete held back)."""
        ...

    def add_token(self, token: int) -> None: ...

    def finalize(self) -> None:
        """No more tokens: `text` then holds everything."""
        ...


class Handle(Protocol):
    """One generation in flight. Iterating blocks until the next token (or the end)."""

    def __iter__(self) -> Iterator[TokenEvent | Done]: ...

    def cancel(self) -> None:
        """From any thread: stop at the next step; the iterator then yields a CANCELLED Done."""
        ...


class EngineBusy(RuntimeError):
    """The admission queue is full: the API answers 429 with Retry-After."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"busy; retry after {retry_after_s:.0f}s")
        self.retry_after_s = retry_after_s


class GroupBroken(RuntimeError):
    """The group failed (a peer lost): open generations end with this, the API answers 503."""


class Engine(Protocol):
    model_id: str
    context_tokens: int
    """Prompt + completion tokens one sequence may hold: what the plan reserved KV cache for."""
    tool_format: ToolFormat | None
    """None: the chat template has no tool calling."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, tokens: Sequence[int]) -> str: ...

    def detokenizer(self) -> Detokenizer:
        """A fresh streaming detokenizer for one completion."""
        ...

    def chat_tokens(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """The model's own chat template (with tools when given), generation prompt added."""
        ...

    def submit(self, generation: Generation) -> Handle:
        """Queue a generation; raises `EngineBusy` when the bounded queue is full and
        `GroupBroken` when the group cannot serve."""
        ...

    def ping(self) -> None:
        """A round trip through the group while idle; raises if the group is broken."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters for rank 0's `/metrics`: the prefix cache's hits, misses, cached tokens
        and bytes, and the batch's running and waiting sequences."""
        ...
