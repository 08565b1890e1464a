"""What RDMA is worth for a deployment: the plan priced over the TCP ring and over an RDMA
mesh, and the doctor's report that says which one the cluster gets."""

from __future__ import annotations

import itertools

from pydantic import BaseModel

from planner.mesh_doctor import Finding, diagnose_mesh, rdma_possible
from planner.plan import make_plan
from protocol.measurements import FigureSource
from protocol.schema import Link, NodeFacts, PlanRequest, Topology

PRICE_TIME_LIMIT_S = 2.0
"""Each of the two plans gets at most this: the doctor answers in seconds."""


class RdmaCost(BaseModel):
    tcp_tokens_per_s: float | None
    rdma_tokens_per_s: float | None
    message: str


class DoctorReport(BaseModel):
    findings: list[Finding]
    rdma_possible: bool
    cost: RdmaCost | None = None
    lines: list[str]
    """One line per finding with its fix, then the cost line: what `asymtp doctor` prints."""


def _tcp(link: Link) -> Link:
    if link.kind != "rdma":
        return link
    return link.model_copy(update={"kind": "thunderbolt"})


def _rate(request: PlanRequest, topology: Topology) -> float | None:
    plan = make_plan(request.model_copy(update={"topology": topology}))
    return plan.estimates.tokens_per_s if plan.estimates else None


def price_tcp_vs_rdma(request: PlanRequest) -> RdmaCost:
    """The same request planned over the TCP ring (RDMA links as Thunderbolt TCP) and over a
    full RDMA mesh with the RDMA defaults."""
    limit = min(request.constraints.time_limit_s, PRICE_TIME_LIMIT_S)
    request = request.model_copy(
        update={"constraints": request.constraints.model_copy(update={"time_limit_s": limit})}
    )
    topo = request.topology
    ids = sorted(n.id for n in topo.nodes)
    mesh = [
        Link(a=a, b=b, kind="rdma", source=FigureSource.ASSUMED)
        for a, b in itertools.combinations(ids, 2)
    ]
    tcp = _rate(request, Topology(nodes=topo.nodes, links=[_tcp(x) for x in topo.links]))
    rdma = _rate(request, Topology(nodes=topo.nodes, links=mesh)) if len(ids) > 1 else tcp
    if tcp is None or rdma is None:
        message = "the model does not fit this cluster: no estimate for either transport"
    else:
        loss = (1 - tcp / rdma) * 100 if rdma else 0.0
        message = (
            f"{tcp:.1f} tok/s estimated over the TCP ring, {rdma:.1f} tok/s over an RDMA "
            f"mesh ({loss:.0f}% lost without RDMA)"
        )
    return RdmaCost(tcp_tokens_per_s=tcp, rdma_tokens_per_s=rdma, message=message)


def doctor_report(facts: list[NodeFacts], request: PlanRequest | None) -> DoctorReport:
    findings = diagnose_mesh(facts)
    possible = rdma_possible(findings)
    lines = [f.line() for f in findings]
    cost = price_tcp_vs_rdma(request) if request is not None else None
    if not possible:
        lines.append(
            "RDMA cannot work: the plan will use the TCP ring"
            + (f": {cost.message}" if cost else " (deploy a model to price it)")
        )
    elif cost is not None:
        lines.append(f"RDMA can work: {cost.message}")
    return DoctorReport(findings=findings, rdma_possible=possible, cost=cost, lines=lines)
