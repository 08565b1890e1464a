"""Limits applied before a request reaches a route: the body size and the bearer token."""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from executor.api.errors import ANTHROPIC_PREFIX, APIError, error_body

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
OPEN_PATHS = ("/healthz",)
"""Served without the token: the agent and the local cluster watch them."""


class TokenRequired(ValueError):
    """Rank 0 would listen beyond loopback without `--api-token`."""


def check_exposure(host: str, token: str | None) -> None:
    if token:
        return
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise TokenRequired(
            f"rank 0 would serve on {host}, beyond loopback: give it --api-token "
            "(clients then send 'Authorization: Bearer TOKEN')"
        )


async def _send_error(scope: Scope, send: Send, err: APIError) -> None:
    body = json.dumps(error_body(err, scope["path"].startswith(ANTHROPIC_PREFIX))).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    """Raised while FastAPI reads the body: as an HTTPException it passes through FastAPI's
    body parsing (which turns other exceptions into a 400) and becomes a 413."""


class Bounds:
    """ASGI middleware: 413 beyond `max_body_bytes` (declared or streamed), 401 without the
    bearer token (`Authorization: Bearer T`, or Anthropic clients' `x-api-key: T`)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, token: str | None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.token = token

    def _authorized(self, scope: Scope) -> bool:
        if not self.token or scope["path"] in OPEN_PATHS:
            return True
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        given = auth[7:] if auth[:7].lower() == "bearer " else headers.get(b"x-api-key", b"")
        given = given.decode("latin-1") if isinstance(given, bytes) else given
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _too_large(self) -> APIError:
        return APIError(413, f"request body over {self.max_body_bytes} bytes", code="too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            err = APIError(401, "missing or wrong API token (Authorization: Bearer TOKEN)")
            await _send_error(scope, send, err)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _send_error(scope, send, self._too_large())
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise _TooLarge(413, self._too_large().message)
            return message

        started = False

        async def tracking(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded, tracking)
        except _TooLarge:
            if not started:
                await _send_error(scope, send, self._too_large())
