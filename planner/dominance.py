"""Which node can stand in for which: the symmetry the CP-SAT model breaks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from planner.problem import NodeInput


def dominance(
    nodes: list[NodeInput],
    allowed: Callable[[str, str], bool],
    price: Callable[[str, str], int] | None,
) -> list[tuple[int, int, bool]]:
    """(i, j, mutual) for every node i that can take over whatever node j holds: no less
    memory or bandwidth, and (with ring `price`s) an allowed arc no dearer to every other
    node. A plan using j but not i is then never better than one with j's share on i; mutual
    when that holds both ways (the two are interchangeable)."""
    ids, n = [v.id for v in nodes], len(nodes)
    cost = np.zeros((n, n), dtype=np.int64)
    if price is not None:
        cost[:] = np.iinfo(np.int64).max
        for i, a in enumerate(ids):
            for j, b in enumerate(ids):
                if a != b and allowed(a, b):
                    cost[i, j] = price(a, b)
    cheaper = cost[:, None, :] <= cost[None, :, :]
    idx = np.arange(n)
    # What i and j cost each other does not matter: the arc between them stays.
    cheaper[idx[:, None], idx[None, :], idx[:, None]] = True
    cheaper[idx[:, None], idx[None, :], idx[None, :]] = True
    budget = np.array([v.budget for v in nodes])
    bw = np.array([v.bandwidth_gbps for v in nodes])
    dom = cheaper.all(axis=2) & (budget[:, None] >= budget) & (bw[:, None] >= bw)
    np.fill_diagonal(dom, False)
    return [(int(i), int(j), bool(dom[j, i])) for i, j in zip(*np.nonzero(dom))]
