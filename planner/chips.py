"""Memory bandwidth of Apple Silicon chips (GB/s, Apple's published figures).

Used to fill `bandwidth_gbps` when a topology is built from what agents report. Where a chip
comes in bins with different bandwidth (M3 Max, M4 Max) the lower figure is used: a plan made
with it still fits and is at worst a little pessimistic.
"""

from __future__ import annotations

import re

BANDWIDTH_GBPS: dict[str, float] = {
    "M1": 68,
    "M1 Pro": 200,
    "M1 Max": 400,
    "M1 Ultra": 800,
    "M2": 100,
    "M2 Pro": 200,
    "M2 Max": 400,
    "M2 Ultra": 800,
    "M3": 100,
    "M3 Pro": 150,
    "M3 Max": 300,
    "M3 Ultra": 819,
    "M4": 120,
    "M4 Pro": 273,
    "M4 Max": 410,
    "M5": 153,
    "M5 Max": 614,
}

_CHIP = re.compile(r"\b(M\d)(?:\s+(Pro|Max|Ultra))?\b")


def chip_name(brand: str) -> str | None:
    """'Apple M1 Ultra' -> 'M1 Ultra'; None for anything that is not Apple Silicon."""
    m = _CHIP.search(brand)
    if not m:
        return None
    return f"{m.group(1)} {m.group(2)}" if m.group(2) else m.group(1)


def bandwidth_for(brand: str | None) -> float | None:
    name = chip_name(brand) if brand else None
    return BANDWIDTH_GBPS.get(name) if name else None
