"""Anthropic-style `/v1/messages`, streaming events included, since coding agents speak it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from executor.api.answer import Ending, FinishReason, answer, collect, first, fit
from executor.api.anthropic_schemas import (
    AnthropicMessage,
    MessagesBody,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from executor.api.deps import EngineDep, ServingDep, Watch
from executor.api.errors import APIError
from executor.api.openai_routes import check_model
from executor.api.textstream import Delta, TextStream
from executor.engine_api import Engine, Generation, Sampling

router = APIRouter(tags=["anthropic"])

_STOP_REASON = {
    FinishReason.STOP: "end_turn",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
}


def _template_messages(body: MessagesBody) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if (system := body.system_text()) is not None:
        out.append({"role": "system", "content": system})
    for m in body.messages:
        out.extend(_one(m))
    return out


def _one(m: AnthropicMessage) -> list[dict[str, Any]]:
    if isinstance(m.content, str):
        return [{"role": m.role, "content": m.content}]
    text = "".join(b.text for b in m.content if isinstance(b, TextBlock))
    results = [
        {"role": "tool", "tool_call_id": b.tool_use_id, "content": b.text()}
        for b in m.content
        if isinstance(b, ToolResultBlock)
    ]
    calls = [
        {"id": b.id, "type": "function", "function": {"name": b.name, "arguments": b.input}}
        for b in m.content
        if isinstance(b, ToolUseBlock)
    ]
    main: dict[str, Any] = {"role": m.role, "content": text}
    if calls:
        main["tool_calls"] = calls
    return results + ([main] if text or calls or not results else [])


def _tools(body: MessagesBody, engine: Engine) -> list[dict[str, Any]] | None:
    choice = body.tool_choice.type if body.tool_choice else "auto"
    if choice in ("any", "tool"):
        raise APIError(
            422, f"tool_choice {choice} cannot be enforced by this server; use auto", "tool_choice"
        )
    if not body.tools or choice == "none":
        return None
    if engine.tool_format is None:
        raise APIError(422, "this model's chat template has no tool calling", param="tools")
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.input_schema,
            },
        }
        for t in body.tools
    ]


class _Message:
    """One answer's blocks, as Anthropic's message object and its stream events."""

    def __init__(self, model: str, prompt_tokens: int) -> None:
        self.id = f"msg_{uuid.uuid4().hex[:24]}"
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.blocks: list[dict[str, Any]] = []
        self.open_text = False

    def head(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0},
        }

    def add(self, d: Delta) -> list[tuple[str, dict[str, Any]]]:
        """The stream events for one delta (and the block it goes to)."""
        events: list[tuple[str, dict[str, Any]]] = []
        if d.tool_call is not None:
            events += self.close_text()
            i, call = len(self.blocks), d.tool_call
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input()}
            self.blocks.append(block)
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": call.arguments}
            events += [
                ("content_block_start", {"index": i, "content_block": start}),
                ("content_block_delta", {"index": i, "delta": delta}),
                ("content_block_stop", {"index": i}),
            ]
            return events
        if not self.open_text:
            self.blocks.append({"type": "text", "text": ""})
            self.open_text = True
            start = {"type": "text", "text": ""}
            events.append(
                ("content_block_start", {"index": len(self.blocks) - 1, "content_block": start})
            )
        self.blocks[-1]["text"] += d.text
        delta = {"type": "text_delta", "text": d.text}
        events.append(("content_block_delta", {"index": len(self.blocks) - 1, "delta": delta}))
        return events

    def close_text(self) -> list[tuple[str, dict[str, Any]]]:
        if not self.open_text:
            return []
        self.open_text = False
        return [("content_block_stop", {"index": len(self.blocks) - 1})]

    def ending(self, end: Ending, stop_hit: str | None) -> dict[str, Any]:
        reason = "stop_sequence" if stop_hit else _STOP_REASON[end.reason]
        return {"stop_reason": reason, "stop_sequence": stop_hit}

    def usage(self, end: Ending) -> dict[str, Any]:
        return {
            "input_tokens": end.done.prompt_tokens,
            "output_tokens": end.done.completion_tokens,
            "cache_read_input_tokens": end.done.cached_tokens,
        }


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data}, ensure_ascii=False)}\n\n"


@router.post("/v1/messages")
async def messages(
    body: MessagesBody,
    request: Request,
    engine: EngineDep,
    serving: ServingDep,
) -> Any:
    check_model(engine, body.model)
    tools = _tools(body, engine)
    try:
        # Templates and tokenizers take a while on long prompts: off the event loop.
        prompt = await run_in_threadpool(engine.chat_tokens, _template_messages(body), tools)
    except ValueError as e:
        raise APIError(400, str(e), param="messages") from None
    s = Sampling(fit(engine, prompt, body.max_tokens, "max_tokens"), body.temperature, body.top_p)
    text = TextStream(
        engine.detokenizer(),
        body.stop_sequences or [],
        engine.tool_format if tools else None,
        tools,
    )
    msg = _Message(engine.model_id, len(prompt))
    watch = Watch(request)
    events = answer(serving, Generation(prompt, s), text, watch.gone)
    if not body.stream:
        deltas, end = await collect(events)
        for d in deltas:
            msg.add(d)
        whole = {**msg.head(), "content": msg.blocks, **msg.ending(end, text.stop_hit)}
        return JSONResponse({**whole, "usage": msg.usage(end)})
    head = await first(events)
    watch.streaming()

    async def stream() -> AsyncIterator[str]:
        yield _event("message_start", {"message": msg.head()})
        item: Delta | Ending = head
        async with aclosing(events):
            while isinstance(item, Delta):
                for name, data in msg.add(item):
                    yield _event(name, data)
                try:
                    item = await anext(events)
                except APIError as e:
                    yield _event("error", {"error": {"type": e.type.value, "message": e.message}})
                    return
        for name, data in msg.close_text():
            yield _event(name, data)
        usage = {"output_tokens": item.done.completion_tokens}
        yield _event("message_delta", {"delta": msg.ending(item, text.stop_hit), "usage": usage})
        yield _event("message_stop", {})

    return StreamingResponse(stream(), media_type="text/event-stream")
