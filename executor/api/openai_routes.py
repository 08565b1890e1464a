"""OpenAI `/v1/chat/completions` and `/v1/completions`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from executor.api.answer import Ending, answer, collect, first, fit
from executor.api.deps import EngineDep, ServingDep, Watch
from executor.api.errors import APIError
from executor.api.openai_format import Formatter, Kind, sse
from executor.api.schemas import ChatBody, CompletionBody, Message, Role, Sampled
from executor.api.serving import Serving
from executor.api.textstream import Delta, TextStream
from executor.engine_api import Engine, Generation, Sampling

router = APIRouter(tags=["openai"])


def check_model(engine: Engine, model: str | None) -> None:
    if model not in (None, "", engine.model_id):
        raise APIError(
            404, f"model {model!r} is not served here; try {engine.model_id!r}", param="model"
        )


def sampling(body: Sampled, max_tokens: int, top_logprobs: int | None) -> Sampling:
    return Sampling(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        top_logprobs=top_logprobs,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
    )


def template_message(m: Message, index: int) -> dict[str, Any]:
    """What chat templates expect: a string `content`, `system` for OpenAI's `developer`,
    tool-call arguments as objects."""
    out: dict[str, Any] = {
        "role": Role.SYSTEM.value if m.role == Role.DEVELOPER else m.role.value,
        "content": m.text(),
    }
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        calls = []
        for call in m.tool_calls:
            try:
                args = json.loads(call.function.arguments or "{}")
            except json.JSONDecodeError:
                raise APIError(
                    422,
                    "tool call arguments are not JSON",
                    param=f"messages.{index}.tool_calls.function.arguments",
                ) from None
            calls.append(
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": args},
                }
            )
        out["tool_calls"] = calls
    return out


def chat_prompt(engine: Engine, body: ChatBody) -> tuple[list[int], list[dict[str, Any]] | None]:
    if body.tool_choice not in (None, "none", "auto"):
        raise APIError(
            422,
            "tool_choice 'required' or a named tool cannot be enforced by this server; use 'auto'",
            param="tool_choice",
        )
    tools = (
        [t.model_dump() for t in body.tools] if body.tools and body.tool_choice != "none" else None
    )
    if tools and engine.tool_format is None:
        raise APIError(422, "this model's chat template has no tool calling", param="tools")
    messages = [template_message(m, i) for i, m in enumerate(body.messages)]
    try:
        return engine.chat_tokens(messages, tools), tools
    except ValueError as e:
        raise APIError(400, str(e), param="messages") from None


async def respond(
    request: Request,
    serving: Serving,
    fmt: Formatter,
    gen: Generation,
    text: TextStream,
    body: Sampled,
) -> Any:
    watch = Watch(request)
    events = answer(serving, gen, text, watch.gone)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if not body.stream:
        return JSONResponse(fmt.whole(*await collect(events)))
    head = await first(events)
    watch.streaming()

    async def chunks() -> AsyncIterator[str]:
        if fmt.kind == Kind.CHAT:
            yield sse(fmt.chunk(None, role=True))
        item: Delta | Ending = head
        async with aclosing(events):
            while True:
                if isinstance(item, Ending):
                    yield sse(fmt.chunk(None, item))
                    if include_usage:
                        yield sse(fmt.usage_chunk(item.done))
                    break
                yield sse(fmt.chunk(item))
                try:
                    item = await anext(events)
                except APIError as e:
                    yield sse({"error": {"message": e.message, "type": e.type.value}})
                    break
        yield "data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


@router.post("/v1/chat/completions")
async def chat(
    body: ChatBody,
    request: Request,
    engine: EngineDep,
    serving: ServingDep,
) -> Any:
    check_model(engine, body.model)
    # Templates and tokenizers take a while on long prompts: off the event loop.
    prompt, tools = await run_in_threadpool(chat_prompt, engine, body)
    field = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    top = (body.top_logprobs or 0) if body.logprobs else None
    gen = Generation(prompt, sampling(body, fit(engine, prompt, body.limit(), field), top))
    text = TextStream(
        engine.detokenizer(), body.stops(), engine.tool_format if tools else None, tools
    )
    fmt = Formatter(Kind.CHAT, engine.model_id, engine.decode, body.logprobs)
    return await respond(request, serving, fmt, gen, text, body)


@router.post("/v1/completions")
async def completions(
    body: CompletionBody,
    request: Request,
    engine: EngineDep,
    serving: ServingDep,
) -> Any:
    check_model(engine, body.model)
    prompt = await run_in_threadpool(engine.encode, body.prompt)
    gen = Generation(
        prompt, sampling(body, fit(engine, prompt, body.max_tokens, "max_tokens"), body.logprobs)
    )
    text = TextStream(engine.detokenizer(), body.stops(), None)
    fmt = Formatter(Kind.TEXT, engine.model_id, engine.decode, body.logprobs is not None)
    return await respond(request, serving, fmt, gen, text, body)
