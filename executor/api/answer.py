"""One generation as the APIs see it: a request's prompt fitted to the plan's context, then
text deltas and tool calls, then how it ended."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from enum import StrEnum

from executor.api.errors import APIError
from executor.api.serving import Serving
from executor.api.textstream import Delta, TextStream
from executor.engine_api import Done, Engine, Finish, Generation


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"


@dataclass(frozen=True)
class Ending:
    reason: FinishReason
    done: Done


def fit(engine: Engine, prompt: list[int], limit: int | None, field: str) -> int:
    """`max_tokens` for this prompt: the request's, if prompt + it fit the plan's context;
    by default, all the room left."""
    ctx, n = engine.context_tokens, len(prompt)
    if n == 0:
        raise APIError(400, "the prompt encodes to no tokens", param="prompt")
    if n >= ctx:
        raise APIError(
            400,
            f"the prompt is {n} tokens; this deployment's context holds {ctx} tokens "
            "(prompt and completion together)",
            code="context_length_exceeded",
        )
    if limit is not None and n + limit > ctx:
        raise APIError(
            400,
            f"prompt ({n} tokens) + {field} ({limit}) is over this deployment's context of "
            f"{ctx} tokens; ask for at most {ctx - n}",
            param=field,
            code="context_length_exceeded",
        )
    return limit if limit is not None else ctx - n


async def answer(
    serving: Serving,
    gen: Generation,
    text: TextStream,
    disconnected: Callable[[], Awaitable[bool]] | None,
) -> AsyncGenerator[Delta | Ending, None]:
    """Deltas as they are decided, then one `Ending`."""
    events = serving.run(gen, disconnected, should_stop=lambda: text.stopped)
    async with aclosing(events):
        async for ev in events:
            if not isinstance(ev, Done):
                for d in text.feed(ev):
                    yield d
                continue
            for d in text.finish():
                yield d
            yield Ending(_reason(ev, text), ev)


CLIENT_GONE = 499  # nginx's code: the client left before the answer was ready


async def collect(events: AsyncGenerator[Delta | Ending, None]) -> tuple[list[Delta], Ending]:
    """A whole answer (not streamed)."""
    deltas: list[Delta] = []
    async with aclosing(events):
        async for item in events:
            if isinstance(item, Ending):
                return deltas, item
            deltas.append(item)
    raise APIError(CLIENT_GONE, "the client closed the request")


async def first(events: AsyncGenerator[Delta | Ending, None]) -> Delta | Ending:
    """The first item of a streamed answer: a refused request fails here, before any 200."""
    try:
        return await anext(events)
    except BaseException:
        await events.aclose()
        raise


def _reason(done: Done, text: TextStream) -> FinishReason:
    if done.finish == Finish.LENGTH and not text.stopped:
        return FinishReason.LENGTH
    return FinishReason.TOOL_CALLS if text.made_tool_call else FinishReason.STOP
