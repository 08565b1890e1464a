"""`python -m bench.reality_fit`: re-derive `planner.calibration`'s fitted constants.

Every row of `bench.reality` marked `fit` is decomposed into what the three constants scale:

    ms per token = read_ms_at_peak / efficiency + layers × LAYER_FIXED_US
                   + all-reduces × (SYNC_US + the ring's wire time per all-reduce)

(read from the planner's own plan at the committed constants, so the decomposition is exact),
and a grid search finds the constants that minimise the worst relative error (ties go to the
least sum of squares): first efficiency and per-layer time on the single-node rows, then the
synchronisation on the multi-node rows. A fit row whose family the planner cannot read is
left out (the reality table says why).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

from bench.reality import (
    CONFIGS,
    MEASUREMENTS,
    Measurement,
    Role,
    estimate,
    request_for,
)
from planner import calibration as cal
from planner.calibration import Collective
from planner.plan import make_plan


@dataclass(frozen=True)
class Parts:
    measured_ms: float
    read_ms_at_peak: float
    layers: int
    allreduces: int
    wire_us: float

    def ms(self, efficiency: float, layer_us: float, sync_us: float) -> float:
        comm = self.allreduces * (sync_us + self.wire_us) / 1e3
        return self.read_ms_at_peak / efficiency + self.layers * layer_us / 1e3 + comm


def _from_plan(m: Measurement) -> Parts | None:
    if estimate(m).estimate is None:
        return None
    # the same request the reality table plans
    plan = make_plan(request_for(m, json.loads((CONFIGS / m.config).read_text())))
    assert plan.model is not None
    layers = plan.model.num_layers
    slowest = max(r.decode_ms for r in plan.ranks) - cal.fixed_us(layers) / 1e3
    allreduces = 2 * layers if m.nodes > 1 else 0  # after attention and after the MLP
    wire = 0.0
    if allreduces:
        assert plan.estimates is not None
        wire = plan.estimates.allreduce_ms * 1e3 / allreduces - cal.SYNC_US[Collective.JACCL]
    return Parts(
        1e3 / m.tokens_per_s,
        slowest * cal.DECODE_BANDWIDTH_EFFICIENCY,
        layers,
        allreduces,
        wire,
    )


def fit_parts() -> list[tuple[Measurement, Parts]]:
    out = []
    for m in MEASUREMENTS:
        if m.role is not Role.FIT:
            continue
        parts = _from_plan(m)
        if parts is not None:
            out.append((m, parts))
    return out


def _worst(rows: list[Parts], e: float, layer_us: float, sync_us: float) -> tuple[float, float]:
    """(worst relative error, sum of squared errors): minimax first, least squares on ties."""
    errors = [p.measured_ms / p.ms(e, layer_us, sync_us) - 1 for p in rows]
    return round(max(abs(x) for x in errors), 4), sum(x * x for x in errors)


def fit(rows: list[tuple[Measurement, Parts]]) -> tuple[float, float, float]:
    """(efficiency, µs a layer, µs a synchronisation). Single-node rows have no all-reduce, so
    they fit the first two alone (they differ in layers per byte read, which separates them);
    the multi-node rows then fit the synchronisation."""
    single = [p for m, p in rows if m.nodes == 1]
    multi = [p for m, p in rows if m.nodes > 1]
    grid = itertools.product(range(400, 955, 5), range(0, 301))
    _, e, layer_us = min((_worst(single, e / 1000, f, 0.0), e / 1000, float(f)) for e, f in grid)
    _, sync_us = min((_worst(multi, e, layer_us, s), float(s)) for s in range(0, 301))
    return e, layer_us, sync_us


def main() -> None:
    rows = fit_parts()
    e, layer_us, sync_us = fit(rows)
    worst, _ = _worst([p for _, p in rows], e, layer_us, sync_us)
    print(f"fit on {len(rows)} rows: efficiency {e:.3f}, {layer_us:g} µs a layer, ", end="")
    print(f"{sync_us:g} µs a synchronisation; worst error {100 * worst:.1f} %")
    for m, p in rows:
        tps = 1e3 / p.ms(e, layer_us, sync_us)
        print(f"  {m.model} × {m.nodes}: measured {m.tokens_per_s}, fitted {tps:.1f}")


if __name__ == "__main__":
    main()
