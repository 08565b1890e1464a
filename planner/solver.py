r"""The CP-SAT model of an asymmetric tensor-parallel split.

Formulation (all coefficients precomputed integers; no products of variables)::

    nodes n,  units u ∈ {q_head, kv_head, ffn_block, expert, lin_k_head}
    used_n ∈ {0,1}
    kvw_n   whole KV groups on n            (q heads = G · kvw_n, G = q heads per KV head)
    ffn_n, exp_n, lin_n                     FFN blocks, whole experts, linear-attention key heads
    -- only when KV heads are fewer than nodes (KV replication):
    part_n ∈ {0,1}                          n holds part of one KV group, with its KV head copied
    y_nj ∈ {0,1}, h_nj ∈ [0, G]             n's share of split-group slot j
    split_j ∈ {0,1}                         slot j is a KV group split over several nodes

    partition     Σ_n ffn_n = F,  Σ_n exp_n = E,  Σ_n lin_n = K,  Σ_n kvw_n + Σ_j split_j = n_kv
                  Σ_n h_nj = G · split_j,  split_j ≥ split_{j+1}
    one group     Σ_j y_nj = part_n,  y_nj ≤ h_nj ≤ G · y_nj,  kvw_n ≤ n_kv · (1 − part_n)
    used          every count of n ≤ its total · used_n
    memory        R_w · used_n + Σ_u (w_u + c_u) · x_nu + O · used_n  ≤  B_n
    decode time   t_n = ρ_n · used_n + Σ_u τ_nu · x_nu  ≤  T          (τ = bytes read / bandwidth)
    all-reduce    k = Σ_n used_n;  C = table[k, L]                      (element constraint)
                  ring: used_n ∧ (L = l) ⇒ Σ_{m: level(n,m) ≤ l} used_m ≥ min(2, k − 1)
    minimise      T + C,  then (fixed at its optimum) fewer nodes and more free memory
                  on the smallest node.

The model is solved first with whole KV groups per node (no `part`, `y`, `h`, `split`),
which is fast; the replicated form, whose slots make the search much harder, is solved only
with more used nodes than KV heads and only when a fluid lower bound says it could be faster.

`L` is the level of the ring's slowest hop: every used node needs two used neighbours (one
when k = 2) within it, a necessary condition for a ring; `table` gives the per-token
all-reduce time for k ranks over a hop of that level. Identical nodes are
ordered (symmetry breaking) and the search is hinted with a memory-proportional split.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field, replace

from ortools.sat.python import cp_model

from planner.costs import UNITS, UnitCosts

PS_PER_NS = 1000
SEED = 20261124
WORKERS = 1  # one worker keeps the search deterministic for a given request


@dataclass(frozen=True)
class NodeInput:
    id: str
    budget: int
    bandwidth_gbps: float
    level: int
    """Index into the all-reduce level table of this node's slowest ring hop."""


@dataclass(frozen=True)
class Problem:
    nodes: list[NodeInput]
    costs: UnitCosts
    q_per_kv: int
    overhead_bytes: int
    comm_ps: list[list[int]]
    """comm_ps[k - 1][level]: all-reduce time per token (ps) for k ranks at a hop level."""
    pair_level: dict[tuple[str, str], int]
    """Hop level between two nodes (both orders), levels ascending in cost."""
    allow_unused: bool = True
    time_limit_s: float = 10.0
    feasibility_only: bool = False


@dataclass(frozen=True)
class NodeShare:
    """What one node holds, in units; `partial_slot` is the split KV group it shares."""

    node_id: str
    kv_whole: int = 0
    partial_slot: int | None = None
    partial_q: int = 0
    ffn_blocks: int = 0
    experts: int = 0
    lin_k_heads: int = 0
    q_per_kv: int = 1

    @property
    def q_heads(self) -> int:
        return self.q_per_kv * self.kv_whole + self.partial_q

    @property
    def kv_heads(self) -> int:
        return self.kv_whole + (1 if self.partial_slot is not None else 0)

    def counts(self) -> dict[str, int]:
        return {
            "q_head": self.q_heads,
            "kv_head": self.kv_heads,
            "ffn_block": self.ffn_blocks,
            "expert": self.experts,
            "lin_k_head": self.lin_k_heads,
        }

    @property
    def empty(self) -> bool:
        return not any(self.counts().values())


@dataclass
class Solution:
    status: str  # optimal | feasible | infeasible
    shares: list[NodeShare] = field(default_factory=list)
    objective_ps: int | None = None
    bound_ps: int | None = None
    wall_ms: float = 0.0
    time_limited: bool = False


def time_coefficient(bytes_per_token: float, bandwidth_gbps: float) -> int:
    """Picoseconds to read `bytes_per_token` at `bandwidth_gbps` GB/s (rounded up)."""
    return math.ceil(bytes_per_token * PS_PER_NS / bandwidth_gbps)


