r"""The search over layouts: how many stages, which nodes in each, how many layers each runs,
and the split inside each stage.

A layout is a sequence of disjoint groups g_0 … g_{S-1} (pipeline order; stage 0 holds the
embeddings and the output head) and boundaries 0 = b_0 < … < b_S = L. Its decode time is::

    Σ_s  stage(g_s, [b_s, b_{s+1}), s = 0)  +  Σ_s  transfer(g_s → g_{s+1 mod S})

where stage(…) is the single-stage optimum of those layers over exactly those nodes — the
CP-SAT model of `planner.solver` with that stage's bytes, ring and fixed time
(`planner.stages`) — and transfer(g → h) the cheapest over g's nodes of the dearest send to
h's nodes (zero when S = 1). Modes: `tensor` is S = 1 (the solver alone); `pipeline` is every
layout whose groups are single nodes (one node alone included); `auto` every layout.

Decomposition, exact over what it enumerates, proven against a bound over everything:

0. Seeds (`planner.layout_seeds`: even and memory-proportional pipelines over the cheapest
   ring, the same over the fewest fastest nodes, a stage per RDMA island) are priced first
   with the search's own prices, even past the time limit, so a search cut short returns at
   worst the best of them; a seed found first yields to a layout of the same price found by
   the search, so a search that finishes returns what it would without them. Seeds change
   what is found first, never what is proven.
1. S = 1 is `planner.solver.solve` over the whole cluster (`auto`), asked only for splits no
   dearer than the best seed (`Problem.cutoff_ps`: none is a proof that no single stage is).
2. A lower bound on every layout of the mode with S ≥ 2 (S ≥ 1 in `pipeline`) over the whole
   space, not only what is enumerated (`planner.layout_proof`): per layer, the cheapest any
   group of k nodes could run it (fluid reads at the k fastest nodes, the cheapest ring k
   nodes could form); stage 0's outer weights; S transfers at the cheapest send. When it
   cannot beat the best plan of steps 0 and 1, that plan stands and the search stops.
3. Groups (`planner.layout_groups`): nodes fall into twin classes (same memory, bandwidth and
   hop to every other node; swapping twins changes no price). When the classes are few
   (EXACT_CLASSES) and their count vectors few (MAX_GROUPS), every group up to twins is
   enumerated — every node in `pipeline` — and a layout takes the lowest free twins first:
   complete. Otherwise runs of consecutive nodes along the cluster's cheapest ring, each
   stage's run starting where the previous one's ends (single nodes in `pipeline`): a
   restriction.
4. Sequences of groups are searched depth first, cheapest per layer first. A sequence is
   extended only while a lower bound on it and every extension beats the best layout known:
   each group's fluid rate per layer within its memory, the layers left at the cheapest rate
   of any free group, the transfers known, and one transfer per stage still needed (memory
   sets the fewest stages) and back to stage 0.
5. Each sequence's layers are allocated by branch and bound over contiguous ranges
   (`planner.layout_alloc`): exact stage prices (closed form for one node, the solver for
   more; memoised by what a price depends on: the group's memory, bandwidths and ring price,
   stage 0 or not, and how many layers of each kind), pruned by a suffix table of fluid
   bounds. Alike sequences (the same signatures in order) are allocated once.

Status: `optimal` only when step 1 was proven (in `auto`), no search was cut short, every
stage price was proven, and either the enumeration was complete or step 2's bound is no less
than the plan returned; the plan is then the least decode time over the whole space of
layouts of the mode (within `planner.cpsat.GAP_PS`). A time limit leaves the best layout known
with `time_limited`; otherwise the plan is `feasible` and the bound is reported.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field, replace
from functools import cached_property

from planner.context import PlanningContext
from planner.cpsat import GAP_PS
from planner.layout_alloc import Allocation, StagePrices, allocate
from planner.layout_bounds import Bounds, Group
from planner.layout_groups import RING_ORDER_S, Candidates, candidate_groups
from planner.layout_proof import cheapest_send_ps, layouts_lower_ps
from planner.layout_seeds import seed_layouts
from planner.solver import solve
from planner.stages import StageLayout, StageSolution, tensor_stage


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
    seeded: bool = False
    """The best is a seed (or a seed's split): the search may replace it by a layout of the
    same price, so that a search that finishes returns what it would have without seeds."""

    @property
    def beat(self) -> float:
        """A layout the search finds replaces the best when it costs less than this."""
        return self.cost_ps + GAP_PS + 1 if self.seeded else self.cost_ps

    def take(self, cost: int, seq: list[Group], ends: list[int], seeded: bool = False) -> None:
        self.cost_ps, self.seq, self.ends = cost, list(seq), ends
        self.single, self.seeded = None, seeded


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

    @cached_property
    def fewest(self) -> int:
        """Fewest stages a layout of the mode has here (one node alone is a pipeline): only
        the search needs it, and it builds every group of the family."""
        return self.cands.min_stages()

    def expired(self) -> bool:
        if time.perf_counter() > self.deadline:
            self.limited = True
        return self.limited

    def run(self, best: _Best) -> _Best:
        stages = max(self.least, self.fewest)
        closing = self.cands.min_transfer * stages if stages > 1 else 0
        if self.cands.free_lower_ps(set()) + closing >= best.beat:
            return best  # no layout of two stages or more can beat the best
        self._extend([], set(), 0, best)
        return best

    def _extend(self, seq: list[Group], used: set[str], known_ps: int, best: _Best) -> None:
        for g in self.cands.next_groups(used, seq[-1] if seq else None):
            if self.expired():
                return
            nxt = [*seq, g]
            link = self.bounds.transfer(seq[-1], g) if seq else 0
            known = known_ps + link
            taken = used.union(g.nodes)
            if self._lower(nxt, taken, known) >= best.beat:
                continue
            if len(nxt) >= self.least and (self.allow_unused or taken == self.everyone):
                self._evaluate(nxt, known, best)
            self._extend(nxt, taken, known, best)

    def _lower(self, seq: list[Group], used: set[str], known_ps: int) -> float:
        """No layout starting with `seq` (it alone, or extended) is cheaper than this."""
        m, cheapest = len(seq), self.cands.min_transfer
        # Stopping here closes the cycle; going on costs a transfer per stage added and one
        # back, and a layout has at least `fewest` stages.
        stop = _closing(self.bounds, seq) if m >= max(self.least, self.fewest) else math.inf
        more = (max(self.fewest, m + 1, 2) - m + 1) * cheapest
        floor = self.cands.sequence_lower_ps(seq, used)
        return floor + known_ps + min(stop, more)

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
        alloc = self._allocate(seq, best.beat - transfers)
        if alloc is not None and alloc.cost_ps + transfers < best.beat:
            best.take(alloc.cost_ps + transfers, seq, alloc.bounds)

    def seed(self, best: _Best, layouts: list[list[StageLayout]]) -> None:
        """Seeds (`planner.layout_seeds`) priced exactly, in order, each that beats the best
        known becoming it; a seed whose bound cannot is not solved. (Their layers are not
        split afresh here: `allocate` over many stages costs more than a small cluster's whole
        search, which splits them anyway.)"""
        for layout in layouts:
            if len(layout) < self.least:
                continue
            seq = [self.cands.group(tuple(sorted(s.nodes))) for s in layout]
            ends = list(itertools.accumulate((s.layers for s in layout), initial=0))
            transfers = _transfers(self, seq)
            lower = transfers + sum(
                self.bounds.capped_ps(g, ends[s], ends[s + 1], s == 0) for s, g in enumerate(seq)
            )
            if lower >= best.beat:
                continue
            cost = self._price(seq, ends)
            if cost is not None and cost + transfers < best.beat:
                best.take(cost + transfers, seq, ends, seeded=True)

    def _price(self, seq: list[Group], ends: list[int]) -> int | None:
        """The stages' prices by the search's own (None: some stage does not fit)."""
        total = 0
        for s, g in enumerate(seq):
            price = self.prices.exact(g, ends[s], ends[s + 1], s == 0)
            if price is None:
                return None
            total += price
        return total

    def stages(self, best: _Best) -> list[StageSolution] | None:
        """The chosen layout's stages on its own nodes. Alike groups share one price in the
        search, so a stage may be solved here for the first time; past the time limit that
        solve can fail (None), and the caller falls back to the best plan it still has."""
        assert best.seq is not None and best.ends is not None
        out = []
        for s, g in enumerate(best.seq):
            a, b = best.ends[s], best.ends[s + 1]
            stage = self.prices.polished(g, a, b, s == 0)
            if stage is None:
                return None
            out.append(stage)
        return out


def _single(ctx: PlanningContext, seconds: float, cutoff: float) -> Found:
    """The S = 1 plan no dearer than `cutoff` (the best layout known), or none."""
    below = int(cutoff) if math.isfinite(cutoff) else None
    p = replace(ctx.problem(), time_limit_s=seconds, cutoff_ps=below)
    solution = solve(p)
    if solution.status == "infeasible":
        # Proven: no single stage fits, or none beats the cutoff (unless the time limit cut
        # the solve short).
        limited = solution.time_limited
        bound = below if not limited else None  # every single stage costs more than this
        return Found(None, optimal=not limited, time_limited=limited, bound_ps=bound)
    stage = tensor_stage(ctx, p, solution)
    return Found([stage], solution.status == "optimal", solution.time_limited, solution.bound_ps)


def search_layouts(ctx: PlanningContext, mode: str, seconds: float) -> Found:
    """The best layout of `mode` (`pipeline` or `auto`) within `seconds`."""
    deadline = time.perf_counter() + seconds
    pipeline = mode == "pipeline"
    bounds = Bounds.of(ctx)
    least = 1 if pipeline else 2
    floor = layouts_lower_ps(bounds, pipeline, least, cheapest_send_ps(bounds))
    search = _Search(ctx, candidate_groups(bounds, pipeline), deadline, pipeline)
    best = _Best(math.inf)
    seeds = []
    if math.isfinite(floor):
        seeds = seed_layouts(ctx, search.cands.order or _ring_order(ctx), pipeline)
    # Pipelines first (closed-form prices): a time limit then returns at worst the best of
    # them, and the single stage's solve only looks for splits that beat them. Hybrids'
    # stages take the solver, so they come after the single stage.
    alone = [s for s in seeds if all(len(stage.nodes) == 1 for stage in s)]
    search.seed(best, alone)
    single = Found(None, optimal=True)
    if not pipeline:
        single = _single(ctx, max(deadline - time.perf_counter(), 0.001), best.cost_ps)
        if single.stages and single.cost_ps <= best.cost_ps:
            best = _Best(single.cost_ps, single=single)
    search.seed(best, [s for s in seeds if s not in alone])
    if floor < best.beat - GAP_PS:
        search.run(best)
    limited = search.limited or single.time_limited
    # A restricted family proves nothing, unless no layout at all can beat the plan.
    covered = search.cands.complete or floor >= best.cost_ps - GAP_PS
    proven = not limited and covered and not search.prices.unproven and single.optimal
    bound = _least(single.bound_ps, floor) if not proven else None
    if best.single is not None:
        return replace(best.single, optimal=proven, time_limited=limited, bound_ps=bound)
    if best.seq is None:
        return Found(None, optimal=proven, time_limited=limited)
    stages = search.stages(best)
    if stages is None:
        fallback = single if single.stages else Found(None, optimal=False)
        return replace(fallback, optimal=False, time_limited=True, bound_ps=bound)
    cost = _cost(stages) + _transfers(search, best.seq)
    if cost != best.cost_ps and proven:
        # A proven stage's price depends only on what its signature holds.
        raise RuntimeError(f"layout priced {best.cost_ps} ps in the search, {cost} ps solved")
    return Found(stages, proven, limited, cost if proven else bound)


def _ring_order(ctx: PlanningContext) -> list[str]:
    """The cluster's cheapest ring over every node (the seeds' order)."""
    return ctx.cluster.ring(sorted(ctx.cluster.nodes), RING_ORDER_S)


def _least(a: int | None, b: float) -> int | None:
    """The lower of two bounds (None: no bound known)."""
    if a is None or not math.isfinite(b):
        return a
    return min(a, math.floor(b))


def _closing(bounds: Bounds, seq: list[Group]) -> int:
    return bounds.transfer(seq[-1], seq[0]) if len(seq) > 1 else 0


def _transfers(search: _Search, seq: list[Group]) -> int:
    if len(seq) < 2:
        return 0
    count = len(seq)
    return sum(search.bounds.transfer(g, seq[(s + 1) % count]) for s, g in enumerate(seq))
