"""A quick split that bounds the solver from above: often it is already optimal."""

from __future__ import annotations

import heapq

from planner.costs import UNITS
from planner.problem import NodeInput, Problem, fixed_bytes, time_coefficient

SHARDED = ("ffn_block", "expert", "lin_k_head")
GREEDY_MOVES = 200  # improving moves in the greedy split, at most


def greedy_time_ps(p: Problem, nodes: list[NodeInput]) -> int | None:
    """The slowest rank's time (as the model counts it) of a simple split over all of `nodes`:
    unit types by decreasing read, each unit to the node that would finish it soonest among
    those with room, then single units moved, or traded for units of another type, off the
    slowest node while that makes it faster without making another as slow. None when some
    unit fits nowhere."""
    c, g = p.costs, p.q_per_kv
    fixed = fixed_bytes(p)
    held = {u: c.weight[u] + c.cache[u] for u in UNITS}
    read = {u: c.read[u] + c.cache[u] for u in UNITS}
    size = {"kv_group": g * held["q_head"] + held["kv_head"]}
    size.update({u: held[u] for u in SHARDED})
    count = {"kv_group": c.total_units["kv_head"]}
    count.update({u: c.total_units[u] for u in SHARDED})
    read["kv_group"] = g * read["q_head"] + read["kv_head"]
    kinds = sorted((u for u in size if count[u]), key=lambda u: -read[u])

    def step(u: str, bw: float) -> int:
        if u == "kv_group":
            return g * time_coefficient(read["q_head"], bw) + time_coefficient(read["kv_head"], bw)
        return time_coefficient(read[u], bw)

    steps = [{u: step(u, n.bandwidth_gbps) for u in kinds} for n in nodes]
    t = [time_coefficient(c.replicated_read, n.bandwidth_gbps) for n in nodes]
    room = [n.budget - fixed for n in nodes]
    x = [dict.fromkeys(kinds, 0) for _ in nodes]
    for u in kinds:
        heap = [(t[i] + steps[i][u], i) for i in range(len(nodes)) if room[i] >= size[u]]
        heapq.heapify(heap)
        for _ in range(count[u]):
            while heap and room[heap[0][1]] < size[u]:
                heapq.heappop(heap)
            if not heap:
                return None
            _, i = heapq.heappop(heap)
            room[i] -= size[u]
            t[i] += steps[i][u]
            x[i][u] += 1
            heapq.heappush(heap, (t[i] + steps[i][u], i))
    for _ in range(GREEDY_MOVES):
        b = max(range(len(nodes)), key=lambda i: (t[i], -i))
        move = _best_move(b, kinds, t, room, x, steps, size)
        if move is None:
            break
        (n, u, v, back), _ = move
        x[b][u] -= 1
        x[n][u] += 1
        x[n][v] -= back
        x[b][v] += back
        t[b] += back * steps[b][v] - steps[b][u]
        t[n] += steps[n][u] - back * steps[n][v]
        room[b] += size[u] - back * size[v]
        room[n] -= size[u] - back * size[v]
    return max(t)


def _best_move(
    b: int,
    kinds: list[str],
    t: list[int],
    room: list[int],
    x: list[dict[str, int]],
    steps: list[dict[str, int]],
    size: dict[str, int],
) -> tuple[tuple[int, str, str, int], int] | None:
    """The move off node b that leaves the pair (b, n) slowest-soonest: one unit of u to n,
    and `back` units of v from n (none, or as many as balances the two), if that ends below
    b's time now."""
    best: tuple[tuple[int, str, str, int], int] | None = None
    for n in range(len(t)):
        if n == b:
            continue
        for u in kinds:
            if not x[b][u]:
                continue
            trades = [(u, 0)]
            for v in kinds:
                if v != u and x[n][v]:
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
    return best
