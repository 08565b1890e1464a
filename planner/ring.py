"""The all-reduce ring as CP-SAT sees it: arcs, their prices, and the circuit over used nodes.

A ring is priced only by `planner.topology.ring_allreduce_us` (through `RingPricing`); the
model picks a Hamiltonian circuit over the used nodes with `AddCircuit` (a self-loop for every
unused node) and its all-reduce time is at least each chosen arc's price, the price of a ring of
the same size made of that hop alone. With the pricing's max-over-hops shape that is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from planner.cpsat import CpModel, checked_solve, new_solver
from planner.topology import Hop, ring_allreduce_us, ring_hops

PS_PER_US = 1_000_000
Arcs = dict[tuple[str, str], cp_model.IntVar]


@dataclass(frozen=True)
class RingPricing:
    """Prices rings over the cluster's effective hops, in integer picoseconds per token."""

    hops: dict[tuple[str, str], Hop]
    """The effective hop between two nodes; the same both ways."""
    message_bytes: int
    allreduces_per_token: int
    _arc_cache: dict[tuple[int, Hop], int] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def ring_ps(self, order: list[str]) -> int:
        """All-reduce time per token of the ring visiting `order` (ps)."""
        return self.hops_ps(ring_hops(order, self.hops))

    def hops_ps(self, hops: list[Hop]) -> int:
        us = ring_allreduce_us(hops, self.message_bytes)
        return round(us * self.allreduces_per_token * PS_PER_US)

    def arc_ps(self, k: int, a: str, b: str) -> int:
        """What the hop a → b costs a ring of k ranks: a ring costs its dearest hop's price."""
        hop = self.hops[a, b]
        key = (k, hop)
        if key not in self._arc_cache:
            self._arc_cache[key] = self.hops_ps([hop] * k)
        return self._arc_cache[key]


def add_ring(
    m: cp_model.CpModel,
    used: dict[str, cp_model.IntVar],
    allowed: Callable[[str, str], bool],
    price: Callable[[str, str], int],
    bounds: tuple[int, int],
) -> tuple[Arcs, cp_model.IntVar]:
    """A circuit through the nodes with `used` true, over `allowed` arcs, and C ≥ the price of
    every arc it takes (each node leaves by one arc: C ≥ Σ_j price(n, j) · arc_nj)."""
    ids = list(used)
    arcs: Arcs = {}
    circuit: list[tuple[int, int, cp_model.LiteralT]] = []
    for i, a in enumerate(ids):
        circuit.append((i, i, ~used[a]))
        for j, b in enumerate(ids):
            if a != b and allowed(a, b):
                arcs[a, b] = m.new_bool_var(f"arc[{a},{b}]")
                circuit.append((i, j, arcs[a, b]))
    m.add_circuit(circuit)
    c = m.new_int_var(bounds[0], max(bounds), "allreduce_ps")
    for a in ids:
        out = [(price(a, b), lit) for (x, b), lit in arcs.items() if x == a]
        dear = [(p, lit) for p, lit in out if p > bounds[0]]
        if dear:
            m.add(c >= sum(p * lit for p, lit in dear))
    return arcs, c


def cycle(solver: cp_model.CpSolver, arcs: Arcs, start: str) -> list[str]:
    """The circuit's nodes in order from `start` (just `start` when it has no arc out)."""
    succ = {a: b for (a, b), lit in arcs.items() if solver.boolean_value(lit)}
    order = [start]
    while succ.get(order[-1], start) != start:
        order.append(succ[order[-1]])
    return order


def best_ring(
    ids: list[str], pricing: RingPricing, start: str, seconds: float
) -> tuple[list[str], bool]:
    """The cheapest ring over all of `ids`, from `start`, and whether it is proven cheapest.

    A pair or a single node has one ring. Otherwise a small CP-SAT model over every arc.
    """
    if len(ids) <= 2:
        return [start, *(n for n in ids if n != start)], True
    k = len(ids)
    m = CpModel()
    one = m.new_constant(1)
    used = dict.fromkeys(sorted(ids), one)
    prices = [pricing.arc_ps(k, a, b) for a in ids for b in ids if a != b]
    arcs, c = add_ring(
        m, used, lambda a, b: True, lambda a, b: pricing.arc_ps(k, a, b), (0, max(prices))
    )
    m.minimize(c)
    solver = new_solver(seconds)
    status = checked_solve(solver, m)
    if status not in ("OPTIMAL", "FEASIBLE"):
        raise RuntimeError(f"no ring over {k} nodes within {seconds:g}s")
    return cycle(solver, arcs, start), status == "OPTIMAL"
