"""What the layout search knows about a stage before solving it: prefix sums over the layers,
a group's lower bound on any range of layers, whether the range can fit at all, and the exact
price of a one-node stage (which has no split to choose).

A group h's lower bound on layers [a, b) is the fluid bound of that stage: its ranks read the
sharded bytes of those layers spread over their summed bandwidth, each reads the replicated
ones (and on stage 0 the embeddings and output head), plus the fixed per-layer time and the
all-reduces over h's cheapest ring (exact: the solver can do no better than that ring). It is
at most the solver's optimum for that stage, which reads the same bytes at integer units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from planner.calibration import effective_bandwidth_gbps, fixed_us
from planner.context import PlanningContext
from planner.costs import UNITS
from planner.problem import PS_PER_NS, time_coefficient
from planner.ring import PS_PER_US
from planner.stages import transfer_ps
from planner.topology import ring_allreduce_us

BOUND_SLACK = 1e-9  # relative: prefix sums of floats against the solver's own sums


@dataclass(frozen=True)
class Group:
    """A candidate stage: its nodes (sorted) and its cheapest ring's price."""

    nodes: tuple[str, ...]
    ring_us: float
    """One all-reduce over the group's cheapest ring (0 for one node)."""
    bandwidth: float
    """Summed effective bandwidth (GB/s) of its nodes."""
    speeds: tuple[float, ...]
    """Each node's peak bandwidth (GB/s), in the order of `nodes`."""
    budgets: tuple[int, ...]

    @property
    def signature(self) -> tuple[object, ...]:
        """What a stage's price depends on: its nodes' memory and bandwidth, and its ring's
        price (groups alike in these are priced alike on every range of layers)."""
        return (tuple(sorted(zip(self.budgets, self.speeds))), self.ring_us)


