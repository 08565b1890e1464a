"""A quick split that bounds the solver from above and seeds it: often it is already optimal.

Its work grows with the number of nodes and unit *types*, never with unit counts: each type
is poured in one step (the water level found by bisection), then a bounded number of single
moves polishes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.costs import SHARDED, Unit
from planner.problem import NodeInput, Problem, base_time_ps, fixed_bytes, time_coefficient

KV_GROUP = "kv_group"  # G query heads with their KV head: attention's whole unit
GREEDY_MOVES = 200  # improving moves in the greedy split, at most


@dataclass
class GreedySplit:
    slowest_ps: int
    counts: list[dict[str, int]]
    """Per node (in the order given): whole KV groups and the SHARDED units it holds."""


@dataclass
class _State:
    steps: list[dict[str, int]]
    size: dict[str, int]
    t: list[int]
    room: list[int]
    x: list[dict[str, int]]


def greedy_split(p: Problem, nodes: list[NodeInput]) -> GreedySplit | None:
    """A simple split over all of `nodes`: unit types by decreasing read, each type's units to
    the nodes that would finish them soonest among those with room (as one unit at a time
    would go), then single units moved, or traded for units of another type, off the slowest
    node while that makes it faster without making another as slow. None when some unit fits
    nowhere."""
    c, g = p.costs, p.q_per_kv
    size: dict[str, int] = {KV_GROUP: g * c.held(Unit.Q_HEAD) + c.held(Unit.KV_HEAD)}
    size.update({u: c.held(u) for u in SHARDED})
    count: dict[str, int] = {KV_GROUP: c.total_units[Unit.KV_HEAD]}
    count.update({u: c.total_units[u] for u in SHARDED})
    read: dict[str, float] = {KV_GROUP: g * c.per_token(Unit.Q_HEAD) + c.per_token(Unit.KV_HEAD)}
    read.update({u: c.per_token(u) for u in SHARDED})
    kinds = sorted((u for u in size if count[u]), key=lambda u: -read[u])

    def step(u: str, bw: float) -> int:
        if u == KV_GROUP:
            return group_time_ps(p, bw)
        return time_coefficient(read[u], bw)

    s = _State(
        steps=[{u: step(u, n.bandwidth_gbps) for u in kinds} for n in nodes],
        size=size,
        t=[base_time_ps(p, n.bandwidth_gbps) for n in nodes],
        room=[n.budget - fixed_bytes(p) for n in nodes],
        x=[dict.fromkeys([KV_GROUP, *SHARDED], 0) for _ in nodes],
    )
    for u in kinds:
        if not _pour(s, u, count[u]):
            return None
    for _ in range(GREEDY_MOVES):
        if not _improve(s, kinds):
            break
    return GreedySplit(max(s.t), s.x)


def group_time_ps(p: Problem, bandwidth_gbps: float) -> int:
    """A whole KV group's time coefficient on a node, as the CP-SAT model counts it."""
    c = p.costs
    q = time_coefficient(c.per_token(Unit.Q_HEAD), bandwidth_gbps)
    return p.q_per_kv * q + time_coefficient(c.per_token(Unit.KV_HEAD), bandwidth_gbps)


def _pour(s: _State, u: str, count: int) -> bool:
    """Give `count` units of u to the nodes whose next unit would finish soonest: the first
    `count` finish times t_i + j · step_i over every node's room, ties to the lower index."""
    caps = [max(r, 0) // s.size[u] if s.size[u] > 0 else count for r in s.room]
    if sum(caps) < count:
        return False

    def taken(level: int) -> list[int]:
        """Units each node takes whose finish time is at most `level`."""
        return [
            min(cap, max(0, (level - t) // st[u])) if st[u] > 0 else cap * (level >= t)
            for cap, t, st in zip(caps, s.t, s.steps)
        ]

    lo, hi = 0, max(t + st[u] * cap for t, st, cap in zip(s.t, s.steps, caps))
    while lo < hi:  # the smallest finish time by which `count` units are done
        mid = (lo + hi) // 2
        if sum(taken(mid)) >= count:
            hi = mid
        else:
            lo = mid + 1
    give = taken(lo - 1)
    extra = count - sum(give)
    for i, more in enumerate(taken(lo)):
        add = min(more - give[i], extra)
        give[i] += add
        extra -= add
    for i, n in enumerate(give):
        s.x[i][u] += n
        s.t[i] += n * s.steps[i][u]
        s.room[i] -= n * s.size[u]
    return True


def _improve(s: _State, kinds: list[str]) -> bool:
    b = max(range(len(s.t)), key=lambda i: (s.t[i], -i))
    move = _best_move(b, kinds, s)
    if move is None:
        return False
    n, u, v, back = move
    steps, size = s.steps, s.size
    s.x[b][u] -= 1
    s.x[n][u] += 1
    s.x[n][v] -= back
    s.x[b][v] += back
    s.t[b] += back * steps[b][v] - steps[b][u]
    s.t[n] += steps[n][u] - back * steps[n][v]
    s.room[b] += size[u] - back * size[v]
    s.room[n] -= size[u] - back * size[v]
    return True


def _best_move(b: int, kinds: list[str], s: _State) -> tuple[int, str, str, int] | None:
    """The move off node b that leaves the pair (b, n) slowest-soonest: one unit of u to n,
    and `back` units of v from n (none, or as many as balances the two), if that ends below
    b's time now."""
    t, room, x, steps, size = s.t, s.room, s.x, s.steps, s.size
    best: tuple[tuple[int, str, str, int], int] | None = None
    for n in range(len(t)):
        if n == b:
            continue
        for u in kinds:
            if not x[b][u]:
                continue
            trades = [(u, 0)]
            for v in kinds:
                # A unit no layer of the stage reads (attention in a stage of linear
                # layers only) balances nothing.
                if v != u and x[n][v] and steps[b][v] + steps[n][v] > 0:
                    # Balance b and n: t_b - s_bu + c s_bv = t_n + s_nu - c s_nv.
                    gap = t[b] - steps[b][u] - t[n] - steps[n][u]
                    ideal = -gap // (steps[b][v] + steps[n][v])
                    trades += [(v, c) for c in (ideal, ideal + 1) if 0 < c <= x[n][v]]
            for v, back in trades:
                moved = size[u] - back * size[v]
                if room[n] < moved or room[b] < -moved:
                    continue
                tb = t[b] - steps[b][u] + back * steps[b][v]
                tn = t[n] + steps[n][u] - back * steps[n][v]
                worst = max(tb, tn)
                if worst < t[b] and (best is None or worst < best[1]):
                    best = ((n, u, v, back), worst)
    return None if best is None else best[0]
