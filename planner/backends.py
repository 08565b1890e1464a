"""The all-reduce backend inside one shape's CP-SAT model.

A ring runs JACCL exactly when every pair of its used nodes has a direct RDMA link
(`protocol.connectivity.runs_jaccl`, the service's rule), else the TCP ring, where an RDMA arc
costs its TCP price (`planner.ring.RingPricing`). A pool whose pairs are all RDMA, or none, runs
one backend whatever the used nodes, and so does a pair, so each arc has one price, its own.
A *mixed* pool with k ≥ 3 needs a `jaccl` literal: true only when the used nodes are an RDMA clique, C at least the chosen arcs'
JACCL prices when true, their TCP prices when false.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from ortools.sat.python import cp_model

from planner.calibration import Collective
from planner.dominance import dominance
from planner.problem import NodeInput
from planner.ring import RingPricing

Price = Callable[[str, str], int]
Dominance = list[tuple[int, int, bool]]


@dataclass(frozen=True)
class PoolBackends:
    pricing: RingPricing
    ids: list[str]
    k: int

    @cached_property
    def pairs(self) -> list[tuple[str, str]]:
        return [(a, b) for i, a in enumerate(self.ids) for b in self.ids[i + 1 :]]

    @cached_property
    def mixed(self) -> bool:
        """Rings of k ≥ 3 nodes of this pool may run either backend: it has RDMA pairs and
        others (in a TCP ring an RDMA arc costs its TCP price, not its own)."""
        rdma = [p in self.pricing.rdma for p in self.pairs]
        return self.k >= 3 and any(rdma) and not all(rdma)

    def tcp(self, a: str, b: str) -> int:
        return self.pricing.arc_ps(self.k, a, b, Collective.RING)

    def own(self, a: str, b: str) -> int:
        return self.pricing.arc_ps(self.k, a, b)

    @cached_property
    def jaccl_dearer(self) -> bool:
        """Some RDMA arc costs more at JACCL than at TCP (odd user figures: a slow RDMA link
        and a fast TCP path): a clique could then not be left to the minimisation."""
        return any(
            self.own(a, b) > self.tcp(a, b) for a, b in self.pairs if (a, b) in self.pricing.rdma
        )

    def add(self, m: cp_model.CpModel, used: dict[str, cp_model.IntVar]) -> cp_model.IntVar:
        """The `jaccl` literal: true only over an RDMA clique (and, when JACCL may be dearer,
        true whenever the used nodes are one, so the rule is followed both ways)."""
        jaccl = m.new_bool_var("jaccl")
        for a in self.ids:
            apart = [used[b] for b in self.ids if b != a and (a, b) not in self.pricing.rdma]
            if apart:
                m.add(sum(apart) == 0).only_enforce_if([jaccl, used[a]])
        if self.jaccl_dearer:
            both = []
            for a, b in self.pairs:
                if (a, b) not in self.pricing.rdma:
                    z = m.new_bool_var(f"both[{a},{b}]")
                    m.add_implication(z, used[a])
                    m.add_implication(z, used[b])
                    both.append(z)
            m.add_bool_or(both).only_enforce_if(~jaccl)
        return jaccl

    def dominance(self, nodes: list[NodeInput], allowed: Callable[[str, str], bool]) -> Dominance:
        """Node i stands in for node j only if it does so in either backend and keeps every
        RDMA link j has (a clique stays a clique); none when JACCL may be dearer (a stand-in
        could then turn a TCP ring into a dearer JACCL one)."""
        if self.jaccl_dearer:
            return []

        def no_rdma(a: str, b: str) -> int:
            return 0 if (a, b) in self.pricing.rdma else 1

        found = [
            {(i, j): mutual for i, j, mutual in dominance(nodes, allowed, self.own)},
            {(i, j): mutual for i, j, mutual in dominance(nodes, allowed, self.tcp)},
            {(i, j): mutual for i, j, mutual in dominance(nodes, lambda a, b: True, no_rdma)},
        ]
        both = found[0].keys() & found[1].keys() & found[2].keys()
        return [(i, j, all(f[i, j] for f in found)) for i, j in sorted(both)]
