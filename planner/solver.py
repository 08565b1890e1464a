r"""The CP-SAT model of an asymmetric tensor-parallel split.

A plan's shape, k used nodes from a pool P with a ring of level L, is enumerated outside
CP-SAT; for each shape a small model assigns whole units to nodes. Shapes: every single node
and every pair that can hold the model (a pair at the cheapest level its link allows; alike
nodes and pairs once), and for k ≥ 3 each
level L with the pool of nodes that have two neighbours within it. The model of one shape
(all coefficients precomputed integers; no products of variables)::

    nodes n ∈ P_kL      (each holds the replicated bytes R_w + O)
    units u ∈ {q_head, kv_head, ffn_block, expert, lin_k_head}
    used_n ∈ {0,1}
    kvw_n ∈ [0, cap_n]                      whole KV groups on n (q heads = G · kvw_n)
    ffn_n, exp_n, lin_n ∈ [0, cap_nu]       FFN blocks, whole experts, linear-attention key heads
                                            (cap = how many n's budget holds next to R_w + O)
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
                  F_kL ≤ T ≤ min(G_kL, cutoff − C_kL)
    ring          Σ_{m ∈ P_kL, m ≠ n, level(n,m) ≤ L} used_m  ≥  r · used_n,   r = min(2, k − 1)
    symmetry      used_a ≥ used_b where a dominates b (no less memory and bandwidth, within L of
                  every node b is); t_a ≥ t_b for interchangeable a before b; slot j's first
                  node precedes slot j + 1's: y_{n,j+1} ≤ Σ_{m before n} y_mj
    minimise      T                                       (the plan's time is T + C_kL)

`C_kL` is the all-reduce per token for k ranks whose slowest ring hop is of level L (every
used node has r used neighbours within L: a necessary condition for such a ring). `F_kL` is
the fluid bound, the k fastest pool nodes sharing the bytes read perfectly, and `G_kL` the
slowest rank of a greedy split over them (largest units first, each to the node that would
finish it soonest, then units moved or traded off the slowest node while that helps), when
they form such a ring: bounds that spare the search most of its work.

Search: shapes are tried in increasing lower bound F_kL + C_kL. Each model must beat the best
plan so far (`cutoff`; a shape with fewer nodes than the best may tie it), and shapes whose
bound cannot are skipped, so among the fastest plans the one with the fewest nodes wins. The
best shape's model then keeps T + C at the optimum and maximises the free memory on the
smallest node, when that node is used at all (under a small deterministic-time budget: it only
polishes an optimal plan). Whole KV groups per node (no `part`, `y`, `h`, `split`) while
k ≤ n_kv; the replicated form only for k > n_kv. Feasibility alone (for diagnosis) asks the
same models over a range of k, with no times and no ring: whole groups, then replicated.

The pieces live beside this module: `planner.problem` (nodes, unit costs, the fluid bound),
`planner.shapes` (the enumeration of shapes) and `planner.greedy` (the greedy split G_kL).
"""

from __future__ import annotations

import time

from ortools.sat.python import cp_model

from planner.costs import UNITS
from planner.greedy import SHARDED, greedy_time_ps
from planner.problem import (
    NodeInput,
    NodeShare,
    Problem,
    Solution,
    able_nodes,
    fixed_bytes,
    ring_degree,
    smallest_node,
    time_coefficient,
)
from planner.shapes import shapes

SEED = 20261124
FORMULATION = 2
"""Bumped whenever the same request can get a different plan: it is part of every plan_id."""
WORKERS = 1  # one worker keeps the search deterministic for a given request
TIE_BREAK_DETERMINISTIC_S = 0.05  # the tie-break only polishes an optimal plan: keep it short


class _CpModel(cp_model.CpModel):
    """A CP-SAT model without the deprecated camelCase aliases OR-Tools attaches to every new
    model (about a millisecond each; several models are built per plan)."""

    def _add_pre_pep8_methods(self) -> None:
        pass


