r"""The CP-SAT model of an asymmetric tensor-parallel split, with its all-reduce ring.

A plan's shape, k used nodes from a pool P whose ring's dearest hop is of level L, is
enumerated outside CP-SAT; for each shape a small model assigns whole units to nodes and picks
the ring. Shapes: every single node and every pair that can hold the model (alike nodes and
pairs once), and for k ≥ 3, for each level L present among the nodes, each biconnected block
of the graph of hops within L as a pool (a ring lies inside one block; a block that is one
cycle holds only a ring of its own size). Levels bucket the effective hops (direct or routed)
by price; every arc is still priced exactly. The model of one shape (all coefficients
precomputed integers; no products of variables)::

    nodes n ∈ P_kL      (each holds the replicated bytes R_w + O)
    units u ∈ {q_head, kv_head, ffn_block, expert, lin_k_head}
    used_n ∈ {0,1}
    kvw_n ∈ [0, cap_n]                      whole KV groups on n (q heads = G · kvw_n)
    ffn_n, exp_n, lin_n ∈ [0, cap_nu]       FFN blocks, whole experts, linear-attention key heads
                                            (cap = how many n's budget holds next to R_w + O)
    arc_nm ∈ {0,1}                          the ring goes n → m (only when level(n,m) ≤ L)
    -- only when k exceeds the KV heads (KV replication):
    part_n ∈ {0,1}                          n holds part of one KV group, with its KV head copied
    y_nj ∈ {0,1}, h_nj ∈ [0, G − 1]         n's share of split-group slot j < min(n_kv, ⌊k/2⌋)
    split_j ∈ {0,1}                         slot j is a KV group split over two nodes or more

    partition     Σ_n ffn_n = F,  Σ_n exp_n = E,  Σ_n lin_n = K,  Σ_n kvw_n + Σ_j split_j = n_kv
                  Σ_n h_nj = G · split_j,  Σ_n y_nj ≥ 2 · split_j
    one group     Σ_j y_nj = part_n,  y_nj ≤ h_nj ≤ (G − 1) · y_nj,  kvw_n ≤ n_kv · (1 − part_n)
    used          Σ_n used_n = k,  every count of n ≤ its total · used_n
    memory        (R_w + O) · used_n + Σ_u (w_u + c_u) · x_nu  ≤  B_n
    decode time   t_n = ρ_n · used_n + Σ_u τ_nu · x_nu  ≤  T          (τ = bytes read / bandwidth)
                  T ≥ F_kL,  T + C ≤ min(G_kL, cutoff)
    ring          AddCircuit over {arc_nm} ∪ {self-loop_n = ¬used_n}   (a Hamiltonian cycle on
                  the used nodes);  Σ_{level(n,m) = L} arc_nm ≥ 1  (L > 0; lower rings are the
                  lower levels' shapes);  C ≥ Σ_m a_k(n,m) · arc_nm  for every n
    backend       in a pool mixing RDMA pairs and others (k ≥ 3), jaccl ∈ {0,1}: jaccl ⇒ no two
                  used nodes without a direct RDMA link; C ≥ the arcs' JACCL prices if jaccl,
                  their TCP prices if not (`planner.backends`; elsewhere one backend runs)
    symmetry      used_a ≥ used_b where a dominates b (no less memory and bandwidth, an arc no
                  dearer to every other node); t_a ≥ t_b for interchangeable a before b;
                  slot j's first node precedes slot j + 1's: y_{n,j+1} ≤ Σ_{m before n} y_mj
    minimise      T + C                                   (the plan's decode time)

`a_k(n,m)` is what hop n → m costs a ring of k ranks at the backend the used nodes run
(`protocol.connectivity.runs_jaccl`, the service's rule; a pair's own: JACCL over a direct RDMA
link, else TCP): `planner.topology.ring_allreduce_us` of
a ring made of that hop alone, per token. That function prices every ring as its dearest hop's
such price, so C at the optimum is exactly the chosen ring's all-reduce time, and the plan's
`ring` is the circuit the solver chose (rank 0 the used node with the most memory). When every
pair of the pool is joined within L and the level-L hops all cost the same, the dearest, every
ring of the shape costs that: C is that constant, with no circuit, and the ring over the used
nodes is then the cheapest by `planner.ring.best_ring`, priced exactly (one of cheaper hops
only is also a lower level's plan). The plan's decode time is the slowest rank plus its ring's
price, which is the objective at the optimum. `F_kL` is the fluid bound, the k fastest pool
nodes sharing the bytes read perfectly, and `G_kL` a greedy split (largest units first, each
to the node that would finish it soonest, then units moved or traded off the slowest node while
that helps) over k nodes grown from the fastest by cheapest insertion into a ring, plus that
ring: an upper bound and the search's hint (a G_kL ring of a lower level still bounds the best
plan, which that level's shape holds). Optimality is proven to within `planner.cpsat.GAP_PS`
(under a nanosecond a token, below the plan's reported precision).

Search: shapes are tried in increasing lower bound F_kL + min a_k over level-L hops. Each model
must beat the best plan so far (`cutoff`; a shape with fewer nodes than the best may tie it),
and shapes whose bound cannot are skipped, so among the fastest plans the one with the fewest
nodes wins. The best shape's model then keeps T + C at the optimum and maximises the free
memory on the smallest node, when that node is used at all (under a small deterministic-time
budget: it only polishes an optimal plan). Whole KV groups per node (no `part`, `y`, `h`,
`split`) while k ≤ n_kv; the replicated form only for k > n_kv. The status is `optimal` only
when every shape that could beat the plan was solved to optimality; a time limit leaves the
best plan found, `feasible`, with the lowest bound left open. Feasibility alone (for
diagnosis) asks the same models over a range of k, with no times and no ring: whole groups,
then replicated.

The pieces live beside this module: `planner.problem` (nodes, unit costs, the fluid bound),
`planner.shapes` (the enumeration of shapes), `planner.model` (one shape's CP-SAT model),
`planner.ring` (the circuit and its pricing), `planner.hamiltonian` (rings over a fixed set),
`planner.dominance` (the symmetry) and `planner.greedy` (the greedy split G_kL).
"""

