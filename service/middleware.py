"""ASGI middlewares, outermost first: `RequestMetrics` (counts every answer), `Guard` (Host
check without a token, bearer token before any body is read), `BodyLimit` (size and read time).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from protocol.signing import is_loopback
from service.auth import header_problem
from service.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
PROTECTED_PREFIX = "/deployments"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


async def send_json(
    send: Send, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    """A JSON answer sent straight from a middleware; it closes the connection, since the
    request body may be left unread."""
    raw = json.dumps(body).encode()
    extra = {"content-type": "application/json", "connection": "close", **(headers or {})}
    pairs = [(k.encode(), v.encode()) for k, v in extra.items()]
    pairs.append((b"content-length", str(len(raw)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": pairs})
    await send({"type": "http.response.body", "body": raw})


class RequestMetrics:
    """Count and time every request by route template and method (bounded labels: unknown
    methods are `other`, unmatched paths `unmatched`)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.request(method, path, status, time.perf_counter() - started)


def _host_name(host_header: str) -> str:
    """The name of a `Host` header value, without its port (`[::1]:80` -> `::1`)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """Without a token (a loopback-only service) answer only requests whose `Host` is a
    loopback name: a web page on another name cannot reach it through DNS rebinding. With a
    token, check it for the deployment routes before the body is read."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.token is None:
            host = headers.get(b"host", b"").decode("latin-1")
            if host and not is_loopback(_host_name(host)):
                detail = f"Host {host!r} is not a loopback name; this token-less service answers only those"
                await send_json(send, 421, {"detail": detail})
                return
        elif scope["path"].startswith(PROTECTED_PREFIX):
            given = headers.get(b"authorization")
            problem = header_problem(given.decode("latin-1") if given else None, self.token)
            if problem is not None:
                await send_json(send, 401, {"detail": problem}, {"www-authenticate": "Bearer"})
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse a body over `limit` bytes (413) before anything parses it, declared or chunked,
    and one that does not arrive within `timeout_s` (408)."""

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await send_json(send, 400, {"detail": "Content-Length is not a number"})
                return
            if int(declared) > self.limit:
                await self._too_large(send)
                return
            if int(declared) == 0:
                await self.app(scope, receive, send)
                return
        elif b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        body: bytes | None = None
        with anyio.move_on_after(self.timeout_s):
            body = await self._read(receive, send)
            if body is None:
                return  # answered (413) or the client left
        if body is None:
            detail = f"request body not received within {self.timeout_s:g} s"
            await send_json(send, 408, {"detail": detail})
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive, send: Send) -> bytes | None:
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                await self._too_large(send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        await send_json(send, 413, {"detail": f"request body larger than {self.limit} bytes"})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body read already, then the client's later messages
    (its disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
