"""Errors in the shape clients parse: OpenAI's `{"error": {message, type, param, code}}`, or
Anthropic's `{"type": "error", "error": {type, message}}` under `/v1/messages`. Never
FastAPI's default shape, never the request's own (possibly huge) input echoed back."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

ANTHROPIC_PREFIX = "/v1/messages"
MAX_ERRORS_SHOWN = 3
MAX_MESSAGE_CHARS = 200

log = logging.getLogger("asymtp.api")


class ErrorType(StrEnum):
    INVALID_REQUEST = "invalid_request_error"
    AUTHENTICATION = "authentication_error"
    NOT_FOUND = "not_found_error"
    TOO_LARGE = "request_too_large"
    RATE_LIMIT = "rate_limit_error"
    OVERLOADED = "overloaded_error"
    SERVER = "server_error"


_BY_STATUS = {
    401: ErrorType.AUTHENTICATION,
    404: ErrorType.NOT_FOUND,
    413: ErrorType.TOO_LARGE,
    429: ErrorType.RATE_LIMIT,
    503: ErrorType.OVERLOADED,
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    @property
    def type(self) -> ErrorType:
        if self.status >= 500 and self.status != 503:
            return ErrorType.SERVER
        return _BY_STATUS.get(self.status, ErrorType.INVALID_REQUEST)


def error_body(err: APIError, anthropic: bool) -> dict[str, Any]:
    if anthropic:
        return {"type": "error", "error": {"type": err.type.value, "message": err.message}}
    return {
        "error": {
            "message": err.message,
            "type": err.type.value,
            "param": err.param,
            "code": err.code,
        }
    }


def respond(request: Request, err: APIError) -> JSONResponse:
    anthropic = request.url.path.startswith(ANTHROPIC_PREFIX)
    return JSONResponse(error_body(err, anthropic), err.status, headers=err.headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def validation_error(exc: RequestValidationError) -> APIError:
    """A short message naming the fields; the offending values are never repeated."""
    errors = exc.errors()
    shown = [f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors]
    text = "; ".join(shown[:MAX_ERRORS_SHOWN])
    if len(shown) > MAX_ERRORS_SHOWN:
        text += f" (and {len(shown) - MAX_ERRORS_SHOWN} more)"
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + "…"
    param = _field(errors[0].get("loc", ())) if errors else None
    return APIError(422, f"invalid request: {text}", param=param, code="invalid_value")


def install(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return respond(request, exc)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return respond(request, validation_error(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return respond(request, APIError(exc.status_code, detail, headers=dict(exc.headers or {})))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return respond(request, APIError(500, f"internal error ({type(exc).__name__})"))

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
