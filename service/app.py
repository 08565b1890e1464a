"""The FastAPI application: `create_app(settings)`; `app_from_env()` for uvicorn workers.

    POST   /plan                                      PlanRequest    -> Plan (200 feasible or not)
    GET    /deployments                               -> [DeploymentSummary]
    PUT    /deployments/{name}                        DeploymentSpec -> Deployment (409: infeasible)
    GET    /deployments/{name}                        -> Deployment            ETag "<plan_id>"
    DELETE /deployments/{name}                        -> 204
    GET    /deployments/{name}/assignments/{node_id}  -> Assignment (signed)   ETag "<plan_id>:<rev>"
           If-None-Match -> 304; ?wait=N long-polls until it changes (404 once deleted)
    POST   /deployments/{name}/status/{node_id}       AgentStatus    -> AgentRecord
    GET    /deployments/{name}/topology[?format=yaml] -> TopologyDraft from the agents' facts
    GET    /healthz, GET /metrics (Prometheus), GET /docs (OpenAPI)
    GET    /                                          -> the topology page (page.py: static files)

Routes live in `service.routes` (one router per resource), their shared parts in
`service.state` reached through `service.deps`, middlewares in `service.middleware`.
Everything under /deployments needs the bearer token when one is configured. `GET /` serves
the web page (open; it reads deployments with the token typed into it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from protocol.version import __version__
from service import errors, page
from service.deps import AUTHORIZED
from service.doctor_routes import doctor_router
from service.middleware import BodyLimit, Guard, RequestMetrics
from service.openapi import publish_what_is_enforced
from service.routes import agents, deployments, health, plan
from service.settings import Settings
from service.state import ServiceState

log = logging.getLogger("asymtp.service")


def _lifespan(state: ServiceState) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.watch.start()
        if state.settings.token is None:
            log.warning(
                "no token: deployment endpoints are open, assignments signed with the "
                "development key (loopback use only)"
            )
        try:
            yield
        finally:
            await state.watch.stop()

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = ServiceState.build(settings)
    app = FastAPI(
        title="asymtp planner",
        version=__version__,
        summary="Asymmetric tensor-parallel plans for Apple Silicon clusters, and deployments "
        "that executor agents poll.",
        lifespan=_lifespan(state),
    )
    app.state.service = state
    errors.add_handlers(app)
    for module in (health, plan, deployments, agents):
        app.include_router(module.router)
    app.include_router(doctor_router(state.store, AUTHORIZED))  # peers, measure, doctor
    page.add_page(app)  # GET /: the topology page (service/static)
    publish_what_is_enforced(app, settings)
    # The last added is outermost: metrics see every answer, the 401s and 413s included.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    app.add_middleware(Guard, token=settings.token_value)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    return app


def app_from_env() -> FastAPI:
    """For `uvicorn --factory`: settings from the ASYMTP_* environment."""
    return create_app(Settings())
