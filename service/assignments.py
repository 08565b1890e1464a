"""What one node needs to start its rank: a pure function of a published deployment."""

from __future__ import annotations

from protocol.connectivity import rdma_pairs, runs_jaccl
from protocol.deployment import Assignment, Backend, DeploymentSpec, Peer
from protocol.plan import Plan

LOOPBACK_HOST = "127.0.0.1"


class UnknownNode(LookupError):
    """The node is not in the deployment's topology."""


def backend_for(spec: DeploymentSpec, used: list[str]) -> Backend:
    """JACCL when every pair of used nodes has a direct RDMA link, else the TCP ring
    (`protocol.connectivity.runs_jaccl`, the rule the planner prices by)."""
    return "jaccl" if runs_jaccl(used, rdma_pairs(spec.topology.links)) else "ring"


def assignment_for(
    name: str, spec: DeploymentSpec, plan: Plan, revision: int, node_id: str
) -> Assignment:
    """The (unsigned) assignment of `node_id`; `rank` None for a node the plan leaves out."""
    nodes = {n.id: n for n in spec.topology.nodes}
    if node_id not in nodes:
        raise UnknownNode(f"node {node_id!r} is not in deployment {name!r}'s topology")
    ranks = sorted(plan.ranks, key=lambda r: r.rank)
    peers = [
        Peer(
            rank=r.rank,
            node_id=r.node_id,
            host=nodes[r.node_id].address or LOOPBACK_HOST,
            port=spec.ring_port + r.rank,
            layers=r.layers,
        )
        for r in ranks
    ]
    mine = next((r for r in ranks if r.node_id == node_id), None)
    return Assignment(
        deployment=name,
        node_id=node_id,
        revision=revision,
        plan_id=plan.plan_id,
        rank=mine.rank if mine is not None else None,
        world_size=len(ranks),
        backend=backend_for(spec, [r.node_id for r in ranks]),
        peers=peers,
        rank_plan=mine,
        model_path=spec.model_path,
        serve_port=spec.serve_port,
        context_tokens=spec.constraints.context_tokens,
        batch_size=spec.constraints.batch_size,
    )
