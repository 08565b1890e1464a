"""The stage groups the layout search tries, their symmetry, and the bounds on a partial layout.

Twins — nodes with the same memory and bandwidth and the same hop to every other node — are
interchangeable in any layout, so a group is a count per twin class, and a layout always uses
the lowest-numbered free twins first (`canonical`): any layout maps onto one that does by
swapping twins, which changes no price. When every count vector is at most MAX_GROUPS groups,
the enumeration is complete (in `pipeline` mode: at most EXACT_CLASSES classes). Beyond that
the family is restricted to runs of up to MAX_RUN consecutive nodes along the cluster's
cheapest ring (single nodes in `pipeline`), each stage's run starting where the previous
one's ends; `complete` is then false and no plan from it is called optimal.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from planner.calibration import effective_bandwidth_gbps, fixed_us
from planner.layout_bounds import Bounds, Group
from planner.layout_proof import cheapest_send_ps
from planner.problem import PS_PER_NS
from planner.ring import PS_PER_US

MAX_GROUPS = 256
EXACT_CLASSES = 6
MAX_RUN = 8
RING_ORDER_S = 1.0  # the runs family's order: the cheapest ring, or the best found by then
RATE_SLACK_PS = 2  # per layer: the per-range bounds floor their sums, the rates do not


def twin_classes(bounds: Bounds) -> list[list[str]]:
    """Nodes in classes of twins (each class in id order, classes by their first id)."""
    cluster = bounds.ctx.cluster
    ids = sorted(cluster.nodes)
    classes: list[list[str]] = []
    for n in ids:
        for c in classes:
            m = c[0]
            alike = (cluster.budgets[n], cluster.nodes[n].bandwidth_gbps) == (
                cluster.budgets[m],
                cluster.nodes[m].bandwidth_gbps,
            )
            if alike and all(
                cluster.hops[n, x] == cluster.hops[m, x] for x in ids if x not in (n, m)
            ):
                c.append(n)
                break
        else:
            classes.append([n])
    return classes


@dataclass
class Candidates:
    bounds: Bounds
    classes: list[list[str]]
    templates: list[tuple[int, ...]] | None
    """Count vectors over the twin classes (None: the runs family)."""
    order: list[str]
    """The runs family's ring order (empty with templates)."""
    longest: int
    """The longest run of the runs family."""
    complete: bool
    min_transfer: int
    _groups: dict[tuple[str, ...], Group] = field(default_factory=dict)
    _rates: dict[tuple[str, ...], tuple[float, int]] = field(default_factory=dict)
    _family: list[Group] = field(default_factory=list)

    def group(self, nodes: tuple[str, ...]) -> Group:
        if nodes not in self._groups:
            ring = self.bounds.ctx.cluster.ring(list(nodes)) if len(nodes) > 1 else list(nodes)
            self._groups[nodes] = self.bounds.group(nodes, ring)
        return self._groups[nodes]

    def next_groups(self, used: set[str], last: Group | None) -> list[Group]:
        """The groups a layout using `used`, whose last stage is `last`, may take next,
        cheapest per layer first."""
        out = []
        if self.templates is None:
            out = [self.group(r) for r in self._runs(last) if not used.intersection(r)]
        else:
            free = [[n for n in c if n not in used] for c in self.classes]
            for t in self.templates:
                if all(k <= len(f) for k, f in zip(t, free)):
                    nodes = tuple(sorted(n for k, f in zip(t, free) for n in f[:k]))
                    out.append(self.group(nodes))
        return sorted(out, key=lambda g: (self.rate(g)[0], g.nodes))

    def _runs(self, last: Group | None) -> list[tuple[str, ...]]:
        """Runs along `order`: anywhere for stage 0, else starting after `last`'s run."""
        n = len(self.order)
        if last is None:
            starts = range(n)
        else:
            at = {v: i for i, v in enumerate(self.order)}
            inside = {at[v] for v in last.nodes}
            end = next(i for i in inside if (i + 1) % n not in inside) if len(inside) < n else 0
            starts = range(end + 1, end + 2)
        return self._runs_from(starts)

    def _runs_from(self, starts: range) -> list[tuple[str, ...]]:
        """Runs of 1 to `longest` nodes along `order` from each start (nodes sorted)."""
        n = len(self.order)
        return [
            tuple(sorted(self.order[(i + j) % n] for j in range(k)))
            for i in starts
            for k in range(1, min(self.longest, n) + 1)
        ]

    def rate(self, g: Group) -> tuple[float, int]:
        """(a lower bound per layer, the most layers g could hold) when g is not stage 0."""
        if g.nodes not in self._rates:
            self._rates[g.nodes] = self._rate(g)
        return self._rates[g.nodes]

    def _rate(self, g: Group) -> tuple[float, int]:
        b, k = self.bounds, len(g.nodes)
        per_layer, held = b.per_layer_read(k), b.per_layer_held(k)
        ring = g.ring_us * 2 * PS_PER_US if k > 1 else 0.0
        rate = min(per_layer) * PS_PER_NS / g.bandwidth + fixed_us(1) * 1e6 + ring
        room = sum(g.budgets) - k * b.overhead
        cap = b.layers if min(held) <= 0 else max(0, min(b.layers, room // min(held)))
        return rate * (1 - 1e-9) - RATE_SLACK_PS, int(cap)

    def free_rate(self, used: set[str]) -> tuple[float, int]:
        """The cheapest rate of any group of free nodes, and the most layers they could hold
        between them (their memory pooled, each layer at its lightest)."""
        groups = self._free_groups(used)
        if not groups:
            return math.inf, 0
        rate = self.rate(groups[0])[0]
        b = self.bounds
        room = sum(b.ctx.cluster.budgets[n] - b.overhead for n in self._free_nodes(used))
        return rate, min(b.layers, max(0, room) // b.lightest)

    def _free_groups(self, used: set[str]) -> list[Group]:
        """Every group of the family on free nodes (a superset of what may come next),
        cheapest per layer first."""
        if self.templates is not None:
            return self.next_groups(used, None)
        if not self._family:
            runs = set(self._runs_from(range(len(self.order))))
            self._family = sorted(
                (self.group(r) for r in runs), key=lambda g: (self.rate(g)[0], g.nodes)
            )
        return [g for g in self._family if not used.intersection(g.nodes)]

    def min_stages(self) -> int:
        """No layout holds the model in fewer stages than this (capacities at their most)."""
        caps = sorted((self.rate(g)[1] for g in self._free_groups(set())), reverse=True)
        return max(1, math.ceil(self.bounds.layers / caps[0])) if caps and caps[0] else 10**9

    def _free_nodes(self, used: set[str]) -> list[str]:
        return [n for c in self.classes for n in c if n not in used]

    def outer_lower_ps(self) -> float:
        """Stage 0's ranks each read the embeddings and head: at best at the fastest node."""
        cluster = self.bounds.ctx.cluster
        fastest = max(effective_bandwidth_gbps(n.bandwidth_gbps) for n in cluster.nodes.values())
        return self.bounds.outer_read * PS_PER_NS / fastest * (1 - 1e-9)

    def sequence_lower_ps(self, seq: list[Group], used: set[str]) -> float:
        """A lower bound on the stage prices of any layout that starts with `seq`: each of its
        groups runs a layer at least, the rest go to the cheapest rates within capacity."""
        layers = self.bounds.layers
        slots = [self.rate(g) for g in seq]
        if len(slots) > layers:
            return math.inf
        total = sum(r for r, _ in slots) + self.outer_lower_ps()
        left = layers - len(slots)
        room = [(r, c - 1) for r, c in slots if c >= 1]
        if len(room) < len(slots):
            return math.inf
        room.append(self.free_rate(used))
        for r, c in sorted(room):
            if c <= 0 or left <= 0:
                continue  # (nothing free: an infinite rate times no layers)
            take = min(left, c)
            total += take * r
            left -= take
        return math.inf if left > 0 else total

    def free_lower_ps(self, used: set[str]) -> float:
        """A lower bound on the stage prices of any layout of the free nodes."""
        rate, cap = self.free_rate(used)
        if cap < self.bounds.layers:
            return math.inf
        return rate * self.bounds.layers + self.outer_lower_ps()


def _templates(classes: list[list[str]], pipeline: bool) -> list[tuple[int, ...]] | None:
    if pipeline:
        if len(classes) > EXACT_CLASSES:
            return None
        return [tuple(int(i == j) for j in range(len(classes))) for i in range(len(classes))]
    count = math.prod(len(c) + 1 for c in classes) - 1
    if count > MAX_GROUPS or len(classes) > EXACT_CLASSES:
        return None
    vectors = itertools.product(*(range(len(c) + 1) for c in classes))
    return [v for v in vectors if any(v)]


def candidate_groups(bounds: Bounds, pipeline: bool) -> Candidates:
    classes = twin_classes(bounds)
    templates = _templates(classes, pipeline)
    order: list[str] = []
    if templates is None:
        order = bounds.ctx.cluster.ring(sorted(bounds.ctx.cluster.nodes), RING_ORDER_S)
    longest = 1 if pipeline else MAX_RUN
    complete = templates is not None
    return Candidates(
        bounds, classes, templates, order, longest, complete, cheapest_send_ps(bounds)
    )
