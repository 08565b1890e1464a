"""One planning context, built once per request: the request in canonical order, its model
spec, unit costs, the cluster as a priced graph, the plan id; and the solver's `Problem`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version

from planner.costs import UnitCosts, unit_costs
from planner.layout import budget_bytes
from planner.problem import NodeInput, Problem
from planner.ring import RingPricing, best_ring
from planner.solver import FORMULATION
from planner.topology import Hop, effective_hops
from protocol.model_spec import ModelSpec, read_config
from protocol.schema import Node, PlanRequest
from protocol.version import __version__

MAX_HOP_LEVELS = 8  # more distinct link prices than this share the last level (pricing is exact)
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
class Cluster:
    """Everything about the nodes that the model-independent parts of planning need."""

    nodes: dict[str, Node]
    budgets: dict[str, int]
    pricing: RingPricing

    @classmethod
    def of(cls, request: PlanRequest, spec: ModelSpec) -> Cluster:
        c = request.constraints
        message = spec.hidden * spec.dtype_bytes * c.batch_size
        nodes = {n.id: n for n in request.topology.nodes}
        routed = effective_hops(request.topology, message)
        # One hop per pair, the same both ways: the lower id's route.
        hops = {(a, b): routed[min(a, b), max(a, b)] for a, b in routed}
        return cls(
            nodes=nodes,
            budgets={n.id: budget_bytes(n, c.headroom) for n in nodes.values()},
            # One all-reduce after attention and one after the MLP / MoE block, every layer.
            pricing=RingPricing(hops, message, 2 * spec.num_layers),
        )

    @property
    def hops(self) -> dict[tuple[str, str], Hop]:
        return self.pricing.hops

    def allreduce_ms(self, order: list[str]) -> float:
        return self.pricing.ring_ps(order) / 1e9

    def first_rank(self, used: list[str]) -> str:
        """Rank 0 (which serves requests) is the node with the most memory."""
        return max(used, key=lambda n: (self.budgets[n], self.nodes[n].bandwidth_gbps, n))

    def ring(self, used: list[str], seconds: float = 10.0) -> list[str]:
        """The cheapest ring over `used`, rank 0 first."""
        return self.best_ring(used, seconds)[0]

    def best_ring(self, used: list[str], seconds: float) -> tuple[list[str], bool]:
        return best_ring(sorted(used), self.pricing, self.first_rank(used), seconds)


def hop_levels(cluster: Cluster, ids: list[str]) -> tuple[int, dict[tuple[str, str], int]]:
    """Hop levels in ascending price: the MAX_HOP_LEVELS - 1 cheapest hops each a level of
    their own, all dearer ones in the last level. Levels only partition the search; every
    arc is priced exactly."""
    pairs = {(a, b): cluster.hops[a, b] for a in ids for b in ids if a != b}
    if not pairs:
        return 1, {}
    price = {h: cluster.pricing.hops_ps([h, h]) for h in set(pairs.values())}
    ordered = sorted(set(price.values()))
    level_of = {p: min(i, MAX_HOP_LEVELS - 1) for i, p in enumerate(ordered)}
    return min(len(ordered), MAX_HOP_LEVELS), {
        pair: level_of[price[h]] for pair, h in pairs.items()
    }


@dataclass(frozen=True)
class PlanningContext:
    request: PlanRequest
    spec: ModelSpec
    costs: UnitCosts
    cluster: Cluster
    plan_id: str

    @classmethod
    def of(cls, request: PlanRequest) -> PlanningContext:
        request = canonical(request)
        spec = read_config(request.model)
        c = request.constraints
        costs = unit_costs(spec, c.context_tokens, c.batch_size, c.kv_cache_bytes_per_element)
        return cls(request, spec, costs, Cluster.of(request, spec), _plan_id(request))

    def problem(self, costs: UnitCosts | None = None) -> Problem:
        return problem_for(self.request, self.spec, costs or self.costs, self.cluster)


def problem_for(
    request: PlanRequest, spec: ModelSpec, costs: UnitCosts, cluster: Cluster
) -> Problem:
    c = request.constraints
    ids = sorted(cluster.nodes)
    levels, pair_level = hop_levels(cluster, ids)

    def own_level(n: str) -> int:
        """The slowest level n must use in any ring: its second-best neighbour's."""
        near = sorted(pair_level[n, o] for o in ids if o != n)
        return near[min(1, len(near) - 1)] if near else 0

    order = sorted(
        cluster.nodes.values(),
        key=lambda n: (-cluster.budgets[n.id], -n.bandwidth_gbps, own_level(n.id), n.id),
    )
    return Problem(
        nodes=[
            NodeInput(
                id=n.id,
                budget=cluster.budgets[n.id],
                bandwidth_gbps=n.bandwidth_gbps,
                level=own_level(n.id),
            )
            for n in order
        ],
        costs=costs,
        q_per_kv=spec.q_per_kv,
        overhead_bytes=c.overhead_bytes,
        ring=cluster.pricing,
        pair_level=pair_level,
        levels=levels,
        allow_unused=c.allow_unused_nodes,
        time_limit_s=c.time_limit_s,
    )
