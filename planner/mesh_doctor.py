"""`asymtp doctor`: what a working RDMA mesh needs, checked against the agents' facts.

An RDMA (JACCL) group over Thunderbolt needs, on every node: RDMA enabled (`rdma_ctl enable`
from Recovery), RDMA devices present (`ibv_devices`), the same macOS version; and between every
pair of nodes a direct Thunderbolt 5 cable (no hub, no Thunderbolt 4 port) — a full mesh — and
addresses and ports each peer can reach. Each finding is one line with its fix. When RDMA cannot
work the plan uses the TCP ring; `planner.doctor_cost` prices the difference.
"""

from __future__ import annotations

import itertools
import re
from enum import StrEnum

from pydantic import BaseModel

from protocol.measurements import ThunderboltPort
from protocol.schema import NodeFacts

RDMA_FIX = "in macOS Recovery open Terminal, run `rdma_ctl enable`, and restart"


class Severity(StrEnum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


class Check(StrEnum):
    RDMA_ENABLED = "rdma-enabled"
    RDMA_DEVICES = "rdma-devices"
    THUNDERBOLT_5 = "thunderbolt-5"
    DIRECT_CABLE = "direct-cable"
    FULL_MESH = "full-mesh"
    OS_VERSION = "os-version"
    REACHABLE = "reachable"


RDMA_CHECKS = frozenset(Check) - {Check.REACHABLE}
"""The checks whose problems rule RDMA out (an unreachable peer breaks TCP as well)."""


class Finding(BaseModel):
    check: Check
    severity: Severity
    message: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -> fix: {self.fix}" if self.fix else ""
        return f"{self.severity.value.upper():<8} {self.check.value:<14} {self.message}{fix}"


def _problem(check: Check, message: str, fix: str) -> Finding:
    return Finding(check=check, severity=Severity.PROBLEM, message=message, fix=fix)


def _warning(check: Check, message: str, fix: str = "") -> Finding:
    return Finding(check=check, severity=Severity.WARNING, message=message, fix=fix)


def check_rdma(facts: list[NodeFacts]) -> list[Finding]:
    out = []
    for f in facts:
        if f.rdma is False:
            out.append(_problem(Check.RDMA_ENABLED, f"{f.node_id}: RDMA is disabled", RDMA_FIX))
        elif f.rdma is None:
            out.append(
                _problem(
                    Check.RDMA_ENABLED,
                    f"{f.node_id}: cannot tell whether RDMA is enabled (no `rdma_ctl`: "
                    f"{f.os or 'unknown OS'})",
                    "RDMA over Thunderbolt needs macOS 26.2 or later on a Mac; " + RDMA_FIX,
                )
            )
        if f.rdma and f.rdma_devices == []:
            out.append(
                _problem(
                    Check.RDMA_DEVICES,
                    f"{f.node_id}: RDMA is enabled but `ibv_devices` lists no device",
                    "restart after `rdma_ctl enable`, and connect a Thunderbolt 5 cable",
                )
            )
    return out


def _port_findings(node: str, p: ThunderboltPort, peer: str) -> list[Finding]:
    where = f"{node} port {p.receptacle} -> {peer}"
    out = []
    if p.via:
        out.append(
            _problem(
                Check.DIRECT_CABLE,
                f"{where} goes through {p.via}",
                f"connect {node} and {peer} with a direct Thunderbolt 5 cable: "
                "RDMA does not cross hubs or docks",
            )
        )
    if p.generation is not None and p.generation < 5:
        out.append(
            _problem(
                Check.THUNDERBOLT_5,
                f"{where} is a Thunderbolt {p.generation} link ({p.speed_gbps:g} Gb/s)",
                "use a Thunderbolt 5 cable between Thunderbolt 5 ports (M4 Pro/Max, M3 "
                "Ultra and later); Thunderbolt 4 has no RDMA",
            )
        )
    return out


def _pair_finding(a: str, b: str, cables: int) -> Finding | None:
    if cables == 0:
        return _problem(
            Check.FULL_MESH,
            f"no Thunderbolt cable between {a} and {b}: an RDMA group needs a full mesh",
            f"connect {a} and {b} directly with a Thunderbolt 5 cable",
        )
    if cables > 1:
        return _warning(
            Check.FULL_MESH,
            f"{cables} cables between {a} and {b}: the group uses one connection per pair",
            f"keep one Thunderbolt 5 cable between {a} and {b}, or make sure the JACCL devices "
            "file names, for each peer, the interface whose cable reaches it",
        )
    return None


def check_cables(facts: list[NodeFacts]) -> list[Finding]:
    """Thunderbolt 5, direct, and one cable between every pair (matched by domain UUID: a
    port's `peer_uuid` is the domain of the other Mac's port)."""
    owner = {p.domain_uuid: f.node_id for f in facts for p in f.thunderbolt or [] if p.domain_uuid}
    out: list[Finding] = []
    seen: dict[tuple[str, str], int] = {}  # (node, peer) -> cables seen from the node's side
    for f in facts:
        if f.thunderbolt is None:
            out.append(
                _problem(
                    Check.FULL_MESH,
                    f"{f.node_id}: no Thunderbolt report ({f.os or 'not macOS'})",
                    "RDMA over Thunderbolt needs Macs with Thunderbolt 5",
                )
            )
        for p in f.thunderbolt or []:
            peer = owner.get(p.peer_uuid or "")
            if peer is not None:
                seen[(f.node_id, peer)] = seen.get((f.node_id, peer), 0) + 1
                out += _port_findings(f.node_id, p, peer)
    if not owner:
        return out  # no Thunderbolt anywhere: the reports above say so once per node
    for a, b in itertools.combinations(sorted(f.node_id for f in facts), 2):
        found = _pair_finding(a, b, max(seen.get((a, b), 0), seen.get((b, a), 0)))
        if found is not None:
            out.append(found)
    return out


def check_os(facts: list[NodeFacts]) -> list[Finding]:
    versions: dict[str, list[str]] = {}
    for f in facts:
        versions.setdefault(f.os_version or "unknown", []).append(f.node_id)
    if len(versions) <= 1:
        return []
    listed = "; ".join(f"{v} on {', '.join(sorted(n))}" for v, n in sorted(versions.items()))
    newest = max(versions, key=lambda v: [int(x) for x in re.findall(r"\d+", v.split(" ")[0])])
    return [
        _problem(
            Check.OS_VERSION,
            f"OS versions differ: {listed}",
            f"update every node to the same version ({newest}) before forming an RDMA group",
        )
    ]


def check_reachable(facts: list[NodeFacts]) -> list[Finding]:
    measured = {f.node_id for f in facts if f.measurements is not None}
    reached = {
        frozenset((f.node_id, m.peer))
        for f in facts
        for m in (f.measurements.links if f.measurements else [])
    }
    out = []
    for f in facts:
        if f.node_id not in measured:
            out.append(_warning(Check.REACHABLE, f"{f.node_id}: has not measured its links yet"))
    for a, b in itertools.combinations(sorted(measured), 2):
        if frozenset((a, b)) in reached:
            continue
        why = [
            n for f in facts if f.node_id in (a, b) and f.measurements for n in f.measurements.notes
        ]
        out.append(
            _problem(
                Check.REACHABLE,
                f"{a} and {b} cannot reach each other's measurement port"
                + (f" ({why[0]})" if why else ""),
                "give both an address in one subnet and open TCP from ring_port up (ring, "
                "+1000 liveness, +2000 measurement) between them in the firewall",
            )
        )
    return out


def diagnose_mesh(facts: list[NodeFacts]) -> list[Finding]:
    facts = sorted(facts, key=lambda f: f.node_id)
    found = check_rdma(facts) + check_cables(facts) + check_os(facts) + check_reachable(facts)
    if rdma_possible(found):
        found.append(
            Finding(
                check=Check.FULL_MESH,
                severity=Severity.OK,
                message=f"RDMA mesh ready on {len(facts)} nodes: RDMA enabled with devices, "
                "Thunderbolt 5 direct cables between every pair, one OS version",
            )
        )
    return found


def rdma_possible(findings: list[Finding]) -> bool:
    return not any(x.check in RDMA_CHECKS and x.severity == Severity.PROBLEM for x in findings)
