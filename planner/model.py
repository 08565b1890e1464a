"""The CP-SAT model of one plan shape (see `planner.solver` for the formulation)."""

from __future__ import annotations

from ortools.sat.python import cp_model

from planner.backends import PoolBackends
from planner.calibration import Collective
from planner.costs import SHARDED, UNITS, Unit
from planner.cpsat import CpModel, checked_solve, new_solver
from planner.dominance import dominance
from planner.greedy import KV_GROUP, greedy_split
from planner.hamiltonian import cycle
from planner.problem import (
    NodeInput,
    NodeShare,
    Problem,
    base_time_ps,
    first_rank,
    fixed_bytes,
    smallest_node,
    time_coefficient,
)
from planner.ring import add_ring, best_ring

TIE_BREAK_DETERMINISTIC_S = 0.05  # the tie-break only polishes an optimal plan: keep it short


class SplitModel:
    """Builds the CP-SAT model for k used nodes of `pool`; one method per constraint family.

    With a ring `level` it is the optimisation model of `planner.solver`'s docstring for one k
    (`counts` a single value): a circuit over the used nodes through arcs of level ≤ `level`,
    one of them of level `level` exactly. Without, it only asks whether any split over a count
    in `counts` fits (no times, no ring).
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
        ring_ps: int | None = None,
    ) -> None:
        self.p = p
        self.ring_ps = ring_ps
        self.m = CpModel()
        self.nodes = pool
        self.counts = counts
        self.level = level
        self.k = counts[0]
        self.totals = p.costs.total_units
        self.n_kv = self.totals[Unit.KV_HEAD]
        self.g = p.q_per_kv
        self.fixed = fixed_bytes(p)
        self.replicate_kv = replicate_kv and self.g > 1
        n_slots = min(self.n_kv, counts[-1] // 2) if self.replicate_kv else 0
        self.slots = range(n_slots)
        self.used: dict[str, cp_model.IntVar] = {}
        self.x: dict[tuple[str, str], cp_model.LinearExprT] = {}
        self.kvw: dict[str, cp_model.IntVar] = {}
        self.part: dict[str, cp_model.IntVar] = {}
        self.y: dict[tuple[str, int], cp_model.IntVar] = {}
        self.h: dict[tuple[str, int], cp_model.IntVar] = {}
        self.split: dict[int, cp_model.IntVar] = {}
        self.mem: dict[str, cp_model.LinearExprT] = {}
        self.t: dict[str, cp_model.LinearExprT] = {}
        self.arcs: dict[tuple[str, str], cp_model.IntVar] = {}
        self.jaccl: cp_model.IntVar | None = None
        self.backends = PoolBackends(p.ring, [n.id for n in pool], self.k)
        self.C: cp_model.LinearExprT = 0
        self.T: cp_model.LinearExprT = 0

        self._variables()
        self._partition()
        self._one_group_per_partial_node()
        self._used_nodes()
        self._memory_budgets()
        if level is not None:
            self._ring(level)
            self._decode_time(lower_ps, cutoff_ps)
        self._symmetry()
        if level is not None:
            self._greedy_start()

    def allowed(self, a: str, b: str) -> bool:
        return self.level is None or self.p.pair_level[a, b] <= self.level

    def arc_ps(self, a: str, b: str) -> int:
        return self.p.ring.arc_ps(self.k, a, b)

    # -- variables -------------------------------------------------------------------
    def _cap(self, node: NodeInput, unit_bytes: int, total: int) -> int:
        """Units of `unit_bytes` that fit next to the replicated bytes, at most `total`."""
        if unit_bytes <= 0:
            return total
        return max(0, min(total, (node.budget - self.fixed) // unit_bytes))

    def _variables(self) -> None:
        m, t, c = self.m, self.totals, self.p.costs
        group = self.g * c.held(Unit.Q_HEAD) + c.held(Unit.KV_HEAD)
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
            self.x[n, Unit.Q_HEAD] = q
            self.x[n, Unit.KV_HEAD] = kv
            for u in SHARDED:
                self.x[n, u] = m.new_int_var(0, self._cap(node, c.held(u), t[u]), f"{u}[{n}]")
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
            held = sum(c.held(u) * self.x[n, u] for u in UNITS)
            self.mem[n] = self.fixed * self.used[n] + held
            self.m.add(self.mem[n] <= node.budget)

    def _ring(self, level: int) -> None:
        """The all-reduce ring over the used nodes; C is its dearest arc's price (a constant
        when every ring of the shape costs the same)."""
        if self.k < 2:
            return
        if self.ring_ps is not None:
            self.C = self.ring_ps
            return
        ids, pool = list(self.used), self.backends
        fns = [self.arc_ps, pool.tcp] if pool.mixed else [self.arc_ps]
        arcs = [(a, b) for a in ids for b in ids if a != b and self.allowed(a, b)]
        prices = [fn(a, b) for a, b in arcs for fn in fns]
        top = [fn(a, b) for a, b in arcs for fn in fns if self.p.pair_level[a, b] == level]
        tcp = (pool.tcp, pool.add(self.m, self.used)) if pool.mixed else None
        self.jaccl = tcp[1] if tcp else None
        self.arcs, self.C = add_ring(
            self.m, self.used, self.allowed, self.arc_ps, (min(top or prices), max(prices)), tcp
        )
        if level > 0:
            # Rings whose dearest level is lower belong to the shapes of that level.
            self.m.add_bool_or(
                [lit for (a, b), lit in self.arcs.items() if self.p.pair_level[a, b] == level]
            )

    def _decode_time(self, lower_ps: int, cutoff_ps: int | None) -> None:
        c = self.p.costs
        horizon = 0
        for node in self.nodes:
            n, bw = node.id, node.bandwidth_gbps
            rho = base_time_ps(self.p, bw)
            tau = {u: time_coefficient(c.per_token(u), bw) for u in UNITS}
            self.t[n] = rho * self.used[n] + sum(tau[u] * self.x[n, u] for u in UNITS)
            horizon = max(horizon, rho + sum(tau[u] * self.totals[u] for u in UNITS))
        self.T = self.m.new_int_var(min(lower_ps, horizon), horizon, "slowest_rank_ps")
        if lower_ps > horizon:
            self.m.add_bool_or([])
        if cutoff_ps is not None:
            self.m.add(cutoff_ps >= self.T + self.C)
        for n in self.t:
            self.m.add(self.t[n] <= self.T)

    def _symmetry(self) -> None:
        nodes, m = self.nodes, self.m
        smallest = smallest_node(self.p).id
        timed = self.level is not None
        # With one price for every ring of the shape, the ring cannot tell nodes apart.
        circuit = timed and self.k >= 2 and self.ring_ps is None
        if circuit and self.backends.mixed:
            pairs = self.backends.dominance(nodes, self.allowed)
        else:
            pairs = dominance(nodes, self.allowed, self.arc_ps if circuit else None)
        for i, j, mutual in pairs:
            a, b = nodes[i].id, nodes[j].id
            if a == smallest:
                continue  # loading the smallest node instead of another would lose the tie-break
            both = mutual and b != smallest
            if both and j < i:
                continue  # interchangeable: order them one way only
            m.add(self.used[a] >= self.used[b])
            if both and timed:
                m.add(self.t[a] >= self.t[b])
        ids = list(self.used)
        for j in self.slots:
            if j + 1 not in self.split:
                continue
            for i, n in enumerate(ids):
                m.add(self.y[n, j + 1] <= sum(self.y[o, j] for o in ids[:i]))

    def _greedy_start(self) -> None:
        """T + C ≤ a greedy split over k nodes chosen with their ring by cheapest insertion,
        when both exist; and that plan as the search's hint. (It may belong to a lower level's
        shape; it still bounds the best plan.)"""
        ring = self._insertion_ring()
        by_id = {n.id: n for n in self.nodes}
        chosen = [by_id[n] for n in ring]
        split = greedy_split(self.p, chosen) if ring else None
        if split is None:
            return
        arcs = set(zip(ring, ring[1:] + ring[:1])) if self.k > 1 else set()
        comm = self.p.ring.ring_ps(ring)
        if self.ring_ps is not None:
            comm = self.ring_ps  # what the model counts for any ring of this shape
        self.m.add(split.slowest_ps + comm >= self.T + self.C)
        held = {n.id: x for n, x in zip(chosen, split.counts)}
        for n in self.used:
            x = held.get(n, {})
            self.m.add_hint(self.used[n], n in held)
            self.m.add_hint(self.kvw[n], x.get(KV_GROUP, 0))
            for u in SHARDED:
                self.m.add_hint(self.x[n, u], x.get(u, 0))
        for arc, lit in self.arcs.items():
            self.m.add_hint(lit, arc in arcs)
        if self.jaccl is not None:
            self.m.add_hint(self.jaccl, self.p.ring.backend(ring) is Collective.JACCL)

    def _insertion_ring(self) -> list[str]:
        """k nodes in a ring: from the fastest, again and again the fastest node at the place in
        the ring where it makes the dearest arc cheapest (empty when none can join)."""
        nodes = sorted(self.nodes, key=lambda n: (-n.bandwidth_gbps, -n.budget))
        ids = [n.id for n in nodes]
        inf = float("inf")
        price = [
            [self.arc_ps(a, b) if a != b and self.allowed(a, b) else inf for b in ids] for a in ids
        ]
        ring, left = [0], list(range(1, len(ids)))
        while len(ring) < self.k and left:
            top = nodes[left[0]].bandwidth_gbps
            best: tuple[float, int, int] | None = None  # (dearest arc, node, position)
            for n in left:
                if nodes[n].bandwidth_gbps < top and best is not None and best[0] < inf:
                    break
                for pos in range(len(ring)):
                    a, b = ring[pos], ring[(pos + 1) % len(ring)]
                    cost = max(price[a][n], price[n][b]) if len(ring) > 1 else price[a][n]
                    if best is None or (cost, n, pos) < best:
                        best = (cost, n, pos)
            if best is None or best[0] == inf:
                return []
            ring.insert(best[2] + 1, best[1])
            left.remove(best[1])
        if len(ring) < self.k:
            return []
        return [ids[i] for i in ring]

    # -- solving -------------------------------------------------------------------------
    def solve(
        self, seconds: float, deterministic: float | None = None
    ) -> tuple[str, cp_model.CpSolver]:
        """OPTIMAL, FEASIBLE, INFEASIBLE or UNKNOWN, and the solver holding the values."""
        if self.level is not None:
            self.m.minimize(self.T + self.C)
        solver = new_solver(seconds, deterministic)
        return checked_solve(solver, self.m), solver

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
        solver = new_solver(seconds, TIE_BREAK_DETERMINISTIC_S)
        status = checked_solve(solver, self.m)
        return solver if status in ("OPTIMAL", "FEASIBLE") else first

    def _decision_vars(self) -> list[cp_model.IntVar]:
        out: list[cp_model.IntVar] = [*self.used.values(), *self.kvw.values()]
        out += [v for v in self.x.values() if isinstance(v, cp_model.IntVar)]
        out += [*self.part.values(), *self.y.values(), *self.h.values(), *self.split.values()]
        out += list(self.arcs.values())
        out += [self.jaccl] if self.jaccl is not None else []
        # Some unit expressions are plain variables (kv heads = kv groups without replication).
        return list({v.index: v for v in out}.values())

    def outcome(self, s: cp_model.CpSolver, seconds: float) -> tuple[list[str], int]:
        """The ring of the solution in `s` (rank 0 first) and its decode time: the slowest
        rank plus that ring's all-reduce (T and C themselves may sit above those when nothing
        minimises them)."""
        used = [n for n in self.nodes if s.boolean_value(self.used[n.id])]
        start = first_rank(used)
        if self.arcs:
            ring = cycle(s, self.arcs, start)
        else:
            ring, _ = best_ring([n.id for n in used], self.p.ring, start, seconds)
        slowest = max(s.value(self.t[n.id]) for n in used)
        return ring, int(slowest) + self.p.ring.ring_ps(ring)

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
                    kv_groups=s.value(self.kvw[n]),
                    partial_slot=slot,
                    partial_q=s.value(self.h[n, slot]) if slot is not None else 0,
                    sharded={u: s.value(self.x[n, u]) for u in SHARDED},
                    q_per_kv=self.g,
                )
            )
        return shares
