"""Which nodes of a topology can reach each other: the one graph question the contract asks."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any


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
