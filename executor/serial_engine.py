"""An `Engine` that runs one sequence at a time over today's `Lockstep`: the 1-sequence
fallback until the batching engine lands, and the reference the batching one must equal.

Rank 0's loop speaks `Lockstep`'s wire protocol (header, prompt, one broadcast token per step,
STOP to end early), so the followers run `Lockstep.follow` unchanged; it adds what rank 0
alone decides: seeds, logprobs, penalties (mlx-lm's logits processors) and cancellation.
Every MLX call and every collective runs on one worker thread, pings included.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from executor.engine_api import (
    Done,
    EngineBusy,
    Finish,
    Generation,
    GroupBroken,
    Sampling,
    TokenEvent,
    ToolFormat,
)
from executor.lockstep import GENERATE, MICRO, STOP, Lockstep, _ints

QUEUE_LIMIT = 16
RETRY_AFTER_PER_QUEUED_S = 2.0


class SerialHandle:
    def __init__(self, generation: Generation) -> None:
        self.generation = generation
        self.events: queue.Queue[TokenEvent | Done | BaseException] = queue.Queue()
        self.cancelled = threading.Event()

    def __iter__(self) -> Iterator[TokenEvent | Done]:
        while True:
            ev = self.events.get()
            if isinstance(ev, BaseException):
                raise ev
            yield ev
            if isinstance(ev, Done):
                return

    def cancel(self) -> None:
        self.cancelled.set()


def _floats(a: mx.array) -> list[float]:
    return [float(v) for v in a.astype(mx.float32).tolist()]  # type: ignore[union-attr, arg-type]


def _top(logprobs: mx.array, k: int) -> list[tuple[int, float]]:
    if k <= 0:
        return []
    ids = mx.argsort(-logprobs)[:k]
    return list(zip(_ints(ids), _floats(logprobs[ids])))


class _Picker:
    """Rank 0's choice of each token for one generation."""

    def __init__(self, s: Sampling, prompt: list[int]) -> None:
        self.s = s
        self.sampler = make_sampler(temp=s.temperature, top_p=s.top_p)
        self.processors = make_logits_processors(
            repetition_penalty=s.repetition_penalty if s.repetition_penalty != 1.0 else None,
            presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
        )
        self.history = list(prompt)
        # One sequence at a time on one thread: MLX's global generator is this sequence's.
        mx.random.seed(s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little"))

    def pick(self, logits: mx.array) -> TokenEvent:
        for proc in self.processors:
            logits = proc(mx.array(self.history, dtype=mx.int32), logits)
        logprobs = (logits - mx.logsumexp(logits, axis=-1, keepdims=True)).reshape(-1)
        (tok,) = _ints(self.sampler(logprobs[None]).reshape(-1))
        self.history.append(tok)
        if self.s.top_logprobs is None:
            return TokenEvent(tok)
        (chosen,) = _floats(logprobs[tok : tok + 1])
        return TokenEvent(tok, chosen, _top(logprobs, self.s.top_logprobs))


class SerialEngine:
    def __init__(
        self,
        lockstep: Lockstep,
        tokenizer: Any,
        model_id: str,
        context_tokens: int,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self.lockstep = lockstep
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.context_tokens = context_tokens
        self.queue_limit = queue_limit
        self.tool_format = (
            ToolFormat(tokenizer.tool_call_start, tokenizer.tool_call_end, tokenizer.tool_parser)
            if getattr(tokenizer, "has_tool_calling", False)
            else None
        )
        self.broken: str | None = None
        self.waiting = 0
        self.lock = threading.Lock()
        self.jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self.worker = threading.Thread(target=self._work, name="serial-engine", daemon=True)
        self.worker.start()

    # ---- tokenizer -----------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, tokens: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(tokens)))

    def chat_tokens(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model has no chat template; use /v1/completions")
        try:
            out = self.tokenizer.apply_chat_template(
                messages, tools=tools, add_generation_prompt=True, tokenize=True
            )
        except Exception as e:  # a template's own raise_exception(), or a malformed message
            raise ValueError(f"the chat template refused these messages: {e}") from None
        return list(out)

    # ---- the worker ----------------------------------------------------------------------
    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            job()

    def _call(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the worker and wait for it; its exception is raised here."""
        done: queue.Queue[BaseException | None] = queue.Queue()

        def job() -> None:
            try:
                fn()
                done.put(None)
            except BaseException as e:
                done.put(e)

        self.jobs.put(job)
        if (err := done.get()) is not None:
            raise err

    def submit(self, generation: Generation) -> SerialHandle:
        if self.broken is not None:
            raise GroupBroken(self.broken)
        with self.lock:
            if self.waiting >= self.queue_limit:
                raise EngineBusy(RETRY_AFTER_PER_QUEUED_S * self.waiting)
            self.waiting += 1
        handle = SerialHandle(generation)
        self.jobs.put(lambda: self._run(handle))
        return handle

    def ping(self) -> None:
        if self.broken is not None:
            raise GroupBroken(self.broken)
        self._call(self.lockstep.ping)

    def shutdown(self) -> None:
        """Let the followers go, then stop the worker."""
        if self.broken is None:
            self._call(self.lockstep.shutdown)
        self.jobs.put(None)
        self.worker.join()

    def _run(self, handle: SerialHandle) -> None:
        try:
            if self.broken is not None:
                handle.events.put(GroupBroken(self.broken))
            elif handle.cancelled.is_set():
                n = len(handle.generation.prompt)
                handle.events.put(Done(Finish.CANCELLED, n, 0))
            else:
                handle.events.put(self._generate(handle))
        except Exception as e:  # a lost peer: this group cannot serve any more
            self.broken = str(e) or type(e).__name__
            handle.events.put(GroupBroken(self.broken))
        finally:
            with self.lock:
                self.waiting -= 1

    def _generate(self, handle: SerialHandle) -> Done:
        """Rank 0's side of `Lockstep._run`, step for step."""
        ls, g = self.lockstep, handle.generation
        s, prompt = g.sampling, g.prompt
        temp, top_p = round(s.temperature * MICRO), round(s.top_p * MICRO)
        ls._header(GENERATE, len(prompt), s.max_tokens, temp, top_p, 0)
        ls._bcast(prompt, len(prompt))
        cache = make_prompt_cache(ls.model)
        picker = _Picker(s, prompt)
        logits = ls._prefill(prompt, cache)
        produced = 0
        while True:
            ls._eval(logits)  # this pass's collectives before the token's, on every rank
            if handle.cancelled.is_set():
                ls._bcast([STOP], 1)
                return Done(Finish.CANCELLED, len(prompt), produced)
            event = picker.pick(logits)
            ls._bcast([event.token], 1)
            produced += 1
            if event.token in ls.eos:
                return Done(Finish.STOP, len(prompt), produced)
            handle.events.put(event)
            if produced >= s.max_tokens:
                return Done(Finish.LENGTH, len(prompt), produced)
            step = mx.array([[event.token]], dtype=mx.int32)
            logits = ls.model(step, cache=cache)[:, -1, :]
