"""Which nodes of a topology can reach each other, and which of them JACCL can join: the graph
questions the contract asks."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable
from typing import Any, Protocol

RDMA_KIND = "rdma"


class LinkEnds(Protocol):
    @property
    def a(self) -> str: ...
    @property
    def b(self) -> str: ...
    @property
    def kind(self) -> str: ...


def components(node_ids: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[set[str]]:
    """Connected groups of nodes, each sorted group in order of its smallest sorted members."""
    parent = {n: n for n in node_ids}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in edges:
        parent[root(a)] = root(b)
    groups: dict[str, set[str]] = {}
    for n in parent:
        groups.setdefault(root(n), set()).add(n)
    return sorted(groups.values(), key=lambda g: sorted(g))


def full_mesh(node_ids: Iterable[object], kind: str = "rdma") -> list[dict[str, Any]]:
    """A link of `kind` between every pair of nodes, as a topology's `links` list."""
    ids = [str(n) for n in node_ids]
    return [{"a": a, "b": b, "kind": kind} for a, b in itertools.combinations(ids, 2)]


def rdma_pairs(links: Iterable[LinkEnds]) -> frozenset[frozenset[str]]:
    """The node pairs joined by a direct RDMA link."""
    return frozenset(frozenset((link.a, link.b)) for link in links if link.kind == RDMA_KIND)


def runs_jaccl(nodes: Iterable[str], rdma: Collection[frozenset[str]]) -> bool:
    """Whether a group of these nodes runs JACCL: its mesh needs a direct RDMA link between
    every pair of them. Any other group of two or more runs MLX's TCP ring, over whatever
    links there are (a group of one talks to nobody). The service picks a deployment's backend
    by this, and the planner prices every ring by it, so a plan costs what will run."""
    ids = sorted(set(nodes))
    return len(ids) >= 2 and all(frozenset(p) in rdma for p in itertools.combinations(ids, 2))
