"""Which figures of a topology were measured, assumed or given by the user (`Plan.sources`)."""

from __future__ import annotations

from protocol.measurements import FigureSource
from protocol.schema import Topology


def figure_sources(topology: Topology) -> dict[str, FigureSource]:
    """`node:ID` and `link:A-B` -> source. A node's bandwidth is always given, so an unmarked
    node is the user's; an unmarked link is the user's only where it gives a figure (else the
    kind's defaults were assumed)."""
    out = {f"node:{n.id}": n.source or FigureSource.USER for n in topology.nodes}
    for link in topology.links:
        given = link.bandwidth_gbps is not None or link.latency_us is not None
        default = FigureSource.USER if given else FigureSource.ASSUMED
        out[f"link:{link.a}-{link.b}"] = link.source or default
    return out
