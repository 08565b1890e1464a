r"""The search over layouts: how many stages, which nodes in each, how many layers each runs,
and the split inside each stage.

A layout is a sequence of disjoint groups g_0 … g_{S-1} (pipeline order, stage 0 holds the
embeddings and the output head) and boundaries 0 = b_0 < … < b_S = L. Its decode time is::

    Σ_s  stage(g_s, [b_s, b_{s+1}), s = 0)  +  Σ_s  transfer(leader(g_s) → g_{s+1 mod S})

where stage(…) is the single-stage optimum of those layers over exactly those nodes — the
CP-SAT model of `planner.solver` with that stage's bytes, ring and fixed time
(`planner.stages`) — and a transfer is zero when S = 1. Modes: `tensor` is S = 1 (the solver
alone); `pipeline` is every layout whose groups are single nodes; `auto` every layout, the
single stage included.

Decomposition (exact over the groups it enumerates):

* S = 1 is `planner.solver.solve` over the whole cluster, exactly as before.
* For S ≥ 2, groups are enumerated: in `pipeline` every node; in `auto` every subset of the
  nodes, up to twins (nodes with the same memory, bandwidth and hop to every other node are
  used in one order only: any layout maps onto one that does), when there are at most
  MAX_GROUPS such subsets; beyond that, single nodes and the runs of consecutive nodes along
  the cluster's cheapest ring (a restriction: the status then cannot be `optimal`).
* Sequences of disjoint groups are searched depth first; a sequence of two groups or more is
  a layout, whose layers are allocated exactly by branch and bound (`planner.layout_alloc`).
  A sequence is extended only while a lower bound on every extension beats the best layout
  known: its groups' fluid prices (`planner.layout_bounds`), the remaining layers at the
  cheapest per-layer bound of any node set still free, its known transfers and the
  cheapest transfer back to stage 0.

The status is `optimal` only when the S = 1 solve was optimal (in `auto`), the group
enumeration was complete, no search was cut short and every stage solved was proven; the
plan returned is then the least decode time over the whole space of layouts of the mode. A
time limit leaves the best layout known with `time_limited`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from planner.context import PlanningContext
from planner.cpsat import GAP_PS
from planner.layout_alloc import Allocation, StagePrices, allocate
from planner.layout_bounds import Bounds, Group
from planner.layout_groups import Candidates, candidate_groups
from planner.solver import solve
from planner.stages import StageSolution, tensor_stage


@dataclass
class Found:
    """The best layout of a mode, and what was proven about it."""

    stages: list[StageSolution] | None
    optimal: bool = False
    time_limited: bool = False
    bound_ps: int | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def cost_ps(self) -> float:
        return float("inf") if not self.stages else _cost(self.stages)


def _cost(stages: list[StageSolution]) -> int:
    return sum(s.objective_ps for s in stages)


@dataclass
class _Best:
    cost_ps: float
    seq: list[Group] | None = None
    ends: list[int] | None = None
    single: Found | None = None
    """The S = 1 plan, while it is the best."""


class _Search:
    def __init__(
        self, ctx: PlanningContext, cands: Candidates, deadline: float, pipeline: bool
    ) -> None:
        self.ctx = ctx
        self.cands = cands
        self.deadline = deadline
        self.bounds = cands.bounds
        self.prices = StagePrices(self.bounds, deadline)
        self.limited = False
        self.allocations: dict[tuple[object, ...], tuple[Allocation | None, float]] = {}
        self.least = 1 if pipeline else 2
        self.allow_unused = ctx.request.constraints.allow_unused_nodes
        self.everyone = set(ctx.cluster.nodes)
        """Fewest stages a layout of the mode has here (one node alone is a pipeline)."""

    def expired(self) -> bool:
        if time.perf_counter() > self.deadline:
            self.limited = True
        return self.limited

    def run(self, best: _Best) -> _Best:
        closing = self.cands.min_transfer * 2 if self.least > 1 else 0
        if self.cands.free_lower_ps(set()) + closing >= best.cost_ps:
            return best  # no layout of two stages or more can beat the best
        self._extend([], set(), 0, best)
        return best

    def _extend(self, seq: list[Group], used: set[str], known_ps: int, best: _Best) -> None:
        for g in self.cands.next_groups(used):
            if self.expired():
                return
            nxt = [*seq, g]
            link = self.bounds.transfer(seq[-1], g) if seq else 0
            known = known_ps + link
            taken = used.union(g.nodes)
            if self._lower(nxt, taken, known) >= best.cost_ps:
                continue
            if len(nxt) >= self.least and (self.allow_unused or taken == self.everyone):
                self._evaluate(nxt, known, best)
            self._extend(nxt, taken, known, best)

    def _lower(self, seq: list[Group], used: set[str], known_ps: int) -> float:
        """No layout starting with `seq` (it alone, or extended) is cheaper than this."""
        if len(seq) >= 2:
            closing = min(self.bounds.transfer(seq[-1], seq[0]), self.cands.min_transfer)
        else:
            closing = self.cands.min_transfer if self.least > 1 else 0
        floor = self.cands.sequence_lower_ps(seq, used)
        return floor + known_ps + closing

    def _allocate(self, seq: list[Group], budget: float) -> Allocation | None:
        """`allocate`, once per sequence of stage signatures: groups alike are priced alike,
        so a sequence of alike groups in another order or on other nodes splits alike."""
        key = tuple(g.signature for g in seq)
        known = self.allocations.get(key)
        if known is not None:
            alloc, tried = known
            if alloc is not None and alloc.cost_ps < budget - GAP_PS:
                return alloc
            if alloc is None and budget <= tried:
                return None
        alloc, complete = allocate(seq, self.prices, budget, self.expired)
        if not complete:
            self.limited = True
        else:
            self.allocations[key] = (alloc, budget)
        return alloc

    def _evaluate(self, seq: list[Group], known_ps: int, best: _Best) -> None:
        transfers = known_ps + _closing(self.bounds, seq)
        alloc = self._allocate(seq, best.cost_ps - transfers)
        if alloc is not None and alloc.cost_ps + transfers < best.cost_ps:
            best.cost_ps = alloc.cost_ps + transfers
            best.seq, best.ends, best.single = list(seq), alloc.bounds, None

    def stages(self, best: _Best) -> list[StageSolution]:
        assert best.seq is not None and best.ends is not None
        out = []
        for s, g in enumerate(best.seq):
            a, b = best.ends[s], best.ends[s + 1]
            stage = self.prices.stage(g, a, b, s == 0)
            assert stage is not None, "a stage priced in the search must solve again"
            out.append(stage)
        return out


def _single(ctx: PlanningContext, seconds: float) -> Found:
    p = replace(ctx.problem(), time_limit_s=seconds)
    solution = solve(p)
    if solution.status == "infeasible":
        return Found(None, time_limited=solution.time_limited)
    stage = tensor_stage(ctx, p, solution)
    return Found([stage], solution.status == "optimal", solution.time_limited, solution.bound_ps)


def search_layouts(ctx: PlanningContext, mode: str, seconds: float) -> Found:
    """The best layout of `mode` (`pipeline` or `auto`) within `seconds`."""
    started = time.perf_counter()
    deadline = started + seconds
    single = _single(ctx, seconds) if mode == "auto" else Found(None, optimal=True)
    cands = candidate_groups(Bounds.of(ctx), pipeline=mode == "pipeline")
    best = _Best(single.cost_ps, single=single if single.stages else None)
    search = _Search(ctx, cands, deadline, mode == "pipeline")
    search.run(best)
    limited = search.limited or single.time_limited
    proven = not limited and cands.complete and not search.prices.unproven
    if best.single is not None:
        return replace(
            best.single,
            optimal=single.optimal and proven,
            time_limited=limited,
            bound_ps=None if not proven else best.single.bound_ps,
        )
    if best.seq is None:
        return Found(None, time_limited=limited)
    stages = search.stages(best)
    cost = _cost(stages) + _transfers(search, best.seq)
    if cost != best.cost_ps:
        raise RuntimeError(f"layout priced {best.cost_ps} ps in the search, {cost} ps solved")
    return Found(stages, proven and single.optimal, limited, cost if proven else None)


def _closing(bounds: Bounds, seq: list[Group]) -> int:
    return bounds.transfer(seq[-1], seq[0]) if len(seq) > 1 else 0


def _transfers(search: _Search, seq: list[Group]) -> int:
    if len(seq) < 2:
        return 0
    return sum(search.bounds.transfer(g, seq[(s + 1) % len(seq)]) for s, g in enumerate(seq))
