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

1. S = 1 is `planner.solver.solve` over the whole cluster, exactly as before (`auto`).
2. A lower bound on every layout of the mode with S ≥ 2 (S ≥ 1 in `pipeline`) over the whole
   space, not only what is enumerated (`planner.layout_proof`): per layer, the cheapest any
   group of k nodes could run it (fluid reads at the k fastest nodes, the cheapest ring k
   nodes could form); stage 0's outer weights; S transfers at the cheapest send. When it
   cannot beat step 1's plan, that plan stands and the search stops.
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

import math
import time
from dataclasses import dataclass, field, replace

from planner.context import PlanningContext
from planner.cpsat import GAP_PS
from planner.layout_alloc import Allocation, StagePrices, allocate
from planner.layout_bounds import Bounds, Group
from planner.layout_groups import Candidates, candidate_groups
from planner.layout_proof import cheapest_send_ps, layouts_lower_ps
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
        self.fewest = cands.min_stages()
        self.everyone = set(ctx.cluster.nodes)
        """Fewest stages a layout of the mode has here (one node alone is a pipeline)."""

    def expired(self) -> bool:
        if time.perf_counter() > self.deadline:
            self.limited = True
        return self.limited

    def run(self, best: _Best) -> _Best:
        stages = max(self.least, self.fewest)
        closing = self.cands.min_transfer * stages if stages > 1 else 0
        if self.cands.free_lower_ps(set()) + closing >= best.cost_ps:
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
            if self._lower(nxt, taken, known) >= best.cost_ps:
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
        alloc = self._allocate(seq, best.cost_ps - transfers)
        if alloc is not None and alloc.cost_ps + transfers < best.cost_ps:
            best.cost_ps = alloc.cost_ps + transfers
            best.seq, best.ends, best.single = list(seq), alloc.bounds, None

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


def _single(ctx: PlanningContext, seconds: float) -> Found:
    p = replace(ctx.problem(), time_limit_s=seconds)
    solution = solve(p)
    if solution.status == "infeasible":
        # Proven: no single stage fits (unless the time limit cut the solve short).
        limited = solution.time_limited
        return Found(None, optimal=not limited, time_limited=limited)
    stage = tensor_stage(ctx, p, solution)
    return Found([stage], solution.status == "optimal", solution.time_limited, solution.bound_ps)


def search_layouts(ctx: PlanningContext, mode: str, seconds: float) -> Found:
    """The best layout of `mode` (`pipeline` or `auto`) within `seconds`."""
    started = time.perf_counter()
    deadline = started + seconds
    pipeline = mode == "pipeline"
    single = _single(ctx, seconds) if not pipeline else Found(None, optimal=True)
    best = _Best(single.cost_ps, single=single if single.stages else None)
    bounds = Bounds.of(ctx)
    least = 1 if pipeline else 2
    floor = layouts_lower_ps(bounds, pipeline, least, cheapest_send_ps(bounds))
    if floor >= best.cost_ps - GAP_PS:
        # No layout of two stages or more can beat the single stage: it stands, proven or not.
        return replace(single, bound_ps=_least(single.bound_ps, floor))
    search = _Search(ctx, candidate_groups(bounds, pipeline), deadline, pipeline)
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
