"""Deployments: publish (plan + store), read, list, delete, and a topology from agents' facts."""

from __future__ import annotations

from typing import Annotated, Literal

import yaml
from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response

from planner.topology_from_facts import build_topology
from protocol.deployment import Deployment, DeploymentSpec
from service import examples, responses
from service.deps import AUTHORIZED, Name, StateDep
from service.doctor_routes import agent_facts
from service.errors import error
from service.plans import unless_client_leaves
from service.routes.plan import CLIENT_LEFT, JSON, capped

router = APIRouter(prefix="/deployments", tags=["deployments"], dependencies=AUTHORIZED)


def _json(model: Deployment | responses.TopologyDraft, etag: str | None = None) -> Response:
    headers = {"ETag": f'"{etag}"'} if etag else None
    return Response(model.model_dump_json(), media_type=JSON, headers=headers)


@router.get(
    "",
    response_model=list[responses.DeploymentSummary],
    responses={**responses.UNAUTHORIZED},
)
async def list_deployments(state: StateDep) -> list[responses.DeploymentSummary]:
    return await state.db(state.store.summaries)


@router.put(
    "/{name}",
    response_class=Response,
    responses={
        200: {"model": Deployment, "description": "Published: a new revision"},
        **responses.UNAUTHORIZED,
        **responses.INFEASIBLE,
        **responses.TOO_LARGE,
        **responses.BUSY,
    },
)
async def put_deployment(
    http: Request,
    name: Name,
    spec: Annotated[DeploymentSpec, Body(openapi_examples=examples.deployment_spec_examples())],
    state: StateDep,
) -> Response:
    """Plan `spec` and publish it (revision + 1, even for an unchanged plan). An infeasible
    plan is answered 409 with the plan and its reasons; nothing changes then."""
    spec = capped(spec, state.settings.max_solver_seconds)
    result = await unless_client_leaves(http, state.planner.plan(spec.plan_request()))
    if result is None:
        return Response(status_code=CLIENT_LEFT)
    plan, body = result
    if not plan.feasible:
        return Response(body, status_code=409, media_type=JSON)
    stored = await state.db(state.store.publish, name, spec.model_dump_json(), body, plan.plan_id)
    state.watch.poke()
    return _json(await state.deployment(stored), plan.plan_id)


@router.get(
    "/{name}",
    response_class=Response,
    responses={
        200: {"model": Deployment, "description": "The deployment and its agents' reports"},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
    },
)
async def get_deployment(name: Name, state: StateDep) -> Response:
    stored = await state.db(state.store.get, name)
    if stored is None:
        return error(404, f"no deployment named {name!r}")
    return _json(await state.deployment(stored), stored.plan_id)


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "Deleted (with its agents' records)"},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
    },
)
async def delete_deployment(name: Name, state: StateDep) -> Response:
    if not await state.db(state.store.delete, name):
        return error(404, f"no deployment named {name!r}")
    state.watch.poke()
    return Response(status_code=204)


@router.get(
    "/{name}/topology",
    response_class=Response,
    responses={
        200: {
            "model": responses.TopologyDraft,
            "description": "A topology to check and edit (YAML with `?format=yaml`)",
            "content": {"application/yaml": {"schema": {"type": "string"}}},
        },
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
    },
)
async def get_topology(
    name: Name, state: StateDep, format: Annotated[Literal["json", "yaml"], Query()] = "json"
) -> Response:
    """A topology built from the facts the agents of `name` reported."""
    facts = agent_facts(await state.db(state.store.agents, name))
    if not facts:
        return error(404, f"no agent of {name!r} has reported its facts yet")
    topology, notes = build_topology(facts)
    if format == "yaml":
        head = "".join(f"# {n}\n" for n in notes)
        text = head + yaml.safe_dump({"topology": topology}, sort_keys=False)
        return Response(text, media_type="application/yaml")
    return _json(responses.TopologyDraft(topology=topology, notes=notes))
