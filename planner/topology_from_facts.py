"""A topology file from what agents report: memory, chip, and which interfaces share a subnet.

Cables cannot be seen from software, so links are inferred: two nodes with addresses in one
subnet are linked over that interface (Thunderbolt, or RDMA when both ends have it enabled).
The result is a starting point that a person checks, and every guess is listed in `notes`.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from planner.chips import bandwidth_for
from protocol.schema import GB, NodeFacts


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


def build_topology(facts: list[NodeFacts]) -> tuple[dict[str, Any], list[str]]:
    notes: list[str] = []
    nodes: list[dict[str, Any]] = []
    nets = {f.node_id: _networks(f) for f in facts}
    for f in sorted(facts, key=lambda f: f.node_id):
        bw = bandwidth_for(f.chip)
        if bw is None:
            notes.append(
                f"{f.node_id}: unknown memory bandwidth for chip {f.chip!r}; "
                "set bandwidth_gbps (GB/s) by hand"
            )
        addresses = sorted(a for a, kind in nets[f.node_id].values() if kind != "wifi")
        node: dict[str, Any] = {
            "id": f.node_id,
            "memory_bytes": f.memory_bytes,
            "available_bytes": f.available_bytes,
            "bandwidth_gbps": bw if bw is not None else 100.0,
            "chip": f.chip,
        }
        if addresses:
            node["address"] = addresses[0]
        nodes.append(node)
        notes.append(
            f"{f.node_id}: {f.memory_bytes / GB:.0f} GB, {f.available_bytes / GB:.0f} GB free now"
        )
    links: list[dict[str, Any]] = []
    by_id = {f.node_id: f for f in facts}
    for a, b in itertools.combinations(sorted(nets), 2):
        shared = set(nets[a]) & set(nets[b])
        if not shared:
            continue
        kinds = {nets[a][n][1] for n in shared} | {nets[b][n][1] for n in shared}
        if "thunderbolt" in kinds:
            rdma = bool(by_id[a].rdma and by_id[b].rdma)
            kind = "rdma" if rdma else "thunderbolt"
        else:
            kind = "ethernet"
        links.append({"a": a, "b": b, "kind": kind})
    linked = {x for link in links for x in (link["a"], link["b"])}
    for f in facts:
        if len(facts) > 1 and f.node_id not in linked:
            notes.append(f"{f.node_id}: shares no subnet with another node; add its links")
    return {"nodes": nodes, "links": links}, notes