@dataclass
class Bounds:
    """Prefix sums over layers (index i: layers [0, i)) and the prices built on them."""

    ctx: PlanningContext
    sharded_read: list[float]
    replicated_read: list[float]
    sharded_held: list[int]
    replicated_held: list[int]
    outer_read: float
    outer_held: int
    overhead: int
    kinds: list[tuple[int, ...]]
    """kinds[i]: how many layers of each kind (alike bytes) layers [0, i) hold."""
    _single: dict[tuple[object, ...], int | None] = field(default_factory=dict)
    _transfers: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = field(default_factory=dict)
    _capped: dict[tuple[object, ...], float] = field(default_factory=dict)
    _matrices: dict[tuple[object, bool], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )

    @classmethod
    def of(cls, ctx: PlanningContext) -> Bounds:
        table, n = ctx.table, ctx.spec.num_layers
        prefixes = [table.costs((0, i), outer=False) for i in range(n + 1)]
        outer = table.costs((0, 0), outer=True)
        return cls(
            ctx,
            [c.sharded_read for c in prefixes],
            [c.replicated_read for c in prefixes],
            [c.sharded_held for c in prefixes],
            [c.replicated_held for c in prefixes],
            outer.replicated_read,
            outer.replicated_held,
            ctx.request.constraints.overhead_bytes,
            _kind_counts(ctx),
        )

    def content(self, a: int, b: int) -> tuple[int, ...]:
        """What a stage's price depends on about its layers [a, b): how many of each kind."""
        return tuple(y - x for x, y in zip(self.kinds[a], self.kinds[b]))

    @property
    def layers(self) -> int:
        return len(self.sharded_read) - 1

    def group(self, nodes: tuple[str, ...], ring: list[str]) -> Group:
        cluster = self.ctx.cluster
        pricing = cluster.pricing
        backend = pricing.backend(ring)
        pairs = zip(ring, ring[1:] + ring[:1]) if len(ring) > 1 else []
        hops = [pricing.hop(a, b, backend) for a, b in pairs]
        us = ring_allreduce_us(hops, pricing.message_bytes, backend) if hops else 0.0
        speeds = tuple(cluster.nodes[n].bandwidth_gbps for n in nodes)
        bw = sum(effective_bandwidth_gbps(v) for v in speeds)
        return Group(nodes, us, bw, speeds, tuple(cluster.budgets[n] for n in nodes))

    def per_layer_read(self, k: int) -> list[float]:
        """Bytes k ranks read for each layer (sharded once, replicated k times)."""
        return _per_layer(self.sharded_read, self.replicated_read, k)

    def per_layer_held(self, k: int) -> list[float]:
        """Bytes k ranks hold for each layer (sharded once, replicated k times)."""
        return _per_layer(self.sharded_held, self.replicated_held, k)

    @property
    def lightest(self) -> int:
        """The fewest bytes any rank of any stage holds for one layer (at least 1)."""
        return max(1, math.floor(min(self.per_layer_held(1))))

    def allreduce_ps(self, g: Group, count: int) -> int:
        """The group's ring for `count` layers, as `RingPricing.ring_ps` rounds it."""
        return round(g.ring_us * (2 * count) * PS_PER_US) if len(g.nodes) > 1 else 0

    def fits(self, g: Group, a: int, b: int, first: bool) -> bool:
        """Can g hold layers [a, b) at all: every rank its replicated bytes, all of them
        together the sharded ones (exact for one node)."""
        whole = self.replicated_held[b] - self.replicated_held[a] + self.overhead
        whole += self.outer_held if first else 0
        if min(g.budgets) < whole:
            return False
        return sum(g.budgets) - len(g.nodes) * whole >= self.sharded_held[b] - self.sharded_held[a]

    def lower_ps(self, g: Group, a: int, b: int, first: bool) -> int:
        """No split of layers [a, b) over g is faster (module docstring)."""
        replicated = self.replicated_read[b] - self.replicated_read[a]
        replicated += self.outer_read if first else 0
        read = self.sharded_read[b] - self.sharded_read[a] + len(g.nodes) * replicated
        fluid = math.floor(read * PS_PER_NS / g.bandwidth * (1 - BOUND_SLACK)) - 1
        return max(fluid, 0) + round(fixed_us(b - a) * 1e6) + self.allreduce_ps(g, b - a)

    def capped_ps(self, g: Group, a: int, b: int, first: bool) -> float:
        """A sharper bound than `lower_ps`, with memory: every rank reads the replicated
        bytes, and no rank reads more sharded bytes than it can hold (a unit's read never
        exceeds its bytes held) next to them; the sharded reads then fill the ranks like
        water, each up to the slowest rank's time T (inf: they cannot hold the range)."""
        key = (g.signature, first, self.content(a, b))
        if key not in self._capped:
            self._capped[key] = self._capped_ps(g, a, b, first)
        return self._capped[key]

    def _capped_ps(self, g: Group, a: int, b: int, first: bool) -> float:
        replicated = self.replicated_read[b] - self.replicated_read[a]
        replicated += self.outer_read if first else 0
        whole = self.replicated_held[b] - self.replicated_held[a] + self.overhead
        whole += self.outer_held if first else 0
        need = self.sharded_read[b] - self.sharded_read[a]
        speeds = [effective_bandwidth_gbps(v) / PS_PER_NS for v in g.speeds]  # bytes per ps
        caps = [budget - whole for budget in g.budgets]
        if min(caps) < 0 or sum(caps) < need:
            return math.inf
        t = _water_level(caps, speeds, replicated, need)
        fixed = round(fixed_us(b - a) * 1e6)
        return t * (1 - BOUND_SLACK) - 1 + fixed + self.allreduce_ps(g, b - a)

    def lower_matrix(self, g: Group, first: bool) -> tuple[np.ndarray, np.ndarray]:
        """`lower_ps` and `fits` of g for every range [a, b) at once (b ≤ a: +inf, False),
        as (bounds, fits) matrices indexed [a, b]; the same sums as the scalar forms."""
        key = (g.signature, first)
        if key not in self._matrices:
            self._matrices[key] = self._lower_matrix(g, first)
        return self._matrices[key]

    def _lower_matrix(self, g: Group, first: bool) -> tuple[np.ndarray, np.ndarray]:
        k = len(g.nodes)
        sh, rep = np.array(self.sharded_read), np.array(self.replicated_read)
        replicated = rep[None, :] - rep[:, None] + (self.outer_read if first else 0.0)
        read = sh[None, :] - sh[:, None] + k * replicated
        fluid = np.maximum(np.floor(read * PS_PER_NS / g.bandwidth * (1 - BOUND_SLACK)) - 1, 0)
        n = np.arange(self.layers + 1)
        count = n[None, :] - n[:, None]
        fixed = np.array([round(fixed_us(c) * 1e6) if c > 0 else 0 for c in range(self.layers + 1)])
        ring = np.array([self.allreduce_ps(g, c) for c in range(self.layers + 1)])
        lower = fluid + fixed[np.maximum(count, 0)] + ring[np.maximum(count, 0)]
        hs, hr = np.array(self.sharded_held), np.array(self.replicated_held)
        whole = hr[None, :] - hr[:, None] + self.overhead + (self.outer_held if first else 0)
        room = sum(g.budgets) - k * whole
        fits = (min(g.budgets) >= whole) & (room >= hs[None, :] - hs[:, None]) & (count > 0)
        return np.where(count > 0, lower, np.inf), fits

    def single_ps(self, node: str, a: int, b: int, first: bool) -> int | None:
        """The exact price of layers [a, b) on one node (None when they do not fit): it holds
        every unit, so there is no split to search."""
        cluster = self.ctx.cluster
        key = (cluster.budgets[node], cluster.nodes[node].bandwidth_gbps, first, self.content(a, b))
        if key not in self._single:
            self._single[key] = self._single_ps(node, a, b, first)
        return self._single[key]

    def _single_ps(self, node: str, a: int, b: int, first: bool) -> int | None:
        ctx = self.ctx
        costs = ctx.table.costs((a, b), outer=first)
        held = costs.replicated_held + costs.sharded_held + self.overhead
        if held > ctx.cluster.budgets[node]:
            return None
        bw = ctx.cluster.nodes[node].bandwidth_gbps
        units = sum(time_coefficient(costs.per_token(u), bw) * costs.total_units[u] for u in UNITS)
        base = time_coefficient(costs.replicated_read, bw) + round(fixed_us(b - a) * 1e6)
        return base + units

    def transfer(self, sender: Group, receiver: Group) -> int:
        """Stage `sender`'s output to `receiver`, from its cheapest leader."""
        key = (sender.nodes, receiver.nodes)
        if key not in self._transfers:
            cluster = self.ctx.cluster
            found = transfer_ps(cluster, list(sender.nodes), list(receiver.nodes))
            self._transfers[key] = found[0]
        return self._transfers[key]


