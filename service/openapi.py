"""The published OpenAPI document says what this service enforces and how its operations
chain: `time_limit_s` up to the service's cap, and links from a published deployment to the
operations on it (what clients, and schemathesis's stateful phase, follow)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.settings import Settings

DEPLOYMENT = "/deployments/{name}"
# link name -> (path, method, parameters from the PUT that published the deployment). The
# measurement routes are left out: they answer about a name's agents, which exist before and
# after its deployment (so a DELETE does not make them 404).
LINKS: dict[str, tuple[str, str, dict[str, str]]] = {
    "GetDeployment": (DEPLOYMENT, "get", {"name": "$request.path.name"}),
    "DeleteDeployment": (DEPLOYMENT, "delete", {"name": "$request.path.name"}),
    "GetTopology": (f"{DEPLOYMENT}/topology", "get", {"name": "$request.path.name"}),
    "GetAssignment": (
        f"{DEPLOYMENT}/assignments/{{node_id}}",
        "get",
        {"name": "$request.path.name", "node_id": "$response.body#/plan/ring/0"},
    ),
    "PostStatus": (
        f"{DEPLOYMENT}/status/{{node_id}}",
        "post",
        {"name": "$request.path.name", "node_id": "$response.body#/plan/ring/0"},
    ),
}


def _cap_time_limit(schema: dict[str, Any], cap: float) -> None:
    limit = schema["components"]["schemas"]["Constraints"]["properties"]["time_limit_s"]
    limit["maximum"] = cap
    limit.pop("exclusiveMaximum", None)
    limit["description"] = f"Solver time in seconds; this service solves for at most {cap:g} s"


def _add_links(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    links = {
        name: {"operationId": paths[path][method]["operationId"], "parameters": params}
        for name, (path, method, params) in LINKS.items()
    }
    paths[DEPLOYMENT]["put"]["responses"]["200"]["links"] = links


def publish_what_is_enforced(app: FastAPI, settings: Settings) -> None:
    """Replace `app.openapi` with the generated document, capped and linked."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _cap_time_limit(schema, settings.max_solver_seconds)
            _add_links(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
