"""The layers of a fixed sequence of stage groups: the split of [0, L) into contiguous ranges,
one per group in pipeline order, that minimises Σ stage prices, by branch and bound.

Each stage's exact price is the solver's optimum for its group and range (a one-node stage's
is closed-form, `Bounds.single_ps`); its lower bound is `Bounds.lower_ps`. A suffix table of
lower bounds (the cheapest way to finish from any stage and boundary) orders and prunes the
ranges tried, so the ranges solved exactly are only those whose bound can still beat the best
layout known. What this returns is the optimum over all splits of the layers for this group
sequence when nothing was cut short (`Allocation.proven`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from planner.cpsat import GAP_PS
from planner.layout_bounds import Bounds, Group
from planner.stages import LayoutSplit, StageSolution, solve_stage

INF = float("inf")


@dataclass
class StagePrices:
    """Exact stage prices, solved once per (group, range, first)."""

    bounds: Bounds
    deadline: float
    solved: dict[tuple[tuple[str, ...], int, int, bool], StageSolution | None] = field(
        default_factory=dict
    )
    unproven: bool = False
    """Some stage solve was cut short by the time limit (its price may not be the least)."""

    def exact(self, g: Group, a: int, b: int, first: bool) -> int | None:
        if len(g.nodes) == 1:
            return self.bounds.single_ps(g.nodes[0], a, b, first)
        stage = self.stage(g, a, b, first)
        return None if stage is None else stage.objective_ps

    def stage(self, g: Group, a: int, b: int, first: bool) -> StageSolution | None:
        key = (g.nodes, a, b, first)
        if key not in self.solved:
            left = max(self.deadline - time.perf_counter(), 0.001)
            ctx = self.bounds.ctx
            found = solve_stage(ctx, list(g.nodes), (a, b), first, LayoutSplit.OPTIMAL, left)
            self.unproven = self.unproven or (found is not None and not found.optimal)
            self.solved[key] = found
        return self.solved[key]


@dataclass
class Allocation:
    cost_ps: int
    bounds: list[int]
    """Stage boundaries: stage s runs layers [bounds[s], bounds[s + 1])."""


@dataclass
class _Table:
    """Per stage: lower bounds [a, b] of that stage, and the least bound to finish from stage
    s + 1 at each boundary."""

    lower: list[np.ndarray]
    suffix: list[np.ndarray]


def _suffix(seq: list[Group], bounds: Bounds) -> _Table:
    """suffix[s][a]: the least lower bound of stages s.. over layers [a, L) (inf: none fits)."""
    n, count = bounds.layers, len(seq)
    suffix = [np.full(n + 1, INF) for _ in range(count + 1)]
    suffix[count][n] = 0.0
    lower = []
    for s, g in enumerate(seq):
        bound, fits = bounds.lower_matrix(g, s == 0)
        lower.append(np.where(fits, bound, INF))
    for s in range(count - 1, -1, -1):
        suffix[s] = np.min(lower[s] + suffix[s + 1][None, :], axis=1)
    return _Table(lower, suffix)


def allocate(
    seq: list[Group],
    prices: StagePrices,
    budget_ps: float,
    expired: Callable[[], bool],
) -> tuple[Allocation | None, bool]:
    """The cheapest split of the layers over `seq` costing less than `budget_ps` − GAP_PS
    (None if none does), and whether the search was complete."""
    table = _suffix(seq, prices.bounds)
    if table.suffix[0][0] >= budget_ps - GAP_PS:
        return None, True
    best: list[Allocation] = []
    limit = [budget_ps - GAP_PS]
    complete = [True]

    def walk(s: int, a: int, acc: int, ends: list[int]) -> None:
        if s == len(seq):
            if acc < limit[0]:
                limit[0] = acc - GAP_PS  # a later split must beat this one by the gap
                best[:] = [Allocation(acc, [0, *ends])]
            return
        # Where stage s may end, best bound first (a stable order: ties by fewer layers).
        room = table.lower[s][a] + table.suffix[s + 1]
        for b in np.argsort(room, kind="stable"):
            if acc + room[b] >= limit[0]:
                return
            if expired():
                complete[0] = False
                return
            price = prices.exact(seq[s], a, int(b), s == 0)
            if price is None or acc + price + table.suffix[s + 1][b] >= limit[0]:
                continue
            walk(s + 1, int(b), acc + price, [*ends, int(b)])

    walk(0, 0, 0, [])
    return (best[0] if best else None), complete[0]