def _kind_counts(ctx: PlanningContext) -> list[tuple[int, ...]]:
    """Prefix counts of layer kinds: layers whose bytes per unit are all alike are one kind
    (a range's costs are sums over its layers, so they depend on these counts only)."""
    kinds: dict[tuple[object, ...], int] = {}
    of = []
    for i in range(ctx.spec.num_layers):
        c = ctx.table.costs((i, i + 1), outer=False)
        key = (
            tuple(sorted(c.weight.items())),
            tuple(sorted(c.cache.items())),
            c.replicated_weight,
            c.replicated_cache,
        )
        of.append(kinds.setdefault(key, len(kinds)))
    out = [(0,) * len(kinds)]
    for k in of:
        out.append(tuple(n + (j == k) for j, n in enumerate(out[-1])))
    return out


def _water_level(caps: list[int], speeds: list[float], replicated: float, need: float) -> float:
    """The least T with Σ_n min(cap_n, T·speed_n − replicated) ≥ need, T no less than any
    rank's replicated read: rank n fills until T_n = (cap_n + replicated) / speed_n."""
    t = max(replicated / v for v in speeds)
    full = sorted(((c + replicated) / v, c, v) for c, v in zip(caps, speeds))
    held, rate, count = 0.0, 0.0, 0  # saturated ranks' caps; the others' speeds and number
    for until, cap, speed in full:
        if until <= t:
            held += cap
        else:
            rate += speed
            count += 1
    for until, cap, speed in full:
        if until <= t:
            continue
        level = held + until * rate - count * replicated
        if level >= need:
            break
        t, held, rate, count = until, held + cap, rate - speed, count - 1
    if rate <= 0:
        return t
    return max(t, (need - held + count * replicated) / rate)


def _per_layer(sharded: Sequence[float], replicated: Sequence[float], k: int) -> list[float]:
    return [
        (sharded[i + 1] - sharded[i]) + k * (replicated[i + 1] - replicated[i])
        for i in range(len(sharded) - 1)
    ]
