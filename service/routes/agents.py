"""What agents call: their signed assignment (long-polled by ETag) and their status reports."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Body, Header, Query
from fastapi.responses import Response

from protocol.deployment import AgentRecord, AgentStatus, Assignment
from protocol.signing import sign
from service import examples, responses
from service.assignments import UnknownNode, assignment_for
from service.deps import AUTHORIZED, Name, NodeId, StateDep
from service.errors import error, invalid
from service.routes.plan import JSON
from service.store import TooManyAgents

router = APIRouter(prefix="/deployments/{name}", tags=["agents"], dependencies=AUTHORIZED)

Wait = Annotated[
    float,
    Query(
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="long-poll: wait up to this many seconds (capped by the service) "
        "for an assignment whose ETag differs from If-None-Match",
    ),
]


def etags(header: str | None) -> set[str]:
    """The entity tags of an If-None-Match header, weak or strong, quoted or not."""
    if not header:
        return set()
    tags = set()
    for part in header.split(","):
        tag = part.strip().removeprefix("W/").strip()
        if tag:
            tags.add(tag if tag == "*" or tag.startswith('"') else f'"{tag}"')
    return tags


@router.get(
    "/assignments/{node_id}",
    response_class=Response,
    responses={
        200: {
            "model": Assignment,
            "description": "This node's signed assignment",
            "headers": responses.ETAG_HEADER,
        },
        304: {"description": "Unchanged (If-None-Match)", "headers": responses.ETAG_HEADER},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
    },
)
async def get_assignment(
    name: Name,
    node_id: NodeId,
    state: StateDep,
    wait: Wait = 0,
    if_none_match: Annotated[str | None, Header(max_length=4096)] = None,
) -> Response:
    """What this node needs to start its rank (rank null: the plan leaves it out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, state.settings.max_wait_s)
    seen = etags(if_none_match)
    known_one = False
    while True:
        remaining = deadline - loop.time()
        stored = await state.db(state.store.get, name)
        if stored is None:
            # Waiting is for a first deployment; one the agent knew (If-None-Match), or that
            # went away while it waited, is news to tell at once.
            if remaining <= 0 or seen or known_one:
                return error(404, f"no deployment named {name!r}")
            await state.watch.wait(name, None, remaining)
            continue
        known_one = True
        etag = f'"{stored.plan_id}:{stored.revision}"'
        spec, plan = state.parse(stored)
        try:
            assignment = assignment_for(name, spec, plan, stored.revision, node_id)
        except UnknownNode as e:
            if remaining <= 0:
                return error(404, str(e))
            await state.watch.wait(name, stored.revision, remaining)
            continue
        if etag not in seen and "*" not in seen:
            signed = sign(assignment, state.key)
            return Response(signed.model_dump_json(), media_type=JSON, headers={"ETag": etag})
        if remaining <= 0:
            return Response(status_code=304, headers={"ETag": etag})
        await state.watch.wait(name, stored.revision, remaining)


@router.post(
    "/status/{node_id}",
    response_model=AgentRecord,
    responses={**responses.UNAUTHORIZED, **responses.TOO_MANY_AGENTS, **responses.TOO_LARGE},
)
async def post_status(
    name: Name,
    node_id: NodeId,
    status: Annotated[AgentStatus, Body(openapi_examples=examples.agent_status_examples())],
    state: StateDep,
) -> Response:
    """An agent's heartbeat or state change; accepted whether or not `name` is deployed
    (agents report their facts first, to build a topology from)."""
    if status.facts is not None and status.facts.node_id != node_id:
        raise invalid(
            ["body", "facts", "node_id"],
            f"facts.node_id {status.facts.node_id!r} differs from the path's {node_id!r}",
        )
    record = AgentRecord.model_validate(
        {**status.model_dump(), "node_id": node_id, "seen_at": round(time.time(), 3)}
    )
    raw = record.model_dump_json()
    s = state.settings
    args = (name, node_id, record.state, raw, record.seen_at, s.max_agents)
    try:
        await state.db(state.store.put_agent, *args)
    except TooManyAgents as e:
        return error(409, f"{e}; delete deployments or raise ASYMTP_MAX_AGENTS")
    return Response(raw, media_type=JSON)