class _Model:
    """Builds the CP-SAT model; one method per constraint family.

    `replicate_kv` adds the split-group slots (only worth it with more used nodes than KV
    heads, so it comes with `min_used`); `below_ps` asks for a plan faster than one in hand.
    """

    def __init__(
        self, p: Problem, replicate_kv: bool, min_used: int = 1, below_ps: int | None = None
    ) -> None:
        self.p = p
        self.m = cp_model.CpModel()
        self.totals = p.costs.total_units
        self.n_kv = self.totals["kv_head"]
        self.g = p.q_per_kv
        self.replicate_kv = replicate_kv
        self.min_used = min_used
        self.below_ps = below_ps
        self.slots = range(self.n_kv if self.replicate_kv else 0)
        self.used: dict[str, cp_model.IntVar] = {}
        self.x: dict[tuple[str, str], cp_model.LinearExprT] = {}
        self.kvw: dict[str, cp_model.IntVar] = {}
        self.part: dict[str, cp_model.IntVar] = {}
        self.y: dict[tuple[str, int], cp_model.IntVar] = {}
        self.h: dict[tuple[str, int], cp_model.IntVar] = {}
        self.split: dict[int, cp_model.IntVar] = {}
        self.mem: dict[str, cp_model.LinearExprT] = {}
        self.t: dict[str, cp_model.LinearExprT] = {}

        self._variables()
        self._partition()
        self._one_group_per_partial_node()
        self._nothing_on_unused_nodes()
        self._memory_budgets()
        self._decode_time()
        self._allreduce()
        self._symmetry()
        self._hint()
        if below_ps is not None:
            self.m.add(below_ps >= self.T + self.C)

    # -- variables -------------------------------------------------------------------
    def _variables(self) -> None:
        m, t = self.m, self.totals
        for node in self.p.nodes:
            n = node.id
            self.used[n] = m.new_bool_var(f"used[{n}]")
            self.kvw[n] = m.new_int_var(0, self.n_kv, f"kv_groups[{n}]")
            ffn = m.new_int_var(0, t["ffn_block"], f"ffn_blocks[{n}]")
            exp = m.new_int_var(0, t["expert"], f"experts[{n}]")
            lin = m.new_int_var(0, t["lin_k_head"], f"lin_k_heads[{n}]")
            q: cp_model.LinearExprT = self.g * self.kvw[n]
            kv: cp_model.LinearExprT = self.kvw[n]
            if self.replicate_kv:
                self.part[n] = m.new_bool_var(f"partial[{n}]")
                for j in self.slots:
                    self.y[n, j] = m.new_bool_var(f"in_slot[{n},{j}]")
                    self.h[n, j] = m.new_int_var(0, self.g, f"slot_q[{n},{j}]")
                q = q + sum(self.h[n, j] for j in self.slots)
                kv = kv + self.part[n]
            self.x[n, "q_head"] = q
            self.x[n, "kv_head"] = kv
            self.x[n, "ffn_block"] = ffn
            self.x[n, "expert"] = exp
            self.x[n, "lin_k_head"] = lin
        for j in self.slots:
            self.split[j] = m.new_bool_var(f"split[{j}]")

    # -- constraint families -----------------------------------------------------------
    def _partition(self) -> None:
        m, nodes = self.m, [n.id for n in self.p.nodes]
        for u in ("ffn_block", "expert", "lin_k_head"):
            m.add(sum(self.x[n, u] for n in nodes) == self.totals[u])
        m.add(sum(self.kvw[n] for n in nodes) + sum(self.split.values()) == self.n_kv)
        for j in self.slots:
            m.add(sum(self.h[n, j] for n in nodes) == self.g * self.split[j])
            if j + 1 in self.split:
                m.add(self.split[j] >= self.split[j + 1])

    def _one_group_per_partial_node(self) -> None:
        if not self.replicate_kv:
            return
        m = self.m
        for node in self.p.nodes:
            n = node.id
            m.add(sum(self.y[n, j] for j in self.slots) == self.part[n])
            for j in self.slots:
                m.add(self.h[n, j] >= self.y[n, j])
                m.add(self.h[n, j] <= self.g * self.y[n, j])
            # A node with part of a group holds no whole group: its local GQA needs one KV head.
            m.add(self.kvw[n] <= self.n_kv * (1 - self.part[n]))

    def _nothing_on_unused_nodes(self) -> None:
        m = self.m
        for node in self.p.nodes:
            n, used = node.id, self.used[node.id]
            m.add(self.kvw[n] <= self.n_kv * used)
            for u in ("ffn_block", "expert", "lin_k_head"):
                m.add(self.x[n, u] <= self.totals[u] * used)
            if self.replicate_kv:
                m.add(self.part[n] <= used)
            if not self.p.allow_unused:
                m.add(used == 1)
        m.add(sum(self.used.values()) >= self.min_used)

    def _memory_budgets(self) -> None:
        c = self.p.costs
        fixed = c.replicated_weight + self.p.overhead_bytes
        for node in self.p.nodes:
            n = node.id
            held = sum((c.weight[u] + c.cache[u]) * self.x[n, u] for u in UNITS)
            self.mem[n] = fixed * self.used[n] + held
            self.m.add(self.mem[n] <= node.budget)

    def _decode_time(self) -> None:
        c = self.p.costs
        horizon = 0
        for node in self.p.nodes:
            n, bw = node.id, node.bandwidth_gbps
            rho = time_coefficient(c.replicated_read, bw)
            tau = {u: time_coefficient(c.read[u] + c.cache[u], bw) for u in UNITS}
            self.t[n] = rho * self.used[n] + sum(tau[u] * self.x[n, u] for u in UNITS)
            horizon = max(horizon, rho + sum(tau[u] * self.totals[u] for u in UNITS))
        self.T = self.m.new_int_var(0, horizon, "slowest_rank_ps")
        for n in self.t:
            self.m.add(self.t[n] <= self.T)

    def _allreduce(self) -> None:
        m, table = self.m, self.p.comm_ps
        levels = len(table[0])
        k = sum(self.used.values())
        self.level = m.new_int_var(0, levels - 1, "ring_level")
        flat = [table[kk][lv] for kk in range(len(table)) for lv in range(levels)]
        self.C = m.new_int_var(0, max(flat), "allreduce_ps")
        m.add_element((k - 1) * levels + self.level, flat, self.C)
        if len(self.p.nodes) < 2:
            return
        two = m.new_bool_var("k>=2")
        three = m.new_bool_var("k>=3")
        m.add(k >= 2).only_enforce_if(two)
        m.add(k <= 1).only_enforce_if(~two)
        m.add(k >= 3).only_enforce_if(three)
        m.add(k <= 2).only_enforce_if(~three)
        at = [m.new_bool_var(f"ring_level=={lv}") for lv in range(levels)]
        m.add_exactly_one(at)
        m.add(self.level == sum(lv * b for lv, b in enumerate(at)))
        for node in self.p.nodes:
            n = node.id
            for lv in range(levels):
                near = [
                    self.used[o.id]
                    for o in self.p.nodes
                    if o.id != n and self.p.pair_level[n, o.id] <= lv
                ]
                if not near:
                    m.add_bool_or([~self.used[n], ~at[lv], ~two])
                    continue
                m.add(sum(near) >= 1).only_enforce_if([self.used[n], at[lv], two])
                m.add(sum(near) >= 2).only_enforce_if([self.used[n], at[lv], three])

    def _symmetry(self) -> None:
        nodes = self.p.nodes
        for a, b in itertools.pairwise(nodes):
            if (a.budget, a.bandwidth_gbps, a.level) == (b.budget, b.bandwidth_gbps, b.level):
                self.m.add(self.used[a.id] >= self.used[b.id])
                self.m.add(self.t[a.id] >= self.t[b.id])

    def _hint(self) -> None:
        total_budget = sum(n.budget for n in self.p.nodes)
        for u in ("ffn_block", "expert", "lin_k_head"):
            shares = _proportional([n.budget for n in self.p.nodes], self.totals[u], total_budget)
            for node, s in zip(self.p.nodes, shares):
                var = self.x[node.id, u]
                assert isinstance(var, cp_model.IntVar)
                self.m.add_hint(var, s)

    # -- solving -------------------------------------------------------------------------
    def solve(self, limit: float) -> Solution:
        started = time.perf_counter()
        solver = _solver(limit * 0.7)
        if not self.p.feasibility_only:
            self.m.minimize(self.T + self.C)
        status = _checked(solver.solve(self.m), solver, self.m)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return Solution(
                status="infeasible",
                wall_ms=(time.perf_counter() - started) * 1e3,
                time_limited=status == cp_model.UNKNOWN,
            )
        if self.p.feasibility_only:
            return Solution(status="feasible", shares=self._shares(solver))
        best = round(solver.objective_value)
        bound = round(solver.best_objective_bound)
        optimal = status == cp_model.OPTIMAL

        # Phase 2: among plans as fast as the best, fewer nodes and room on the smallest node.
        self.m.clear_hints()
        for var in self._decision_vars():
            self.m.add_hint(var, solver.value(var))
        self.m.add(best >= self.T + self.C)
        smallest = min(self.p.nodes, key=lambda n: (n.budget, n.id))
        big = max(n.budget for n in self.p.nodes) + 1
        free_on_smallest = smallest.budget - self.mem[smallest.id]
        self.m.minimize(big * sum(self.used.values()) - free_on_smallest)
        remaining = max(limit - (time.perf_counter() - started), 0.05)
        solver2 = _solver(remaining)
        status2 = _checked(solver2.solve(self.m), solver2, self.m)
        final = solver2 if status2 in (cp_model.OPTIMAL, cp_model.FEASIBLE) else solver
        return Solution(
            status="optimal" if optimal else "feasible",
            shares=self._shares(final),
            objective_ps=best,
            bound_ps=bound,
            wall_ms=(time.perf_counter() - started) * 1e3,
            time_limited=not optimal,
        )

    def _decision_vars(self) -> list[cp_model.IntVar]:
        out: list[cp_model.IntVar] = [*self.used.values(), *self.kvw.values()]
        out += [v for v in self.x.values() if isinstance(v, cp_model.IntVar)]
        out += [*self.part.values(), *self.y.values(), *self.h.values(), *self.split.values()]
        # Some unit expressions are plain variables (kv heads = kv groups without replication).
        return list({v.index: v for v in out}.values())

    def _shares(self, s: cp_model.CpSolver) -> list[NodeShare]:
        shares = []
        for node in self.p.nodes:
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


