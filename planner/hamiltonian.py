"""A Hamiltonian cycle through every node of a graph, or a proof that there is none."""

from __future__ import annotations

import networkx as nx
from ortools.sat.python import cp_model

from planner.cpsat import CpModel, checked_solve, new_solver

ROTATIONS_PER_NODE = 50  # the rotation heuristic's budget before CP-SAT decides


def hamiltonian_cycle(g: nx.Graph, start: str, seconds: float) -> tuple[list[str] | None, bool]:
    """A Hamiltonian cycle of g from `start`, or None, and whether that answer is certain:
    most graphs are settled by their shape (a node with fewer than two neighbours, not
    biconnected, complete, or one cycle), most others by Pósa's rotations, the rest by a CP-SAT
    circuit model within `seconds`."""
    n = g.number_of_nodes()
    if min(d for _, d in g.degree) < 2 or not nx.is_biconnected(g):
        return None, True
    if g.number_of_edges() == n * (n - 1) // 2:
        return [start, *sorted(v for v in g if v != start)], True
    found = _rotations(g, start)
    if found is not None:
        return found, True
    return _circuit(g, start, seconds)


def _rotations(g: nx.Graph, start: str) -> list[str] | None:
    """Pósa's rotation-extension: grow a path from `start`; when its end has no new neighbour,
    reverse the tail after one of the end's neighbours on the path to get another end; close
    the path once it holds every node and its end neighbours `start`. Deterministic."""
    adj = {v: sorted(g[v]) for v in g}
    n = len(adj)
    path, on = [start], {start}
    for step in range(ROTATIONS_PER_NODE * n):
        end = path[-1]
        new = next((v for v in adj[end] if v not in on), None)
        if new is not None:
            path.append(new)
            on.add(new)
            continue
        if len(path) == n and start in g[end]:
            return path
        pivots = [i for i, v in enumerate(path[:-2]) if v in g[end]]
        if not pivots:
            return None
        i = pivots[step % len(pivots)]
        path[i + 1 :] = reversed(path[i + 1 :])
    return None


def _circuit(g: nx.Graph, start: str, seconds: float) -> tuple[list[str] | None, bool]:
    m = CpModel()
    nodes = list(g.nodes)
    index = {v: i for i, v in enumerate(nodes)}
    arcs = {(a, b): m.new_bool_var(f"arc[{a},{b}]") for a, b in g.edges}
    arcs.update({(b, a): m.new_bool_var(f"arc[{b},{a}]") for a, b in g.edges})
    m.add_circuit([(index[a], index[b], lit) for (a, b), lit in arcs.items()])
    solver = new_solver(seconds)
    status = checked_solve(solver, m)
    if status not in ("OPTIMAL", "FEASIBLE"):
        return None, status == "INFEASIBLE"
    return cycle(solver, arcs, start), True


def cycle(
    solver: cp_model.CpSolver, arcs: dict[tuple[str, str], cp_model.IntVar], start: str
) -> list[str]:
    """The circuit's nodes in order from `start` (just `start` when it has no arc out)."""
    succ = {a: b for (a, b), lit in arcs.items() if solver.boolean_value(lit)}
    order = [start]
    while succ.get(order[-1], start) != start:
        order.append(succ[order[-1]])
    return order
