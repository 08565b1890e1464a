"""Response bodies that only the service returns (the shared ones are in protocol.schema and
protocol.deployment), and the OpenAPI description of every status an endpoint can answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from protocol.plan import Plan


class Health(BaseModel):
    status: str
    version: str
    solver: str


class ErrorDetail(BaseModel):
    """Every 4xx except 422 (whose `detail` is a list naming each field)."""

    model_config = ConfigDict(extra="allow")
    detail: str


class DeploymentSummary(BaseModel):
    name: str
    revision: int
    plan_id: str
    updated_at: float
    agents: int


class TopologyDraft(BaseModel):
    """A topology built from the facts agents reported, to check and edit before deploying."""

    topology: dict[str, Any]
    notes: list[str]


Responses = dict[int | str, dict[str, Any]]


def _error(description: str, model: type[BaseModel] = ErrorDetail) -> dict[str, Any]:
    return {"model": model, "description": description}


UNAUTHORIZED: Responses = {401: _error("Missing or wrong bearer token (when the service has one)")}
NOT_FOUND: Responses = {404: _error("No such deployment, or the node is not in its topology")}
TOO_LARGE: Responses = {413: _error("Request body larger than the limit (1 MiB)")}
BUSY: Responses = {429: _error("Too many plans queued; retry after the `Retry-After` seconds")}
INFEASIBLE: Responses = {
    409: _error("The plan is infeasible (body: the plan, with reasons); nothing changed", Plan)
}
TOO_MANY_AGENTS: Responses = {409: _error("The service holds its maximum of agent records")}
ETAG_HEADER = {"ETag": {"description": '`"<plan_id>:<revision>"`', "schema": {"type": "string"}}}
