"""Rank 0's HTTP API: `create_app(engine, status, on_fatal)` → (FastAPI app, `Serving`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from executor.api import anthropic_routes, errors, openai_routes
from executor.api.bounds import DEFAULT_MAX_BODY_BYTES, Bounds
from executor.api.deps import EngineDep, ServingDep
from executor.api.serving import PING_INTERVAL_S, Serving
from executor.engine_api import Engine


def create_app(
    engine: Engine,
    status: dict[str, Any] | None = None,
    on_fatal: Callable[[str], None] | None = None,
    *,
    api_token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ping_interval_s: float | None = PING_INTERVAL_S,
) -> tuple[FastAPI, Serving]:
    app = FastAPI(title="asymtp rank 0", version="1")
    serving = Serving(engine, on_fatal, ping_interval_s)
    app.state.engine = engine
    app.state.serving = serving
    errors.install(app)
    app.add_middleware(Bounds, max_body_bytes=max_body_bytes, token=api_token)
    app.include_router(openai_routes.router)
    app.include_router(anthropic_routes.router)

    @app.get("/v1/models", tags=["openai"])
    def models(engine: EngineDep) -> dict[str, Any]:
        card = {"id": engine.model_id, "object": "model", "created": 0, "owned_by": "asymtp"}
        return {"object": "list", "data": [card]}

    @app.get("/healthz")
    def healthz(serving: ServingDep) -> dict[str, Any]:
        return {
            "ok": not serving.draining and serving.broken is None,
            "in_flight": serving.in_flight,
            "served": serving.served,
            **(status or {}),
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(engine: EngineDep, serving: ServingDep) -> str:
        """Prometheus text: the engine's counters and what this server has served."""
        values = {**engine.stats(), "in_flight": serving.in_flight, "served": serving.served}
        return "".join(f"asymtp_rank0_{k} {v}\n" for k, v in sorted(values.items()))

    return app, serving