from __future__ import annotations

import math
import time

from ortools.sat.python import cp_model

from planner.costs import Unit
from planner.cpsat import SEED, WORKERS
from planner.model import SplitModel
from planner.problem import Problem, Solution, able_nodes
from planner.shapes import Shape, shapes

__all__ = ["FORMULATION", "SEED", "WORKERS", "solve"]

SPLIT_BOUND_DETERMINISTIC_S = 0.1  # a bound that helps, not a proof: keep it short
FORMULATION = 4
"""Bumped whenever the same request can get a different plan: it is part of every plan_id."""


def _feasible(problem: Problem, started: float) -> Solution:
    """Any split at all: whole groups on any number of nodes, else with KV replication."""
    nodes, n_kv = able_nodes(problem), problem.costs.total_units[Unit.KV_HEAD]
    lo = 1 if problem.allow_unused else len(problem.nodes)
    limited = False
    for replicate in (False, True):
        counts = range(max(lo, n_kv + 1) if replicate else lo, len(nodes) + 1)
        if not counts:
            continue
        left = max(problem.time_limit_s - (time.perf_counter() - started), 0.05)
        model = SplitModel(problem, nodes, counts, None, replicate)
        status, solver = model.solve(left)
        if status in ("OPTIMAL", "FEASIBLE"):
            return Solution(status="feasible", shares=model.shares(solver))
        limited = limited or status == "UNKNOWN"
    return Solution(
        status="infeasible",
        wall_ms=(time.perf_counter() - started) * 1e3,
        time_limited=limited,
    )


