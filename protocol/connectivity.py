"""Which nodes of a topology can reach each other: the one graph question the contract asks."""

from __future__ import annotations

from collections.abc import Iterable


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
