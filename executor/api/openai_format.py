"""OpenAI response objects: whole answers, stream chunks, usage and logprobs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from executor.api.answer import Ending
from executor.api.textstream import Delta, ToolCall
from executor.engine_api import Done, TokenEvent

Decode = Callable[[Sequence[int]], str]


class Kind(StrEnum):
    CHAT = "chat.completion"
    TEXT = "text_completion"


def usage(done: Done) -> dict[str, Any]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _token(decode: Decode, tok: int, logprob: float) -> dict[str, Any]:
    text = decode([tok])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def _tool_json(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
    if index is not None:
        out["index"] = index
    return out


@dataclass
class Formatter:
    """One response's objects; `logprobs` is whether the request asked for them."""

    kind: Kind
    model: str
    decode: Decode
    logprobs: bool
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    tools_sent: int = 0

    def __post_init__(self) -> None:
        prefix = "chatcmpl" if self.kind == Kind.CHAT else "cmpl"
        self.id = f"{prefix}-{uuid.uuid4().hex}"

    def _envelope(self, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
        obj = f"{self.kind.value}.chunk" if chunk and self.kind == Kind.CHAT else self.kind.value
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }

    def token_logprobs(self, tokens: list[TokenEvent]) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        rows = [t for t in tokens if t.logprob is not None]
        if self.kind == Kind.CHAT:
            content = []
            for t in rows:
                entry = _token(self.decode, t.token, t.logprob or 0.0)
                entry["top_logprobs"] = [_token(self.decode, i, lp) for i, lp in t.top_logprobs]
                content.append(entry)
            return {"content": content}
        return {
            "tokens": [self.decode([t.token]) for t in rows],
            "token_logprobs": [t.logprob for t in rows],
            "top_logprobs": [{self.decode([i]): lp for i, lp in t.top_logprobs} for t in rows],
        }

    def chunk(
        self, d: Delta | None, ending: Ending | None = None, role: bool = False
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": ending.reason.value if ending else None,
            "logprobs": self.token_logprobs(d.tokens) if d else None,
        }
        if self.kind == Kind.TEXT:
            choice["text"] = d.text if d else ""
            return self._envelope([choice], chunk=True)
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
        if d is not None and d.tool_call is not None:
            delta["tool_calls"] = [_tool_json(d.tool_call, self.tools_sent)]
            self.tools_sent += 1
        elif d is not None:
            delta["content"] = d.text
        choice["delta"] = delta
        return self._envelope([choice], chunk=True)

    def usage_chunk(self, done: Done) -> dict[str, Any]:
        return {**self._envelope([], chunk=True), "usage": usage(done)}

    def whole(self, deltas: list[Delta], ending: Ending) -> dict[str, Any]:
        text = "".join(d.text for d in deltas)
        tokens = [t for d in deltas for t in d.tokens]
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": ending.reason.value,
            "logprobs": self.token_logprobs(tokens),
        }
        if self.kind == Kind.TEXT:
            choice["text"] = text
        else:
            calls = [_tool_json(d.tool_call) for d in deltas if d.tool_call is not None]
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            choice["message"] = message
        return {**self._envelope([choice], chunk=False), "usage": usage(ending.done)}
