"""The all-reduce ring as CP-SAT sees it: arcs, their prices, and the circuit over used nodes.

A ring is priced only by `planner.topology.ring_allreduce_us` (through `RingPricing`); the
model picks a Hamiltonian circuit over the used nodes with `AddCircuit` (a self-loop for every
unused node) and its all-reduce time is at least each chosen arc's price, the price of a ring of
the same size made of that hop alone. With the pricing's max-over-hops shape that is exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx
from ortools.sat.python import cp_model

from planner.calibration import Collective
from planner.hamiltonian import hamiltonian_cycle
from planner.topology import Hop, allreduce_us, ring_allreduce_us
from protocol.connectivity import runs_jaccl

PS_PER_US = 1_000_000
Arcs = dict[tuple[str, str], cp_model.IntVar]


@dataclass(frozen=True)
class RingPricing:
    """Prices rings over the cluster's hops, in integer picoseconds per token.

    A ring's backend is its nodes' (`protocol.connectivity.runs_jaccl`): JACCL over their
    direct RDMA links when every pair has one, else the TCP ring over `hops`. An arc's *own*
    price is the one it has in a ring of its two nodes alone: JACCL's over a direct RDMA link,
    else TCP's; in a larger ring an RDMA arc costs its TCP price when the ring runs TCP."""

    hops: dict[tuple[str, str], Hop]
    """The TCP ring's hop between two nodes; the same both ways."""
    message_bytes: int
    allreduces_per_token: int
    rdma: dict[tuple[str, str], Hop] = field(default_factory=dict)
    """JACCL's hop between two nodes with a direct RDMA link; the same both ways."""
    _tables: dict[int, list[int]] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def rdma_pairs(self) -> frozenset[frozenset[str]]:
        return frozenset(frozenset(pair) for pair in self.rdma)

    def backend(self, ids: Iterable[str]) -> Collective:
        """What a group of these nodes runs (the service's rule)."""
        return Collective.JACCL if runs_jaccl(ids, self.rdma_pairs) else Collective.RING

    def own(self, a: str, b: str) -> Collective:
        return Collective.JACCL if (a, b) in self.rdma else Collective.RING

    def hop(self, a: str, b: str, backend: Collective) -> Hop:
        return self.rdma[a, b] if backend is Collective.JACCL else self.hops[a, b]

    @cached_property
    def distinct(self) -> list[tuple[Hop, Collective]]:
        """Each different (hop, backend) once (a cluster has far fewer than pairs of nodes)."""
        tcp = [(h, Collective.RING) for h in self.hops.values()]
        return list(dict.fromkeys([*tcp, *((h, Collective.JACCL) for h in self.rdma.values())]))

    @cached_property
    def hop_id(self) -> dict[tuple[str, str], int]:
        """Pair → index into `distinct` of its own price."""
        index = {entry: i for i, entry in enumerate(self.distinct)}
        return {
            pair: index[self.hop(*pair, self.own(*pair)), self.own(*pair)] for pair in self.hops
        }

    @cached_property
    def tcp_id(self) -> dict[tuple[str, str], int]:
        """Pair → index into `distinct` of its price in a TCP ring."""
        index = {entry: i for i, entry in enumerate(self.distinct)}
        return {pair: index[h, Collective.RING] for pair, h in self.hops.items()}

    def ring_ps(self, order: list[str]) -> int:
        """All-reduce time per token of the ring visiting `order` (ps), at its nodes' backend."""
        backend = self.backend(order)
        if len(order) < 2:
            return 0
        pairs = zip(order, order[1:] + order[:1])
        return self.hops_ps([self.hop(a, b, backend) for a, b in pairs], backend)

    def hops_ps(self, hops: list[Hop], backend: Collective) -> int:
        return round(self.exact_ps(hops, backend))

    def exact_ps(self, hops: list[Hop], backend: Collective) -> float:
        """Unrounded (possibly beyond any integer, for absurd links)."""
        us = ring_allreduce_us(hops, self.message_bytes, backend)
        return us * self.allreduces_per_token * PS_PER_US

    def table(self, k: int) -> list[int]:
        """What each distinct (hop, backend) costs a ring of k ranks: a ring costs its dearest
        hop's. (`allreduce_us` is `ring_allreduce_us` of k copies of the hop, without the list.)"""
        if k not in self._tables:
            per_token = self.allreduces_per_token * PS_PER_US
            self._tables[k] = [
                round(allreduce_us(k, h, self.message_bytes, b) * per_token)
                for h, b in self.distinct
            ]
        return self._tables[k]

    def arc_ps(self, k: int, a: str, b: str, backend: Collective | None = None) -> int:
        """The arc's price in a ring of k: at `backend`, else its own (see the class)."""
        if backend is Collective.RING:
            return self.table(k)[self.tcp_id[a, b]]
        if backend is Collective.JACCL and (a, b) not in self.rdma:
            raise ValueError(f"no RDMA link between {a} and {b}: JACCL cannot use it")
        return self.table(k)[self.hop_id[a, b]]


def add_ring(
    m: cp_model.CpModel,
    used: dict[str, cp_model.IntVar],
    allowed: Callable[[str, str], bool],
    price: Callable[[str, str], int],
    bounds: tuple[int, int],
    tcp: tuple[Callable[[str, str], int], cp_model.IntVar] | None = None,
) -> tuple[Arcs, cp_model.IntVar]:
    """A circuit through the nodes with `used` true, over `allowed` arcs, and C ≥ the price of
    every arc it takes (each node leaves by one arc: C ≥ Σ_j price(n, j) · arc_nj). With `tcp`
    (its prices and the `jaccl` literal), `price` holds when jaccl is true, the TCP prices
    when it is false."""
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
    priced: list[tuple[Callable[[str, str], int], list[cp_model.LiteralT]]]
    priced = [(price, [] if tcp is None else [tcp[1]])]
    if tcp is not None:
        priced.append((tcp[0], [~tcp[1]]))
    for fn, when in priced:
        dear: dict[str, list[tuple[int, cp_model.IntVar]]] = {a: [] for a in ids}
        for (a, b), lit in arcs.items():
            if fn(a, b) > bounds[0]:
                dear[a].append((fn(a, b), lit))
        for out in dear.values():
            if out:
                m.add(c >= sum(p * lit for p, lit in out)).only_enforce_if(when)
    return arcs, c


def best_ring(
    ids: list[str], pricing: RingPricing, start: str, seconds: float
) -> tuple[list[str], bool]:
    """The cheapest ring over all of `ids`, from `start`, and whether it is proven cheapest.

    Its backend is the nodes' whatever the ring, and a ring costs its dearest hop, so the
    answer is the lowest price p at which the hops no dearer than p hold a Hamiltonian cycle (`planner.hamiltonian`), each p tried in increasing
    order from the least that gives every node two hops.
    """
    if len(ids) <= 2:
        return [start, *(n for n in ids if n != start)], True
    k, proven = len(ids), True
    deadline = time.perf_counter() + seconds
    backend = pricing.backend(ids)
    pairs = sorted((pricing.arc_ps(k, a, b, backend), a, b) for a in ids for b in ids if a < b)
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
