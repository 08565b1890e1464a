"""Measurement and doctor routes (a router `app.py` includes):

    GET  /deployments/{name}/peers    -> MeasurePeers   the agents' facts an agent measures against
    POST /deployments/{name}/measure  -> MeasurePeers   ask every agent of `name` to measure again
    GET  /deployments/{name}/doctor   -> DoctorReport   what an RDMA mesh needs, one line per
                                                        finding with its fix, TCP vs RDMA priced

The measurement request number lives in this process: agents measure again whenever it changes,
so a restarted service (the number back at 0) costs at most one extra round.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from planner.doctor_cost import DoctorReport, doctor_report
from protocol.deployment import (
    DEPLOYMENT_NAME_PATTERN,
    AgentRecord,
    DeploymentSpec,
    MeasurePeers,
)
from protocol.schema import NodeFacts
from service import responses
from service.store import Store

Name = Annotated[
    str, Path(pattern=DEPLOYMENT_NAME_PATTERN, description="deployment name, `[a-z0-9-]{1,63}`")
]
NO_FACTS: responses.Responses = {
    404: {"model": responses.ErrorDetail, "description": "No agent has reported yet"}
}


def agent_facts(raw_records: list[str]) -> list[NodeFacts]:
    """The facts of every agent record that has them (unreadable records are skipped: they
    come from an older agent and will be replaced by its next report)."""
    out = []
    for raw in raw_records:
        try:
            record = AgentRecord.model_validate_json(raw)
        except ValidationError:
            continue
        if record.facts is not None:
            out.append(record.facts)
    return sorted(out, key=lambda f: f.node_id)


def _no_facts(name: str) -> JSONResponse:
    return JSONResponse({"detail": f"no agent of {name!r} has reported its facts yet"}, 404)


def doctor_router(store: Store, dependencies: list[Any]) -> APIRouter:
    router = APIRouter(tags=["measurements"], dependencies=dependencies)
    requests: dict[str, int] = {}

    async def peers(name: str) -> MeasurePeers:
        facts = agent_facts(await anyio.to_thread.run_sync(store.agents, name))
        # Agents need addresses and ports, not each other's measurements.
        bare = [f.model_copy(update={"measurements": None}) for f in facts]
        return MeasurePeers(request=requests.get(name, 0), agents=bare)

    @router.get(
        "/deployments/{name}/peers",
        response_model=MeasurePeers,
        responses={**responses.UNAUTHORIZED},
    )
    async def get_peers(name: Name) -> MeasurePeers:
        """The deployment's agents (facts without measurements) and the measurement request
        number: agents measure each other from this list only."""
        return await peers(name)

    @router.post(
        "/deployments/{name}/measure",
        response_model=MeasurePeers,
        responses={**responses.UNAUTHORIZED},
    )
    async def post_measure(name: Name) -> MeasurePeers:
        """Ask every agent of `name` to measure again (memory and links, within 10 s each);
        the results arrive with their next reports."""
        requests[name] = requests.get(name, 0) + 1
        return await peers(name)

    @router.get(
        "/deployments/{name}/doctor",
        response_model=DoctorReport,
        responses={**responses.UNAUTHORIZED, **NO_FACTS},
    )
    async def get_doctor(name: Name) -> DoctorReport | JSONResponse:
        """Checks what an RDMA mesh needs against the agents' facts: RDMA enabled, devices,
        Thunderbolt 5 direct cables in a full mesh, one OS version, reachable peers; with the
        deployment's model, prices the TCP ring against RDMA."""
        facts = agent_facts(await anyio.to_thread.run_sync(store.agents, name))
        if not facts:
            return _no_facts(name)
        stored = await anyio.to_thread.run_sync(store.get, name)
        request = DeploymentSpec.model_validate_json(stored.spec).plan_request() if stored else None
        return await anyio.to_thread.run_sync(doctor_report, facts, request)

    return router