def _model(
    problem: Problem, shape: Shape, lower: int, cutoff: int | None, ring_ps: int | None
) -> SplitModel:
    """The shape's CP-SAT model (with a constant all-reduce `ring_ps`, or a circuit)."""
    n_kv = problem.costs.total_units[Unit.KV_HEAD]
    k = shape.k
    return SplitModel(
        problem, shape.pool, range(k, k + 1), shape.level, k > n_kv, lower, cutoff, ring_ps
    )


def _split_bound(problem: Problem, shape: Shape, cutoff: int | None, seconds: float) -> int | None:
    """A lower bound on the slowest rank of any split over k nodes of the shape's pool, the
    ring aside: that split's own optimum (as good a bound as the fluid one at worst, and exact
    when the pool's nodes are alike, which a ring of them cannot tell apart). None when no
    such split fits, or none leaves room to beat `cutoff` with the shape's cheapest ring."""
    ring_floor = shape.bound_ps - shape.lower_ps
    floor_cutoff = None if cutoff is None else cutoff - ring_floor
    model = _model(problem, shape, shape.lower_ps, floor_cutoff, ring_ps=0)
    status, solver = model.solve(seconds, min(seconds, SPLIT_BOUND_DETERMINISTIC_S))
    if status == "INFEASIBLE":
        return None
    # Proven or not, the search's bound is a bound: a short search is enough to help.
    bound = solver.best_objective_bound
    return max(shape.lower_ps, math.ceil(bound)) if math.isfinite(bound) else shape.lower_ps


def solve(problem: Problem) -> Solution:
    """Try (k, level) shapes in order of their lower bound; each must beat the best so far."""
    started = time.perf_counter()
    if problem.feasibility_only:
        return _feasible(problem, started)
    able = able_nodes(problem)
    if not problem.allow_unused and len(able) < len(problem.nodes):
        return Solution(status="infeasible", wall_ms=(time.perf_counter() - started) * 1e3)
    best: tuple[int, int] | None = None  # (T + C, k)
    found: tuple[SplitModel, cp_model.CpSolver] | None = None
    open_bounds: list[int] = []  # lower bounds of shapes a time limit left unresolved
    for shape in shapes(problem, able):
        if best is not None and (shape.bound_ps, shape.k) >= best:
            continue
        left = problem.time_limit_s - (time.perf_counter() - started)
        if left <= 0:
            open_bounds.append(shape.bound_ps)
            continue
        # Beat the best plan so far; with fewer nodes, tying it is enough.
        cutoff = None if best is None else best[0] - (1 if shape.k >= best[1] else 0)
        lower = _split_bound(problem, shape, cutoff, left) if shape.ring_ps is None else 0
        if lower is None:
            continue  # no k nodes of the pool hold the model, or none beats the best so far
        left = problem.time_limit_s - (time.perf_counter() - started)
        model = _model(problem, shape, max(shape.lower_ps, lower), cutoff, shape.ring_ps)
        status, solver = model.solve(max(left, 0.001))
        if status == "FEASIBLE":
            open_bounds.append(max(shape.bound_ps, math.ceil(solver.best_objective_bound)))
        elif status == "UNKNOWN":
            open_bounds.append(shape.bound_ps)
        if status in ("OPTIMAL", "FEASIBLE"):
            best = (model.outcome(solver, left)[1], shape.k)
            found = (model, solver)
    limited = bool(open_bounds)
    if best is None or found is None:
        wall = (time.perf_counter() - started) * 1e3
        return Solution(status="infeasible", wall_ms=wall, time_limited=limited)
    model, solver = found
    left = max(problem.time_limit_s - (time.perf_counter() - started), 0.05)
    final = model.tie_break(best[0], solver, left) if problem.polish else solver
    ring, objective = model.outcome(final, left)
    return Solution(
        status="feasible" if limited else "optimal",
        shares=model.shares(final),
        ring=ring,
        objective_ps=objective,
        bound_ps=min([objective, *open_bounds]),
        wall_ms=(time.perf_counter() - started) * 1e3,
        time_limited=limited,
    )
