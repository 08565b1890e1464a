"""A topology file from what agents report: memory, chip, measurements, shared subnets.

Figures the agents measured come first: a node's memory bandwidth, a link's latency and
bandwidth (the pair's slower direction), with `source: measured`. Where nothing was measured
the chip table gives a node's bandwidth (`source: assumed`) and two nodes with addresses in one
subnet are linked over that interface with the kind's default figures. A Thunderbolt link is
RDMA only when both ends have RDMA enabled and a device listed (or did not say). The result is a
starting point that a person checks and may edit; every guess is listed in `notes`.
"""

from __future__ import annotations

import ipaddress
import itertools
import time
from typing import Any

from planner.chips import bandwidth_for
from protocol.measurements import FigureSource, LinkMeasurement
from protocol.schema import GB, LinkKind, NodeFacts

UNKNOWN_CHIP_GBPS = 100.0


def _networks(f: NodeFacts) -> dict[ipaddress.IPv4Network | ipaddress.IPv6Network, tuple[str, str]]:
    """network -> (address, interface kind), loopback left out."""
    out: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, tuple[str, str]] = {}
    for iface in f.interfaces:
        if iface.kind == "loopback":
            continue
        for a in iface.addresses:
            try:
                ip = ipaddress.ip_interface(a)
            except ValueError:
                continue
            if ip.is_loopback or (ip.is_link_local and ip.version == 6):
                continue
            out.setdefault(ip.network, (str(ip.ip), iface.kind))
    return out


def _clock(unix: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(unix)) + f".{int(unix * 1000) % 1000:03d} UTC"


def _rdma_ready(f: NodeFacts) -> bool:
    return bool(f.rdma) and f.rdma_devices != []


def _node(f: NodeFacts, addresses: list[str], notes: list[str]) -> dict[str, Any]:
    m = f.measurements
    measured = m.memory_bandwidth_gbps if m else None
    bw = measured or bandwidth_for(f.chip)
    if m is not None:
        notes.append(
            f"{f.node_id}: measured at {_clock(m.measured_at)} in {m.took_s:g}s (budget 10s): "
            "memory "
            + (f"{measured:g} GB/s" if measured else "not measured")
            + f", {len(m.links)} link(s)"
            + "".join(f"; {n}" for n in m.notes)
        )
    elif bw is None:
        notes.append(
            f"{f.node_id}: unknown memory bandwidth for chip {f.chip!r}; "
            "set bandwidth_gbps (GB/s) by hand"
        )
    node: dict[str, Any] = {
        "id": f.node_id,
        "memory_bytes": f.memory_bytes,
        "available_bytes": f.available_bytes,
        "bandwidth_gbps": bw or UNKNOWN_CHIP_GBPS,
        "chip": f.chip,
        "source": (FigureSource.MEASURED if measured else FigureSource.ASSUMED).value,
    }
    if addresses:
        node["address"] = addresses[0]
    return node


def _measured(facts: list[NodeFacts]) -> dict[tuple[str, str], list[LinkMeasurement]]:
    """(a, b) with a < b -> what either end measured of the other."""
    ids = {f.node_id for f in facts}
    out: dict[tuple[str, str], list[LinkMeasurement]] = {}
    for f in facts:
        for m in f.measurements.links if f.measurements else []:
            if m.peer in ids and m.peer != f.node_id:
                a, b = sorted((f.node_id, m.peer))
                out.setdefault((a, b), []).append(m)
    return out


def _measured_link(a: NodeFacts, b: NodeFacts, seen: list[LinkMeasurement]) -> dict[str, Any]:
    # The fastest interface carries the ring; a link is as fast as its slower direction.
    best = max(seen, key=lambda m: m.bandwidth_gbps).kind
    same = [m for m in seen if m.kind == best]
    if best == "thunderbolt":
        kind: LinkKind = "rdma" if _rdma_ready(a) and _rdma_ready(b) else "thunderbolt"
    else:
        kind = "ethernet"
    link: dict[str, Any] = {"a": a.node_id, "b": b.node_id, "kind": kind}
    if kind == "rdma":
        return link  # TCP figures say nothing of RDMA: the kind's defaults apply
    link["bandwidth_gbps"] = min(m.bandwidth_gbps for m in same)
    link["latency_us"] = round(max(m.rtt_median_us for m in same) / 2, 1)
    link["source"] = FigureSource.MEASURED.value
    return link


def _inferred_kind(a: NodeFacts, b: NodeFacts, kinds: set[str]) -> LinkKind:
    if "thunderbolt" in kinds:
        return "rdma" if _rdma_ready(a) and _rdma_ready(b) else "thunderbolt"
    return "ethernet"


def build_topology(facts: list[NodeFacts]) -> tuple[dict[str, Any], list[str]]:
    notes: list[str] = []
    nodes: list[dict[str, Any]] = []
    nets = {f.node_id: _networks(f) for f in facts}
    for f in sorted(facts, key=lambda f: f.node_id):
        addresses = sorted(a for a, kind in nets[f.node_id].values() if kind != "wifi")
        nodes.append(_node(f, addresses, notes))
        notes.append(
            f"{f.node_id}: {f.memory_bytes / GB:.0f} GB, {f.available_bytes / GB:.0f} GB free now"
        )
    links: list[dict[str, Any]] = []
    by_id = {f.node_id: f for f in facts}
    measured = _measured(facts)
    for a, b in itertools.combinations(sorted(nets), 2):
        if (a, b) in measured:
            link = _measured_link(by_id[a], by_id[b], measured[(a, b)])
            shown = (
                f"{link['bandwidth_gbps']:g} Gb/s, {link['latency_us']:g} µs one way"
                if "source" in link
                else "RDMA on both ends: RDMA defaults, TCP figures do not apply"
            )
            notes.append(f"{a}-{b}: measured {link['kind']} link: {shown}")
            links.append(link)
            continue
        shared = set(nets[a]) & set(nets[b])
        if not shared:
            continue
        kinds = {nets[a][n][1] for n in shared} | {nets[b][n][1] for n in shared}
        links.append({"a": a, "b": b, "kind": _inferred_kind(by_id[a], by_id[b], kinds)})
    linked = {x for link in links for x in (link["a"], link["b"])}
    for f in facts:
        if len(facts) > 1 and f.node_id not in linked:
            notes.append(f"{f.node_id}: shares no subnet with another node; add its links")
    return {"nodes": nodes, "links": links}, notes
