"""The agent's measuring side: which peer addresses to measure, a bounded measurement round,
and the thread that measures on start, when peers appear, and when the planner asks.

Only addresses the deployment's agents reported (`GET /deployments/NAME/peers`) are measured,
and only those in a subnet this node has (a loopback address only on the same host); the
responder at the other end must answer with the peer's node id.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from executor.measure_memory import measure_in_child
from executor.measure_net import MeasureError, Responder, measure_link
from protocol.deployment import MeasurePeers
from protocol.measurements import InterfaceKind, LinkMeasurement, Measurements
from protocol.schema import NodeFacts

BUDGET_S = 10.0
"""A whole measurement round (memory and every link) ends within this."""
MEMORY_SHARE = 0.8
"""Of the budget, the most the memory measurement may take (mostly starting MLX, which a
busy machine slows most); links measured in the same round share the rest."""
MEMORY_RETRY_S = 15.0
"""A memory measurement that failed (a busy machine) is tried again this much later."""
PER_LINK_S = 1.5
"""The most one address takes: 40 round trips plus a bulk transfer of at most 0.5 s."""
MAX_ADDRESSES_PER_PEER = 4
PEER_POLL_S = 2.0


@dataclass(frozen=True, order=True)
class Target:
    peer: str
    address: str
    port: int
    interface: str
    kind: InterfaceKind


def _own_networks(
    me: NodeFacts,
) -> list[tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, str, InterfaceKind]]:
    out = []
    for iface in me.interfaces:
        for a in iface.addresses:
            try:
                out.append((ipaddress.ip_interface(a), iface.name, iface.kind))
            except ValueError:
                continue
    return out


def targets(me: NodeFacts, peers: list[NodeFacts]) -> list[Target]:
    """Every peer address this node can reach directly, with the local interface it leaves by."""
    mine = _own_networks(me)
    found: list[Target] = []
    for peer in sorted(peers, key=lambda p: p.node_id):
        if peer.node_id == me.node_id or peer.measure_port is None:
            continue
        picked: list[Target] = []
        for own, _name, _kind in _own_networks(peer):
            ip = own.ip
            if ip.version == 6 and ip.is_link_local:
                continue  # needs a scope id: the IPv4 address of the same port is measured
            if ip.is_loopback and (
                peer.hostname != me.hostname or any(t.kind == "loopback" for t in picked)
            ):
                continue  # another host's 127.0.0.1 is this host: never measure it
            local = next(
                ((n, k) for i, n, k in mine if ip in i.network and i.ip.version == ip.version), None
            )
            if local is not None and len(picked) < MAX_ADDRESSES_PER_PEER:
                picked.append(Target(peer.node_id, str(ip), peer.measure_port, local[0], local[1]))
        found += picked
    return found


def measure_links(found: list[Target], deadline: float) -> tuple[list[LinkMeasurement], list[str]]:
    links, notes = [], []
    for t in found:
        if time.monotonic() + PER_LINK_S > deadline:
            notes.append(f"{t.peer} at {t.address}: not measured, the {BUDGET_S:g}s budget ran out")
            continue
        try:
            fig = measure_link(t.address, t.port, t.peer)
        except MeasureError as e:
            notes.append(f"{t.peer} at {t.address}: not measured: {e}")
            continue
        links.append(
            LinkMeasurement(
                peer=t.peer,
                address=t.address,
                interface=t.interface,
                kind=t.kind,
                rtt_median_us=fig.rtt_median_us,
                rtt_p99_us=fig.rtt_p99_us,
                bandwidth_gbps=fig.bandwidth_gbps,
                bytes_sent=fig.bytes_sent,
            )
        )
    return links, notes


def fetch_peers(http: httpx.Client, deployment: str) -> MeasurePeers:
    r = http.get(f"/deployments/{deployment}/peers", timeout=5.0)
    r.raise_for_status()
    return MeasurePeers.model_validate_json(r.content)


class Measurer:
    """Measures in its own thread; `latest` is the newest round, `on_result` is called after
    each. The first round and each planner request measure memory and every peer address;
    between them, addresses that appear are measured as they appear. Links keep their last
    figures while a peer is not listed (an agent busy loading reports no facts)."""

    def __init__(
        self,
        me: Callable[[], NodeFacts],
        peers: Callable[[], MeasurePeers],
        on_result: Callable[[Measurements], None],
        python: str,
    ) -> None:
        self.me, self.peers, self.on_result, self.python = me, peers, on_result, python
        self.latest: Measurements | None = None
        self.links: dict[Target, LinkMeasurement] = {}
        self._memory: tuple[float | None, str, list[str]] = (None, "", [])
        self._memory_tried = 0.0

    def round(self, todo: list[Target], with_memory: bool) -> Measurements:
        started = time.monotonic()
        deadline = started + BUDGET_S
        if with_memory:
            self._memory_tried = started
            try:
                fig = measure_in_child(self.python, BUDGET_S * MEMORY_SHARE)
                self._memory = (fig.gbps, fig.method, [])
            except RuntimeError as e:
                self._memory = (None, "", [str(e)])
        links, notes = measure_links(todo, deadline)
        for t in todo:
            self.links.pop(t, None)  # not measured this time: its old figure is stale
        self.links.update(
            {t: m for t in todo for m in links if m.address == t.address and m.peer == t.peer}
        )
        gbps, method, memory_notes = self._memory
        return Measurements(
            measured_at=round(time.time(), 3),
            took_s=round(time.monotonic() - started, 3),
            memory_bandwidth_gbps=gbps,
            memory_method=method,
            links=[self.links[t] for t in sorted(self.links)],
            notes=(memory_notes + notes)[:64],
        )

    def run(self, stop: threading.Event) -> None:
        request: int | None = None
        tried: set[Target] = set()
        while not stop.is_set():
            try:
                asked: MeasurePeers | None = self.peers()
            except (httpx.HTTPError, ValueError):
                asked = None  # the planner is away: ask again later
            found = targets(self.me(), asked.agents if asked else [])
            retry = (
                self._memory[0] is None and time.monotonic() > self._memory_tried + MEMORY_RETRY_S
            )
            everything = request is None or (asked is not None and asked.request != request)
            todo = found if everything else [t for t in found if t not in tried]
            if everything or retry or todo:
                self.latest = self.round(sorted(todo), everything or retry)
                self.on_result(self.latest)
                tried |= set(todo)
                if asked is not None or request is None:
                    request = asked.request if asked else 0
            stop.wait(PEER_POLL_S)


class AgentMeasuring:
    """What an agent runs to be measured and to measure: the responder on `port` (0: a free
    one) and the measuring thread. `facts()` adds the port and the newest round to a report."""

    def __init__(
        self,
        base: NodeFacts,
        port: int,
        http: httpx.Client,
        deployment: str,
        on_result: Callable[[Measurements], None],
        python: str,
    ) -> None:
        self.responder: Responder | None = None
        self.failed: Measurements | None = None
        self.stop_event = threading.Event()
        try:
            self.responder = Responder(base.node_id, port).start()
        except OSError as e:
            why = f"measurement responder: cannot listen on port {port}: {e.strerror or e}"
            self.failed = Measurements(measured_at=round(time.time(), 3), took_s=0, notes=[why])
            return
        # Interfaces are read once: a cable plugged in later needs an agent restart anyway.
        me = base.model_copy(update={"measure_port": self.responder.port})
        self.measurer = Measurer(
            lambda: me, lambda: fetch_peers(http, deployment), on_result, python
        )
        threading.Thread(
            target=self.measurer.run, args=(self.stop_event,), name="measurer", daemon=True
        ).start()

    def facts(self, facts: NodeFacts) -> NodeFacts:
        if self.responder is None:
            return facts.model_copy(update={"measurements": self.failed})
        update = {"measure_port": self.responder.port, "measurements": self.measurer.latest}
        return facts.model_copy(update=update)

    def stop(self) -> None:
        self.stop_event.set()
        if self.responder is not None:
            self.responder.stop()
