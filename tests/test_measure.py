"""Measurement against real sockets on 127.0.0.1: a peer made slow by construction is measured
slower; a responder answering as another node is refused; addresses are picked from the
deployment's agents only; the memory figure comes from a real MLX child; the topology draft
and the plan carry measured figures and say so."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest

from executor.measure_agent import BUDGET_S, Measurer, Target, measure_links, targets
from executor.measure_memory import measure_in_child
from executor.measure_net import MeasureError, Responder, Slowness, bulk, measure_link, ping
from planner.plan import make_plan
from planner.topology_from_facts import build_topology
from protocol.deployment import MeasurePeers
from protocol.measurements import LinkMeasurement, Measurements
from protocol.schema import Interface, NodeFacts, PlanRequest, Topology

DELAY_S = 0.005
"""The slow peer waits this long before each echo: round trips are at least this long."""
SLOW_SINK = 8e6
"""The slow peer reads at most this many bytes a second: at most 0.064 Gb/s."""


@pytest.fixture
def responders() -> Iterator[tuple[Responder, Responder]]:
    fast = Responder("fast", 0, "127.0.0.1").start()
    slow = Responder("slow", 0, "127.0.0.1", Slowness(DELAY_S, SLOW_SINK)).start()
    yield fast, slow
    fast.stop()
    slow.stop()


def test_slow_peer_is_measured_slower(responders: tuple[Responder, Responder]) -> None:
    fast, slow = responders
    f = measure_link("127.0.0.1", fast.port, "fast", pings=20, bulk_s=0.3)
    s = measure_link("127.0.0.1", slow.port, "slow", pings=20, bulk_s=0.3)
    assert s.rtt_median_us >= DELAY_S * 1e6  # slow by construction, whatever this machine is
    assert s.rtt_p99_us >= s.rtt_median_us
    assert s.bandwidth_gbps <= SLOW_SINK * 8 / 1e9 * 1.05
    assert f.rtt_median_us < s.rtt_median_us and f.bandwidth_gbps > s.bandwidth_gbps
    assert f.bytes_sent > 0 and s.bytes_sent > 0


def test_bulk_transfer_is_bounded(responders: tuple[Responder, Responder]) -> None:
    fast, _ = responders
    t0 = time.monotonic()
    _, sent = bulk("127.0.0.1", fast.port, "fast", max_bytes=4 << 20, max_s=5.0)
    assert sent == 4 << 20 and time.monotonic() - t0 < 5.0


def test_a_responder_answering_as_another_node_is_refused(
    responders: tuple[Responder, Responder],
) -> None:
    fast, _ = responders
    with pytest.raises(MeasureError, match="answers as b'fast', not 'studio'"):
        ping("127.0.0.1", fast.port, "studio")
    with pytest.raises(MeasureError):
        ping("127.0.0.1", 1, "fast")  # nothing listens on port 1


def facts(node: str, hostname: str, port: int | None, *addrs: tuple[str, str, str]) -> NodeFacts:
    ifaces = [Interface(name=n, addresses=[a], kind=k) for n, a, k in addrs]  # type: ignore[arg-type]
    return NodeFacts(
        node_id=node,
        hostname=hostname,
        memory_bytes=8 * 10**9,
        available_bytes=8 * 10**9,
        interfaces=ifaces,
        measure_port=port,
    )


LO = ("lo", "127.0.0.1/8", "loopback")


def test_targets_are_the_deployment_agents_reachable_addresses() -> None:
    me = facts(
        "a",
        "host1",
        7000,
        LO,
        ("en2", "169.254.3.1/16", "thunderbolt"),
        ("en0", "10.0.0.1/24", "ethernet"),
    )
    same_host = facts("b", "host1", 7001, LO)
    other_host = facts(
        "c",
        "host2",
        7002,
        LO,
        ("en3", "169.254.9.9/16", "thunderbolt"),
        ("en0", "192.168.1.2/24", "ethernet"),
    )
    silent = facts("d", "host3", None, ("en0", "10.0.0.4/24", "ethernet"))
    found = targets(me, [me, same_host, other_host, silent])
    assert found == [
        Target("b", "127.0.0.1", 7001, "lo", "loopback"),
        # c's 127.0.0.1 is c itself only on c; 192.168.1.0/24 is no subnet of a's
        Target("c", "169.254.9.9", 7002, "en2", "thunderbolt"),
    ]


def test_a_round_measures_links_within_the_budget(responders: tuple[Responder, Responder]) -> None:
    fast, slow = responders
    found = [
        Target("fast", "127.0.0.1", fast.port, "lo", "loopback"),
        Target("slow", "127.0.0.1", slow.port, "lo", "loopback"),
        Target("gone", "127.0.0.1", 1, "lo", "loopback"),
    ]
    t0 = time.monotonic()
    links, notes = measure_links(found, time.monotonic() + BUDGET_S)
    assert time.monotonic() - t0 < BUDGET_S
    assert [m.peer for m in links] == ["fast", "slow"]
    assert len(notes) == 1 and notes[0].startswith("gone at 127.0.0.1: not measured")
    links, notes = measure_links(found, time.monotonic())  # no time left: nothing is measured
    assert links == [] and all("budget ran out" in n for n in notes)


@pytest.mark.slow
def test_memory_bandwidth_from_an_mlx_child_and_the_measurer() -> None:
    fig = measure_in_child(sys.executable, 60.0, mb=32)
    assert fig.gbps > 0 and "mlx sum over 32 MB on cpu" in fig.method
    peer = Responder("peer", 0, "127.0.0.1").start()
    try:
        me = facts("me", "h", 1, LO)
        them = facts("peer", "h", peer.port, LO)
        got: list[Measurements] = []
        m = Measurer(
            lambda: me, lambda: MeasurePeers(agents=[me, them]), got.append, sys.executable
        )
        out = m.round(targets(me, [them]), with_memory=True)
    finally:
        peer.stop()
    assert out.memory_bandwidth_gbps and out.memory_bandwidth_gbps > 0
    assert [x.peer for x in out.links] == ["peer"] and out.took_s < BUDGET_S


# -- the draft and the plan use the measurements ------------------------------------------------
def measured(node: str, bw: float | None, *links: tuple[str, float, float]) -> NodeFacts:
    f = facts(node, "h", 1, LO)
    m = Measurements(
        measured_at=1.0,
        took_s=1.0,
        memory_bandwidth_gbps=bw,
        links=[
            LinkMeasurement(
                peer=p,
                address="127.0.0.1",
                kind="loopback",
                rtt_median_us=rtt,
                rtt_p99_us=rtt * 2,
                bandwidth_gbps=gbps,
            )
            for p, rtt, gbps in links
        ],
    )
    return f.model_copy(update={"measurements": m, "chip": "Apple M4 Pro"})


def test_draft_uses_measured_figures_and_plans_say_which() -> None:
    reports = [
        measured("a", 11.5, ("b", 80.0, 20.0)),
        measured("b", None, ("a", 100.0, 25.0)),  # b's memory figure failed: chip table
    ]
    topology, notes = build_topology(reports)
    by_id = {n["id"]: n for n in topology["nodes"]}
    assert by_id["a"]["bandwidth_gbps"] == 11.5 and by_id["a"]["source"] == "measured"
    assert by_id["b"]["bandwidth_gbps"] == 273 and by_id["b"]["source"] == "assumed"
    # the slower direction: the lower bandwidth, the longer round trip (halved: one way)
    assert topology["links"] == [
        {
            "a": "a",
            "b": "b",
            "kind": "ethernet",
            "bandwidth_gbps": 20.0,
            "latency_us": 50.0,
            "source": "measured",
        }
    ]
    assert any("a-b: measured ethernet link: 20 Gb/s, 50 µs one way" in n for n in notes)
    topo = Topology.model_validate(topology)
    plan = make_plan(PlanRequest(topology=topo, model=TINY))
    assert plan.feasible, plan.reasons
    assert plan.sources == {"node:a": "measured", "node:b": "assumed", "link:a-b": "measured"}
    from planner.table import render

    assert "figures: measured: link:a-b, node:a; assumed: node:b" in render(plan)


TINY = {
    "model_type": "qwen3",
    "hidden_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "intermediate_size": 512,
    "vocab_size": 1000,
    "torch_dtype": "float32",
}


def test_connections_beyond_the_cap_are_refused(responders: tuple[Responder, Responder]) -> None:
    import socket

    from executor.measure_net import MAX_CONNECTIONS

    fast, _ = responders
    held = [socket.create_connection(("127.0.0.1", fast.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # the responder has taken them all
        with pytest.raises(MeasureError):
            ping("127.0.0.1", fast.port, "fast")
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert ping("127.0.0.1", fast.port, "fast", count=3)


@pytest.mark.slow
def test_measurer_measures_new_peers_keeps_figures_and_remeasures_on_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from executor import measure_agent

    monkeypatch.setattr(measure_agent, "PEER_POLL_S", 0.1)
    peer = Responder("peer", 0, "127.0.0.1").start()
    me, them = facts("me", "h", 1, LO), facts("peer", "h", peer.port, LO)
    listed = MeasurePeers(agents=[me])  # what the planner lists; the test changes it
    rounds: list[Measurements] = []
    m = Measurer(lambda: me, lambda: listed, rounds.append, sys.executable)
    stop = threading.Event()
    thread = threading.Thread(target=m.run, args=(stop,), daemon=True)
    thread.start()

    def wait_rounds(n: int) -> Measurements:
        deadline = time.monotonic() + 60
        while len(rounds) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(rounds) >= n, rounds
        return rounds[n - 1]

    try:
        first = wait_rounds(1)
        assert first.memory_bandwidth_gbps and first.links == []
        listed = MeasurePeers(agents=[me, them])  # a peer appears: measured, memory kept
        second = wait_rounds(2)
        assert [x.peer for x in second.links] == ["peer"]
        assert second.memory_bandwidth_gbps == first.memory_bandwidth_gbps
        listed = MeasurePeers(agents=[me])  # the peer is busy: no round, its figures stay
        time.sleep(0.5)
        assert len(rounds) == 2
        listed = MeasurePeers(request=1, agents=[me])  # the planner asks: everything again
        third = wait_rounds(3)
        assert third.measured_at > second.measured_at and [x.peer for x in third.links] == ["peer"]
    finally:
        stop.set()
        thread.join(5)
        peer.stop()
