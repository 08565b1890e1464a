"""`GET /healthz` and `GET /metrics` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from planner.plan import SOLVER_VERSION
from protocol.version import __version__
from service import responses
from service.deps import StateDep

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=responses.Health)
async def healthz() -> responses.Health:
    return responses.Health(status="ok", version=__version__, solver=SOLVER_VERSION)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def prometheus(state: StateDep) -> PlainTextResponse:
    deployments, agents = await state.db(state.store.counts)
    state.metrics.long_polls = state.watch.waiting
    state.metrics.pending_solves = state.planner.pending
    return PlainTextResponse(
        state.metrics.render(deployments, agents), media_type="text/plain; version=0.0.4"
    )
