"""One planning context, built once per request: the request in canonical order, its model
spec, unit costs, the cluster as a priced graph (`planner.problem.Cluster`) and the plan id;
and from it the solver's `Problem`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version

from planner.costs import LayerTable, UnitCosts
from planner.problem import Cluster, Problem, problem_for
from planner.solver import FORMULATION
from protocol.config_reader import read_config
from protocol.model_spec import ModelSpec
from protocol.schema import PlanRequest
from protocol.version import __version__

SOLVER_VERSION = f"asymtp-{__version__}/formulation-{FORMULATION}+ortools-{version('ortools')}"


def canonical(request: PlanRequest) -> PlanRequest:
    """The same cluster whatever order its nodes and links are listed in (and whichever end
    of a link comes first): nodes by id, links by their ends and properties."""
    topo = request.topology
    links = [x if x.a < x.b else x.model_copy(update={"a": x.b, "b": x.a}) for x in topo.links]
    links.sort(key=lambda x: (x.a, x.b, x.kind, x.bandwidth_gbps or 0.0, x.latency_us or 0.0))
    nodes = sorted(topo.nodes, key=lambda n: n.id)
    return request.model_copy(
        update={"topology": topo.model_copy(update={"nodes": nodes, "links": links})}
    )


def plan_id_for(request: PlanRequest) -> str:
    """The plan's identity: this planner's version and the request in canonical order."""
    return _plan_id(canonical(request))


def _plan_id(canonical_request: PlanRequest) -> str:
    dumped = canonical_request.model_dump(mode="json")
    text = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{SOLVER_VERSION}\n{text}".encode()).hexdigest()


@dataclass(frozen=True)
class PlanningContext:
    request: PlanRequest
    spec: ModelSpec
    costs: UnitCosts
    cluster: Cluster
    plan_id: str
    table: LayerTable
    """Per-layer bytes: the costs of any pipeline stage's layers."""

    @classmethod
    def of(cls, request: PlanRequest) -> PlanningContext:
        request = canonical(request)
        spec = read_config(request.model)
        c = request.constraints
        table = LayerTable.of(spec, c.context_tokens, c.batch_size, c.kv_cache_bytes_per_element)
        costs = table.costs()
        return cls(request, spec, costs, Cluster.of(request, spec), _plan_id(request), table)

    def problem(self, costs: UnitCosts | None = None) -> Problem:
        return problem_for(self.request, self.spec, costs or self.costs, self.cluster)
