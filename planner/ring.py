"""The all-reduce ring as CP-SAT sees it: arcs, their prices, and the circuit over used nodes.

A ring is priced only by `planner.topology.ring_allreduce_us` (through `RingPricing`); the
model picks a Hamiltonian circuit over the used nodes with `AddCircuit` (a self-loop for every
unused node) and its all-reduce time is at least each chosen arc's price, the price of a ring of
the same size made of that hop alone. With the pricing's max-over-hops shape that is exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx
from ortools.sat.python import cp_model

from planner.hamiltonian import hamiltonian_cycle
from planner.topology import Hop, allreduce_us, ring_allreduce_us, ring_hops

PS_PER_US = 1_000_000
Arcs = dict[tuple[str, str], cp_model.IntVar]


@dataclass(frozen=True)
class RingPricing:
    """Prices rings over the cluster's effective hops, in integer picoseconds per token."""

    hops: dict[tuple[str, str], Hop]
    """The effective hop between two nodes; the same both ways."""
    message_bytes: int
    allreduces_per_token: int
    _tables: dict[int, list[int]] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def distinct(self) -> list[Hop]:
        """Each different hop once (a cluster has far fewer than pairs of nodes)."""
        return list(dict.fromkeys(self.hops.values()))

    @cached_property
    def hop_id(self) -> dict[tuple[str, str], int]:
        """Pair → index into `distinct`."""
        index = {h: i for i, h in enumerate(self.distinct)}
        return {pair: index[h] for pair, h in self.hops.items()}

    def ring_ps(self, order: list[str]) -> int:
        """All-reduce time per token of the ring visiting `order` (ps)."""
        return self.hops_ps(ring_hops(order, self.hops))

    def hops_ps(self, hops: list[Hop]) -> int:
        return round(self.exact_ps(hops))

    def exact_ps(self, hops: list[Hop]) -> float:
        """Unrounded (possibly beyond any integer, for absurd links)."""
        us = ring_allreduce_us(hops, self.message_bytes)
        return us * self.allreduces_per_token * PS_PER_US

    def table(self, k: int) -> list[int]:
        """What each distinct hop costs a ring of k ranks: a ring costs its dearest hop's.
        (`allreduce_us` is `ring_allreduce_us` of k copies of the hop, without the list.)"""
        if k not in self._tables:
            per_token = self.allreduces_per_token * PS_PER_US
            self._tables[k] = [
                round(allreduce_us(k, h, self.message_bytes) * per_token) for h in self.distinct
            ]
        return self._tables[k]

    def arc_ps(self, k: int, a: str, b: str) -> int:
        return self.table(k)[self.hop_id[a, b]]


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
    dear: dict[str, list[tuple[int, cp_model.IntVar]]] = {a: [] for a in ids}
    for (a, b), lit in arcs.items():
        if price(a, b) > bounds[0]:
            dear[a].append((price(a, b), lit))
    for out in dear.values():
        if out:
            m.add(c >= sum(p * lit for p, lit in out))
    return arcs, c


def best_ring(
    ids: list[str], pricing: RingPricing, start: str, seconds: float
) -> tuple[list[str], bool]:
    """The cheapest ring over all of `ids`, from `start`, and whether it is proven cheapest.

    A ring costs its dearest hop, so the answer is the lowest price p at which the hops no
    dearer than p hold a Hamiltonian cycle (`planner.hamiltonian`), each p tried in increasing
    order from the least that gives every node two hops.
    """
    if len(ids) <= 2:
        return [start, *(n for n in ids if n != start)], True
    k, proven = len(ids), True
    deadline = time.perf_counter() + seconds
    pairs = sorted((pricing.arc_ps(k, a, b), a, b) for a in ids for b in ids if a < b)
    second = {n: sorted(p for p, a, b in pairs if n in (a, b))[1] for n in ids}
    least = max(second.values())
    g = nx.Graph()
    g.add_nodes_from(sorted(ids))
    for i, (price, a, b) in enumerate(pairs):
        g.add_edge(a, b)
        if price < least or (i + 1 < len(pairs) and pairs[i + 1][0] == price):
            continue  # all hops of this price first
        found, sure = hamiltonian_cycle(g, start, max(deadline - time.perf_counter(), 0.01))
        if found:
            return found, proven
        proven = proven and sure
    raise RuntimeError(f"no ring over {k} nodes")  # unreachable: a complete graph has one