def _solver(seconds: float) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = WORKERS
    solver.parameters.random_seed = SEED
    solver.parameters.max_time_in_seconds = seconds
    # A deterministic-time budget keeps results reproducible whatever the machine load.
    solver.parameters.max_deterministic_time = seconds
    # Measured on the reference models at 6-8 nodes: skipping probing and a stronger LP
    # relaxation halve the single-worker solve time (bench/planner_bench.py).
    solver.parameters.cp_model_probing_level = 0
    solver.parameters.linearization_level = 2
    return solver


def _checked(status: int, solver: cp_model.CpSolver, model: cp_model.CpModel) -> int:
    """A malformed model is a bug in this module: say so loudly instead of 'no plan'."""
    if status == cp_model.MODEL_INVALID:
        raise RuntimeError(f"invalid CP-SAT model: {model.validate()}")
    return status


def _proportional(weights: list[int], total: int, weight_sum: int) -> list[int]:
    """Largest-remainder rounding of `total` in proportion to `weights`."""
    if weight_sum <= 0:
        return [0] * len(weights)
    exact = [total * w / weight_sum for w in weights]
    out = [math.floor(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (out[i] - exact[i], i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def fluid_lower_bound_ps(p: Problem, k: int) -> int:
    """No plan on k nodes decodes faster than the k fastest nodes sharing the bytes perfectly,
    with the all-reduce over the best hop level any k nodes allow."""
    c = p.costs
    sharded = sum((c.read[u] + c.cache[u]) * c.total_units[u] for u in UNITS)
    bandwidth = sum(sorted((n.bandwidth_gbps for n in p.nodes), reverse=True)[:k])
    level = sorted(n.level for n in p.nodes)[k - 1]
    return (
        math.floor((sharded + k * c.replicated_read) * PS_PER_NS / bandwidth)
        + p.comm_ps[k - 1][level]
    )


def solve(problem: Problem) -> Solution:
    """Whole KV groups per node first; KV replication only where it could be faster."""
    started = time.perf_counter()
    n_kv, nodes = problem.costs.total_units["kv_head"], len(problem.nodes)
    grouped = _Model(problem, replicate_kv=False).solve(problem.time_limit_s / 2)
    if n_kv >= nodes or (problem.feasibility_only and grouped.status != "infeasible"):
        return grouped
    bound = min(fluid_lower_bound_ps(problem, k) for k in range(n_kv + 1, nodes + 1))
    if grouped.objective_ps is not None and bound >= grouped.objective_ps:
        return grouped
    remaining = max(problem.time_limit_s - (time.perf_counter() - started), 0.1)
    below = None if grouped.objective_ps is None else grouped.objective_ps - 1
    replicated = _Model(problem, True, min_used=n_kv + 1, below_ps=below).solve(remaining)
    wall = (time.perf_counter() - started) * 1e3
    if replicated.status == "infeasible":
        if grouped.status == "infeasible":
            return replace(replicated, wall_ms=wall)
        # Proven: no replicated plan beats the grouped one, unless the search ran out of time.
        limited = grouped.time_limited or replicated.time_limited
        status = "feasible" if limited else grouped.status
        return replace(grouped, status=status, time_limited=limited, wall_ms=wall)
    limited = grouped.time_limited or replicated.time_limited
    bound_ps: int | None = replicated.bound_ps
    if grouped.bound_ps is not None and bound_ps is not None:
        bound_ps = min(grouped.bound_ps, bound_ps)
    status = "feasible" if limited else "optimal"
    return replace(replicated, status=status, bound_ps=bound_ps, time_limited=limited, wall_ms=wall)
