"""`POST /plan`: exactly what `asymtp plan --json` prints for the same request."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response

from protocol.plan import Plan
from protocol.schema import PlanRequest
from service import examples, responses
from service.deps import PlannerDep, SettingsDep
from service.errors import invalid
from service.plans import unless_client_leaves

router = APIRouter(tags=["planning"])
R = TypeVar("R", bound=PlanRequest)
JSON = "application/json"
CLIENT_LEFT = 499
"""No one reads it: the status nginx logs for a client that closed the connection first."""


def capped(request: R, cap: float) -> R:
    """`request` with its solver time within `cap`: a longer explicit ask is refused (422);
    a default longer than the cap is lowered to it."""
    c = request.constraints
    if c.time_limit_s <= cap:
        return request
    if "time_limit_s" in c.model_fields_set:
        raise invalid(
            ["body", "constraints", "time_limit_s"],
            f"this service solves for at most {cap:g} s; ask for {cap:g} or less",
        )
    limited = c.model_copy(update={"time_limit_s": cap})
    return request.model_copy(update={"constraints": limited})


@router.post(
    "/plan",
    response_class=Response,
    responses={
        200: {"model": Plan, "description": "The plan, feasible or not"},
        **responses.TOO_LARGE,
        **responses.BUSY,
    },
)
async def post_plan(
    http: Request,
    request: Annotated[PlanRequest, Body(openapi_examples=examples.plan_request_examples())],
    planner: PlannerDep,
    settings: SettingsDep,
) -> Response:
    """Plan a request: exactly what `asymtp plan --json` prints for the same request."""
    solve = planner.plan(capped(request, settings.max_solver_seconds))
    result = await unless_client_leaves(http, solve)
    if result is None:
        return Response(status_code=CLIENT_LEFT)
    return Response(result[1], media_type=JSON)
