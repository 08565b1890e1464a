"""Error answers: every 4xx names what to fix; 422 lists each field at fault."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.plans import Busy


def validation_detail(errors: Any) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        loc = [p if isinstance(p, int | str) else str(p) for p in e.get("loc", ())]
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"loc": loc, "msg": msg, "type": str(e.get("type", "value_error"))})
    return out


def invalid(loc: list[str | int], msg: str) -> RequestValidationError:
    """A 422 naming the field at `loc`, for checks beyond the schema."""
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": "value_error"}])


def error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method the published schema gives this path (Starlette's 405 names only the
    first route that matched it)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


async def _unprocessable(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_detail(exc.errors())}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.__cause__ is not None:
        # FastAPI's "error parsing the body" (bytes that are not JSON text): one 422 for
        # every kind of bad input.
        cause = type(exc.__cause__).__name__
        detail = [{"loc": ["body"], "msg": f"not JSON text ({cause})", "type": "json_invalid"}]
        return JSONResponse({"detail": detail}, status_code=422)
    if exc.status_code == 405:
        allow = ", ".join(allowed_methods(request))
        return error(
            405, f"{request.method} is not allowed here; allowed: {allow}", {"Allow": allow}
        )
    return await http_exception_handler(request, exc)


async def _busy(_: Request, exc: Exception) -> JSONResponse:
    return error(429, str(exc), {"Retry-After": "1"})


def add_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _unprocessable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Busy, _busy)
