"""OpenAI-compatible HTTP API served by rank 0: /v1/models, /v1/completions, /v1/chat/completions.

The server knows nothing of MLX or of the other ranks: it drives an `Engine`, whose
`generate` runs one lockstep generation across the group. Generations run one at a time on a
worker thread (the group can only step through one sequence at a time); the event loop only
moves text. While draining (a new plan is coming) new requests get 503 and the one in flight
finishes.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

MAX_TOKENS_CAP = 4096
PING_INTERVAL_S = 2.0  # idle rank 0 checks its group this often, so a lost peer shows quickly


class Engine(Protocol):
    model_id: str

    def encode(self, text: str) -> list[int]: ...

    def chat_tokens(self, messages: list[dict[str, str]]) -> list[int]: ...

    def decode(self, tokens: Sequence[int]) -> str: ...

    def generate(
        self, prompt: list[int], max_tokens: int, temperature: float, top_p: float
    ) -> Iterator[int]:
        """Yields sampled tokens, stopping at an end-of-sequence token or `max_tokens`."""
        ...

    def ping(self) -> None:
        """A round trip through the group while idle; raises if the group is broken."""
        ...


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS_CAP)] = 128
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    stream: bool = False
    stop: str | list[str] | None = None

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop if s]


class CompletionBody(_Body):
    prompt: Annotated[str, Field(max_length=200_000)]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool"]
    content: Annotated[str, Field(max_length=200_000)]


class ChatBody(_Body):
    messages: Annotated[list[Message], Field(min_length=1, max_length=256)]


@dataclass
class _Result:
    text: str = ""
    tokens: int = 0
    finish: str = "length"
    chunks: list[str] = field(default_factory=list)


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Server:
    """Runs generations one at a time on one worker thread (MLX state stays on one thread)
    and streams their text. A failed generation means the group is broken: `on_fatal`."""

    def __init__(
        self,
        engine: Engine,
        on_fatal: Callable[[str], None] | None = None,
        ping_interval_s: float | None = PING_INTERVAL_S,
    ) -> None:
        self.engine = engine
        self.on_fatal = on_fatal
        self.ping_interval_s = ping_interval_s
        self.jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self.draining = False
        self.broken: str | None = None
        self.in_flight = 0
        self.served = 0
        self.streams: set[queue.Queue[tuple[str, Any]]] = set()
        self.worker = threading.Thread(target=self._work, name="generation", daemon=True)
        self.worker.start()

    def _work(self) -> None:
        while True:
            try:
                job = self.jobs.get(timeout=self.ping_interval_s)
            except queue.Empty:
                if self.broken is None:
                    self._ping()
                continue
            if job is None:
                return
            job()

    def _ping(self) -> None:
        try:
            self.engine.ping()
        except Exception as e:  # a peer is gone: the group cannot serve any more
            self._fatal(str(e))

    def abort(self, reason: str) -> None:
        """From any thread, when the group is lost while the worker is stuck in it: end every
        open response with an error instead of leaving its client hanging."""
        self.broken = reason
        for out in list(self.streams):
            out.put(("error", f"generation failed: {reason}"))

    def _fatal(self, reason: str) -> None:
        self.broken = reason
        if self.on_fatal:
            self.on_fatal(reason)

    def close(self) -> None:
        self.jobs.put(None)
        self.worker.join()

    def _run(self, prompt: list[int], body: _Body, out: queue.Queue[tuple[str, Any]]) -> None:
        """Worker thread: generate, push ("text", delta)... then ("done", finish) or ("error", msg)."""
        tokens: list[int] = []
        emitted = ""
        finish = "length"
        try:
            for tok in self.engine.generate(prompt, body.max_tokens, body.temperature, body.top_p):
                tokens.append(tok)
                text = self.engine.decode(tokens)
                if text.endswith("\ufffd"):
                    continue  # half of a multi-byte character: wait for the rest
                text, stopped = _cut_at_stop(text, body.stops())
                if len(text) > len(emitted):
                    out.put(("text", text[len(emitted) :]))
                    emitted = text
                if stopped:
                    finish = "stop"
                    break
            else:
                finish = "length" if len(tokens) >= body.max_tokens else "stop"
            final = self.engine.decode(tokens)
            final, _ = _cut_at_stop(final, body.stops())
            if len(final) > len(emitted) and not final.endswith("\ufffd"):
                out.put(("text", final[len(emitted) :]))
            out.put(("done", (finish, len(tokens))))
        except ValueError as e:  # the request itself (a prompt beyond the plan's context)
            out.put(("error", f"generation refused: {e}"))
        except Exception as e:  # the group failed; the client gets a clear 503
            out.put(("error", f"generation failed: {e}"))
            self._fatal(str(e))

    async def stream(self, prompt: list[int], body: _Body) -> AsyncIterator[tuple[str, Any]]:
        if self.broken is not None:
            raise HTTPException(503, f"the group is broken ({self.broken}); it will re-form")
        if self.draining:
            raise HTTPException(503, "this deployment is reloading a new plan; retry shortly")
        out: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.in_flight += 1
        self.streams.add(out)
        try:
            self.jobs.put(lambda: self._run(prompt, body, out))
            while True:
                kind, value = await asyncio.to_thread(out.get)
                yield kind, value
                if kind in ("done", "error"):
                    break
            self.served += 1
        finally:
            self.in_flight -= 1
            self.streams.discard(out)

    async def complete(self, prompt: list[int], body: _Body) -> _Result:
        result = _Result()
        async for kind, value in self.stream(prompt, body):
            if kind == "text":
                result.text += value
            elif kind == "done":
                result.finish, result.tokens = value
            else:
                raise HTTPException(503, value)
        return result


async def _chain(
    first: tuple[str, Any], rest: AsyncIterator[tuple[str, Any]]
) -> AsyncIterator[tuple[str, Any]]:
    yield first
    async for ev in rest:
        yield ev


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def create_app(
    engine: Engine,
    status: dict[str, Any] | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> tuple[FastAPI, Server]:
    app = FastAPI(title="asymtp rank 0", version="1")
    server = Server(engine, on_fatal)

    def check_model(body: _Body) -> None:
        if body.model not in (None, "", engine.model_id):
            raise HTTPException(
                404, f"model {body.model!r} is not served here; try {engine.model_id!r}"
            )

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": engine.model_id, "object": "model", "created": 0, "owned_by": "asymtp"}
            ],
        }

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        ok = not server.draining and server.broken is None
        return {"ok": ok, "in_flight": server.in_flight, **(status or {})}

    async def respond(prompt: list[int], body: _Body, kind: str) -> Any:
        created, rid = (
            int(time.time()),
            f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}",
        )
        obj = "chat.completion" if kind == "chat" else "text_completion"
        if not body.stream:
            r = await server.complete(prompt, body)
            usage = {
                "prompt_tokens": len(prompt),
                "completion_tokens": r.tokens,
                "total_tokens": len(prompt) + r.tokens,
            }
            choice: dict[str, Any] = {"index": 0, "finish_reason": r.finish, "logprobs": None}
            if kind == "chat":
                choice["message"] = {"role": "assistant", "content": r.text}
            else:
                choice["text"] = r.text
            return JSONResponse(
                {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": engine.model_id,
                    "choices": [choice],
                    "usage": usage,
                }
            )

        events = server.stream(prompt, body)
        first = await anext(events)  # fail before the 200 if the server is draining

        async def sse() -> AsyncIterator[str]:
            chunk_obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

            def chunk(delta: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
                c: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
                if kind == "chat":
                    d: dict[str, Any] = {"role": "assistant"} if role else {}
                    if delta is not None:
                        d["content"] = delta
                    c["delta"] = d
                else:
                    c["text"] = delta or ""
                return {
                    "id": rid,
                    "object": chunk_obj,
                    "created": created,
                    "model": engine.model_id,
                    "choices": [c],
                }

            if kind == "chat":
                yield _sse(chunk("", None, role=True))
            async for k, v in _chain(first, events):
                if k == "text":
                    yield _sse(chunk(v, None))
                    continue
                if k == "done":
                    yield _sse(chunk(None, v[0]))
                else:
                    yield _sse({"error": {"message": v, "type": "server_error"}})
                yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(body: CompletionBody) -> Any:
        check_model(body)
        prompt = engine.encode(body.prompt)
        if not prompt:
            raise HTTPException(422, "prompt encodes to no tokens")
        return await respond(prompt, body, "text")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody) -> Any:
        check_model(body)
        try:
            prompt = engine.chat_tokens([m.model_dump() for m in body.messages])
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        return await respond(prompt, body, "chat")

    return app, server
