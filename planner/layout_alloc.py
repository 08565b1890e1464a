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

from planner.calibration import effective_bandwidth_gbps
from planner.cpsat import GAP_PS
from planner.layout_bounds import Bounds, Group
from planner.problem import PS_PER_NS
from planner.stages import LayoutSplit, StageSolution, solve_stage

INF = float("inf")
ROUNDINGS = 4  # integer coefficients besides the units': replicated read, fixed time, ring
POLISH_S = 0.1  # at least this for the chosen stages' polish, whatever the search left


@dataclass
class StagePrices:
    """Exact stage prices, solved once per (group, range, first)."""

    bounds: Bounds
    deadline: float
    solved: dict[tuple[tuple[str, ...], int, int, bool], StageSolution | None] = field(
        default_factory=dict
    )
    prices: dict[tuple[object, ...], int | None] = field(default_factory=dict)
    known: dict[tuple[object, ...], list[tuple[int, int]]] = field(default_factory=dict)
    """(layers, price) solved so far by (signature, stage 0 or not), one kind of layer only."""
    """By what a price depends on (`Group.signature`, stage 0 or not, `Bounds.content`)."""
    unproven: bool = False
    """Some stage solve was cut short by the time limit (its price may not be the least)."""

    def exact(self, g: Group, a: int, b: int, first: bool) -> int | None:
        if len(g.nodes) == 1:
            return self.bounds.single_ps(g.nodes[0], a, b, first)
        key = (g.signature, first, self.bounds.content(a, b))
        if key not in self.prices:
            stage = self.stage(g, a, b, first)
            self.prices[key] = None if stage is None else stage.objective_ps
            if stage is not None and len(key[2]) == 1:
                self.known.setdefault(key[:2], []).append((b - a, stage.objective_ps))
        return self.prices[key]

    def known_lower(self, g: Group, a: int, b: int, first: bool) -> float:
        """A bound from prices solved already, for models of one kind of layer. A stage's
        price is its slowest rank's time, c × its time per layer (+ on stage 0 the outer
        weights' read, at most `outer`), plus c × its all-reduces. The split that is best for
        c' ≥ c layers also splits c (less memory), so per layer c' layers never cost less
        than c did, but for the rounding of each integer coefficient (a picosecond each at
        most: `slack`) and, on stage 0, the outer read that does not grow with c."""
        count, found = b - a, 0.0
        slack = sum(self.bounds.ctx.costs.total_units.values()) + ROUNDINGS
        outer = 0.0
        if first:
            slowest = effective_bandwidth_gbps(min(g.speeds))
            outer = self.bounds.outer_read * PS_PER_NS / slowest + 1
        for fewer, price in self.known.get((g.signature, first), []):
            if fewer <= count:
                scale = count / fewer
                found = max(found, price, (price - slack) * scale - (scale - 1) * outer)
        return found

    def polished(self, g: Group, a: int, b: int, first: bool) -> StageSolution | None:
        """The stage as a plan's stage (`Problem.polish`): its price unchanged, or the stage
        as priced when the polish does not finish."""
        priced = self.stage(g, a, b, first, POLISH_S)
        if priced is None or len(g.nodes) == 1:
            return priced
        left = max(self.deadline - time.perf_counter(), POLISH_S)
        ctx, split = self.bounds.ctx, LayoutSplit.OPTIMAL
        found = solve_stage(ctx, list(g.nodes), (a, b), first, split, left)
        same = found is not None and found.objective_ps == priced.objective_ps
        return found if same else priced

    def stage(
        self, g: Group, a: int, b: int, first: bool, at_least_s: float = 0.001
    ) -> StageSolution | None:
        """The stage solved for its price (memoised), with at least `at_least_s` to solve it."""
        key = (g.nodes, a, b, first)
        if key not in self.solved:
            left = max(self.deadline - time.perf_counter(), at_least_s)
            ctx = self.bounds.ctx
            split = LayoutSplit.OPTIMAL
            found = solve_stage(ctx, list(g.nodes), (a, b), first, split, left, polish=False)
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
        # Where stage s may end, best bound first; the bounds sharpen as prices are solved,
        # so the next end is chosen afresh each time (ties: fewer layers).
        fluid = table.lower[s][a] + table.suffix[s + 1]
        left = {int(b) for b in np.nonzero(np.isfinite(fluid))[0]}
        while left:
            if expired():
                complete[0] = False
                return
            bound, b = min((sharpest(s, a, b, float(fluid[b])), b) for b in left)
            if acc + bound >= limit[0]:
                return
            left.discard(b)
            price = prices.exact(seq[s], a, b, s == 0)
            if price is None or acc + price + rest(s + 1, b) >= limit[0]:
                continue
            walk(s + 1, b, acc + price, [*ends, b])

    def sharpest(s: int, a: int, b: int, fluid: float) -> float:
        """The best bound known on stage s over [a, b) and the stages after it."""
        return max(fluid, stage_lower(s, a, b) + rest(s + 1, b))

    def stage_lower(s: int, a: int, b: int) -> float:
        """Stage s over [a, b): its memory-capped bound, or what prices solved say."""
        g, first = seq[s], s == 0
        return max(prices.bounds.capped_ps(g, a, b, first), prices.known_lower(g, a, b, first))

    def rest(s: int, b: int) -> float:
        """Stages s.. from boundary b at least: the suffix table, and for the last stage
        alone also what prices already solved say."""
        floor = float(table.suffix[s][b])
        if s == len(seq) - 1 and b < prices.bounds.layers:
            floor = max(floor, stage_lower(s, b, prices.bounds.layers))
        return floor

    walk(0, 0, 0, [])
    return (best[0] if best else None), complete[0]