class _Model:
    """Builds the CP-SAT model for k used nodes of `pool`; one method per constraint family.

    With a ring `level` it is the optimisation model of the module docstring for one k
    (`counts` a single value); without, it only asks whether any split over a count in
    `counts` fits (no times, no all-reduce).
    """

    def __init__(
        self,
        p: Problem,
        pool: list[NodeInput],
        counts: range,
        level: int | None,
        replicate_kv: bool,
        lower_ps: int = 0,
        cutoff_ps: int | None = None,
    ) -> None:
        self.p = p
        self.m = _CpModel()
        self.nodes = pool
        self.counts = counts
        self.level = level
        self.k = counts[0]
        self.totals = p.costs.total_units
        self.n_kv = self.totals["kv_head"]
        self.g = p.q_per_kv
        self.fixed = fixed_bytes(p)
        self.replicate_kv = replicate_kv and self.g > 1
        n_slots = min(self.n_kv, counts[-1] // 2) if self.replicate_kv else 0
        self.slots = range(n_slots)
        self.near = self._links()
        self.used: dict[str, cp_model.IntVar] = {}
        self.x: dict[tuple[str, str], cp_model.LinearExprT] = {}
        self.kvw: dict[str, cp_model.IntVar] = {}
        self.part: dict[str, cp_model.IntVar] = {}
        self.y: dict[tuple[str, int], cp_model.IntVar] = {}
        self.h: dict[tuple[str, int], cp_model.IntVar] = {}
        self.split: dict[int, cp_model.IntVar] = {}
        self.caps: dict[tuple[str, str], int] = {}
        self.mem: dict[str, cp_model.LinearExprT] = {}
        self.t: dict[str, cp_model.LinearExprT] = {}
        self.C = 0 if level is None else p.comm_ps[self.k - 1][level]
        self.T: cp_model.LinearExprT = 0

        self._variables()
        self._partition()
        self._one_group_per_partial_node()
        self._used_nodes()
        self._memory_budgets()
        if level is not None:
            self._decode_time(lower_ps, cutoff_ps)
            self._ring()
        self._symmetry()
        if level is not None:
            self._greedy_bound()

    def _links(self) -> dict[str, set[str]]:
        """Who is within the ring level of whom (everyone, without a level)."""
        ids = [n.id for n in self.nodes]
        lv = self.level
        return {
            a: {b for b in ids if b != a and (lv is None or self.p.pair_level[a, b] <= lv)}
            for a in ids
        }

    # -- variables -------------------------------------------------------------------
    def _cap(self, node: NodeInput, unit_bytes: int, total: int) -> int:
        """Units of `unit_bytes` that fit next to the replicated bytes, at most `total`."""
        if unit_bytes <= 0:
            return total
        return min(total, (node.budget - self.fixed) // unit_bytes)

    def _variables(self) -> None:
        m, t, c = self.m, self.totals, self.p.costs
        per = {u: c.weight[u] + c.cache[u] for u in UNITS}
        group = self.g * per["q_head"] + per["kv_head"]
        for node in self.nodes:
            n = node.id
            self.used[n] = m.new_bool_var(f"used[{n}]")
            self.kvw[n] = m.new_int_var(0, self._cap(node, group, self.n_kv), f"kv_groups[{n}]")
            q: cp_model.LinearExprT = self.g * self.kvw[n]
            kv: cp_model.LinearExprT = self.kvw[n]
            if self.replicate_kv:
                self.part[n] = m.new_bool_var(f"partial[{n}]")
                for j in self.slots:
                    self.y[n, j] = m.new_bool_var(f"in_slot[{n},{j}]")
                    self.h[n, j] = m.new_int_var(0, self.g - 1, f"slot_q[{n},{j}]")
                q = q + sum(self.h[n, j] for j in self.slots)
                kv = kv + self.part[n]
            self.x[n, "q_head"] = q
            self.x[n, "kv_head"] = kv
            for u, name in zip(SHARDED, ("ffn_blocks", "experts", "lin_k_heads")):
                self.caps[n, u] = self._cap(node, per[u], t[u])
                self.x[n, u] = m.new_int_var(0, self.caps[n, u], f"{name}[{n}]")
        for j in self.slots:
            self.split[j] = m.new_bool_var(f"split[{j}]")

    # -- constraint families -----------------------------------------------------------
    def _partition(self) -> None:
        m, nodes = self.m, list(self.used)
        for u in SHARDED:
            m.add(sum(self.x[n, u] for n in nodes) == self.totals[u])
        m.add(sum(self.kvw[n] for n in nodes) + sum(self.split.values()) == self.n_kv)
        for j in self.slots:
            m.add(sum(self.h[n, j] for n in nodes) == self.g * self.split[j])
            # A group held by one node is a whole group: split groups have two nodes or more.
            m.add(sum(self.y[n, j] for n in nodes) >= 2 * self.split[j])

    def _one_group_per_partial_node(self) -> None:
        if not self.replicate_kv:
            return
        m = self.m
        for n in self.used:
            m.add(sum(self.y[n, j] for j in self.slots) == self.part[n])
            for j in self.slots:
                m.add(self.h[n, j] >= self.y[n, j])
                m.add(self.h[n, j] <= (self.g - 1) * self.y[n, j])
            # A node with part of a group holds no whole group: its local GQA needs one KV head.
            m.add(self.kvw[n] <= self.n_kv * (1 - self.part[n]))

    def _used_nodes(self) -> None:
        m = self.m
        for n in self.used:
            used = self.used[n]
            m.add(self.kvw[n] <= self.n_kv * used)
            for u in SHARDED:
                m.add(self.x[n, u] <= self.totals[u] * used)
            if self.replicate_kv:
                m.add(self.part[n] <= used)
        k = sum(self.used.values())
        m.add(k >= self.counts[0])
        m.add(k <= self.counts[-1])

    def _memory_budgets(self) -> None:
        c = self.p.costs
        for node in self.nodes:
            n = node.id
            held = sum((c.weight[u] + c.cache[u]) * self.x[n, u] for u in UNITS)
            self.mem[n] = self.fixed * self.used[n] + held
            self.m.add(self.mem[n] <= node.budget)

    def _decode_time(self, lower_ps: int, cutoff_ps: int | None) -> None:
        c = self.p.costs
        horizon = 0
        for node in self.nodes:
            n, bw = node.id, node.bandwidth_gbps
            rho = time_coefficient(c.replicated_read, bw)
            tau = {u: time_coefficient(c.read[u] + c.cache[u], bw) for u in UNITS}
            self.t[n] = rho * self.used[n] + sum(tau[u] * self.x[n, u] for u in UNITS)
            horizon = max(horizon, rho + sum(tau[u] * self.totals[u] for u in UNITS))
        upper = horizon if cutoff_ps is None else min(horizon, cutoff_ps - self.C)
        self.T = self.m.new_int_var(min(lower_ps, upper), upper, "slowest_rank_ps")
        if lower_ps > upper:
            self.m.add_bool_or([])  # nothing of this shape can beat the cutoff
        for n in self.t:
            self.m.add(self.t[n] <= self.T)

    def _ring(self) -> None:
        need = ring_degree(self.k)
        for n, near in self.near.items():
            if len(near) >= len(self.nodes) - 1 and need <= self.k - 1:
                continue  # every other node is near: any k nodes will do
            self.m.add(sum(self.used[o] for o in near) >= need * self.used[n])

    def _dominates(self, a: NodeInput, b: NodeInput) -> bool:
        """a can take over whatever b holds: no less memory or bandwidth, near every node b
        is near. So a plan using b but not a is never better than one with b's share on a."""
        if a.budget < b.budget or a.bandwidth_gbps < b.bandwidth_gbps:
            return False
        return self.near[b.id] - {a.id} <= self.near[a.id]

    def _symmetry(self) -> None:
        nodes, m = self.nodes, self.m
        smallest = smallest_node(self.p).id
        timed = self.level is not None
        for i, a in enumerate(nodes):
            if a.id == smallest:
                continue  # loading the smallest node instead of another would lose the tie-break
            for j, b in enumerate(nodes):
                if a is b or not self._dominates(a, b):
                    continue
                mutual = self._dominates(b, a)
                if mutual and b.id != smallest and j < i:
                    continue  # interchangeable: order them one way only
                m.add(self.used[a.id] >= self.used[b.id])
                if mutual and timed and b.id != smallest:
                    m.add(self.t[a.id] >= self.t[b.id])
        ids = list(self.used)
        for j in self.slots:
            if j + 1 not in self.split:
                continue
            for i, n in enumerate(ids):
                m.add(self.y[n, j + 1] <= sum(self.y[o, j] for o in ids[:i]))

    def _greedy_bound(self) -> None:
        """T ≤ the slowest rank of a largest-first greedy split over the k fastest nodes of the
        pool, when they make a ring at this level and the split fits: the search then starts
        with a bound near the optimum instead of the trivial one."""
        chosen = sorted(self.nodes, key=lambda n: (-n.bandwidth_gbps, -n.budget))[: self.k]
        ids = {n.id for n in chosen}
        if len(chosen) < self.k or any(len(self.near[n] & ids) < ring_degree(self.k) for n in ids):
            return
        slowest = greedy_time_ps(self.p, chosen)
        if slowest is not None:
            self.m.add(slowest >= self.T)

    # -- solving -------------------------------------------------------------------------
    def solve(self, seconds: float) -> tuple[str, cp_model.CpSolver]:
        """OPTIMAL, FEASIBLE, INFEASIBLE or UNKNOWN, and the solver holding the values."""
        if self.level is not None:
            self.m.minimize(self.T)
        solver = _solver(seconds)
        status = _checked(solver.solve(self.m), solver, self.m)
        return solver.status_name(status), solver

    def tie_break(
        self, best_ps: int, first: cp_model.CpSolver, seconds: float
    ) -> cp_model.CpSolver:
        """Among plans of this shape as fast as `best_ps`, the most free memory on the smallest
        node (`first` when that node is unused there, or when this search finds nothing)."""
        smallest = smallest_node(self.p).id
        if smallest not in self.used or not first.boolean_value(self.used[smallest]):
            return first
        self.m.clear_hints()
        for var in self._decision_vars():
            self.m.add_hint(var, first.value(var))
        self.m.add(best_ps >= self.T + self.C)
        self.m.minimize(self.mem[smallest])
        solver = _solver(seconds, TIE_BREAK_DETERMINISTIC_S)
        status = _checked(solver.solve(self.m), solver, self.m)
        return solver if status in (cp_model.OPTIMAL, cp_model.FEASIBLE) else first

    def _decision_vars(self) -> list[cp_model.IntVar]:
        out: list[cp_model.IntVar] = [*self.used.values(), *self.kvw.values()]
        out += [v for v in self.x.values() if isinstance(v, cp_model.IntVar)]
        out += [*self.part.values(), *self.y.values(), *self.h.values(), *self.split.values()]
        # Some unit expressions are plain variables (kv heads = kv groups without replication).
        return list({v.index: v for v in out}.values())

    def shares(self, s: cp_model.CpSolver) -> list[NodeShare]:
        shares = []
        for node in self.nodes:
            n = node.id
            if not s.boolean_value(self.used[n]):
                continue
            slot = next((j for j in self.slots if s.boolean_value(self.y[n, j])), None)
            shares.append(
                NodeShare(
                    node_id=n,
                    kv_whole=s.value(self.kvw[n]),
                    partial_slot=slot,
                    partial_q=s.value(self.h[n, slot]) if slot is not None else 0,
                    ffn_blocks=s.value(self.x[n, "ffn_block"]),
                    experts=s.value(self.x[n, "expert"]),
                    lin_k_heads=s.value(self.x[n, "lin_k_head"]),
                    q_per_kv=self.g,
                )
            )
        return shares


def _solver(seconds: float, deterministic: float | None = None) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = WORKERS
    solver.parameters.random_seed = SEED
    solver.parameters.max_time_in_seconds = seconds
    # A deterministic-time budget keeps results reproducible whatever the machine load.
    solver.parameters.max_deterministic_time = seconds if deterministic is None else deterministic
    solver.parameters.cp_model_probing_level = 0
    solver.parameters.linearization_level = 2
    return solver


def _checked(status: int, solver: cp_model.CpSolver, model: cp_model.CpModel) -> int:
    """A malformed model is a bug in this module: say so loudly instead of 'no plan'."""
    if status == cp_model.MODEL_INVALID:
        raise RuntimeError(f"invalid CP-SAT model: {model.validate()}")
    return status


def _feasible(problem: Problem, started: float) -> Solution:
    """Any split at all: whole groups on any number of nodes, else with KV replication."""
    nodes, n_kv = able_nodes(problem), problem.costs.total_units["kv_head"]
    lo = 1 if problem.allow_unused else len(problem.nodes)
    limited = False
    for replicate in (False, True):
        counts = range(max(lo, n_kv + 1) if replicate else lo, len(nodes) + 1)
        if not counts:
            continue
        left = max(problem.time_limit_s - (time.perf_counter() - started), 0.05)
        model = _Model(problem, nodes, counts, None, replicate)
        status, solver = model.solve(left)
        if status in ("OPTIMAL", "FEASIBLE"):
            return Solution(status="feasible", shares=model.shares(solver))
        limited = limited or status == "UNKNOWN"
    return Solution(
        status="infeasible",
        wall_ms=(time.perf_counter() - started) * 1e3,
        time_limited=limited,
    )


def solve(problem: Problem) -> Solution:
    """Try (k, level) shapes in order of their lower bound; each must beat the best so far."""
    started = time.perf_counter()
    if problem.feasibility_only:
        return _feasible(problem, started)
    able, n_kv = able_nodes(problem), problem.costs.total_units["kv_head"]
    if not problem.allow_unused and len(able) < len(problem.nodes):
        return Solution(status="infeasible", wall_ms=(time.perf_counter() - started) * 1e3)
    best: tuple[int, int] | None = None  # (T + C, k)
    best_model: _Model | None = None
    best_solver: cp_model.CpSolver | None = None
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
        model = _Model(
            problem,
            shape.pool,
            range(shape.k, shape.k + 1),
            shape.level,
            shape.k > n_kv,
            lower_ps=shape.lower_ps,
            cutoff_ps=cutoff,
        )
        status, solver = model.solve(left)
        if status == "FEASIBLE":
            open_bounds.append(max(shape.bound_ps, round(solver.best_objective_bound) + model.C))
        elif status == "UNKNOWN":
            open_bounds.append(shape.bound_ps)
        if status in ("OPTIMAL", "FEASIBLE"):
            best = (round(solver.objective_value) + model.C, shape.k)
            best_model, best_solver = model, solver
    limited = bool(open_bounds)
    if best is None or best_model is None or best_solver is None:
        wall = (time.perf_counter() - started) * 1e3
        return Solution(status="infeasible", wall_ms=wall, time_limited=limited)
    left = max(problem.time_limit_s - (time.perf_counter() - started), 0.05)
    final = best_model.tie_break(best[0], best_solver, left)
    return Solution(
        status="feasible" if limited else "optimal",
        shares=best_model.shares(final),
        objective_ps=best[0],
        bound_ps=min([best[0], *open_bounds]),
        wall_ms=(time.perf_counter() - started) * 1e3,
        time_limited=limited,
    )
