"""The topology page: `GET /` serves `service/static/index.html`; its script and style are under
`/static/`, and the example configs its presets load under `/examples/configs/`.

All of it is static (no build step, nothing fetched from elsewhere) and open like `/plan`; the
page reads deployments with the token the user types in it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
CONFIGS = Path(__file__).resolve().parent.parent / "planner" / "examples" / "configs"
# The page loads only its own files and talks only to this service.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def add_page(app: FastAPI) -> None:
    """Add `GET /` and the static mounts to `app` (none of them in the OpenAPI document)."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/examples/configs", StaticFiles(directory=CONFIGS), name="example-configs")
