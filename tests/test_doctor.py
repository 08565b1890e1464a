"""`asymtp doctor`: the macOS tools' parsers on sample outputs, and each broken-mesh case giving
the right finding and fix; the TCP ring priced against RDMA; the CLI offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mac_samples import (
    IBV_DEVICES,
    IBV_DEVICES_NONE,
    RDMA_CTL_DISABLED,
    STUDIO_WITH_HUB,
    SW_VERS_26_1,
    full_mesh,
    mesh,
)
from planner_cases import QWEN3_235B, config

from executor.macos_tools import (
    ToolOutputError,
    parse_hardware_ports,
    parse_ibv_devices,
    parse_rdma_ctl,
    parse_sw_vers,
    parse_thunderbolt,
)
from planner.doctor_cost import doctor_report, price_tcp_vs_rdma
from planner.mesh_doctor import Check, Finding, Severity, diagnose_mesh, rdma_possible
from protocol.schema import PlanRequest

ROOT = Path(__file__).resolve().parents[1]
NODES = ["studio", "mini", "laptop"]


def problems(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == Severity.PROBLEM]


# -- parsers ---------------------------------------------------------------------------------
def test_thunderbolt_sample_with_a_hub_between_two_macs() -> None:
    ports = parse_thunderbolt(STUDIO_WITH_HUB)
    assert [p.receptacle for p in ports] == ["1", "2", "3"]
    hub, direct, empty = ports
    assert hub.peer_uuid == "B1B1B1B1-0000-4000-8000-000000000001"  # one level deeper
    assert hub.via == "Thunderbolt 4 Hub" and hub.generation == 4
    assert direct.via is None and direct.speed_gbps == 80 and direct.generation == 5
    assert direct.peer_name == "MacBook Pro"
    assert empty.peer_uuid is None and empty.speed_gbps is None


def test_thunderbolt_rejects_other_json() -> None:
    with pytest.raises(ToolOutputError):
        parse_thunderbolt('{"SPUSBDataType": []}')
    with pytest.raises(ToolOutputError):
        parse_thunderbolt("not json")


def test_small_tools() -> None:
    assert parse_ibv_devices(IBV_DEVICES) == ["rdma_en2", "rdma_en3"]
    assert parse_ibv_devices(IBV_DEVICES_NONE) == []
    assert parse_rdma_ctl("enabled\n") is True
    assert parse_rdma_ctl(RDMA_CTL_DISABLED) is False
    assert parse_rdma_ctl("") is None
    assert parse_sw_vers(SW_VERS_26_1) == "26.1 (25B78)"
    assert parse_sw_vers("") is None
    ports = "Hardware Port: Thunderbolt 1\nDevice: en2\nEthernet Address: x\n\n" + (
        "Hardware Port: Thunderbolt Bridge\nDevice: bridge0\n"
    )
    assert parse_hardware_ports(ports) == {"en2": "Thunderbolt 1", "bridge0": "Thunderbolt Bridge"}


# -- findings ----------------------------------------------------------------------------------
def test_a_healthy_mesh_is_ready() -> None:
    found = diagnose_mesh(mesh(NODES))
    assert not problems(found), [f.line() for f in found]
    assert rdma_possible(found)
    assert [f.severity for f in found] == [Severity.OK]


def test_hub_between_two_macs() -> None:
    cables = full_mesh(NODES)
    cables["studio"][2] = (*cables["studio"][2][:3], "Thunderbolt 4 Hub")
    found = problems(diagnose_mesh(mesh(NODES, studio={"cables": cables["studio"]})))
    assert [(f.check, f.message) for f in found] == [
        (Check.DIRECT_CABLE, "studio port 2 -> mini goes through Thunderbolt 4 Hub")
    ]
    assert "direct Thunderbolt 5 cable" in found[0].fix


def test_thunderbolt_4_link() -> None:
    cables = full_mesh(NODES, gbps=80)
    cables["laptop"][1] = ("studio", 3, 40.0, None)
    found = problems(diagnose_mesh(mesh(NODES, laptop={"cables": cables["laptop"]})))
    assert [f.check for f in found] == [Check.THUNDERBOLT_5]
    assert "laptop port 1 -> studio is a Thunderbolt 4 link (40 Gb/s)" in found[0].message
    assert "Thunderbolt 4 has no RDMA" in found[0].fix


def test_rdma_disabled_on_one_node() -> None:
    found = diagnose_mesh(
        mesh(NODES, mini={"rdma_ctl": RDMA_CTL_DISABLED, "ibv": IBV_DEVICES_NONE})
    )
    assert [(f.check, f.message) for f in problems(found)] == [
        (Check.RDMA_ENABLED, "mini: RDMA is disabled")
    ]
    assert "rdma_ctl enable" in problems(found)[0].fix
    assert not rdma_possible(found)


def test_rdma_enabled_without_devices() -> None:
    found = problems(diagnose_mesh(mesh(NODES, laptop={"ibv": IBV_DEVICES_NONE})))
    assert [f.check for f in found] == [Check.RDMA_DEVICES]


def test_missing_mesh_cable() -> None:
    cables = full_mesh(NODES)
    del cables["mini"][3], cables["laptop"][2]  # no cable between mini and laptop
    found = diagnose_mesh(
        mesh(NODES, mini={"cables": cables["mini"]}, laptop={"cables": cables["laptop"]})
    )
    assert [(f.check, f.message) for f in problems(found)] == [
        (
            Check.FULL_MESH,
            "no Thunderbolt cable between laptop and mini: an RDMA group needs a full mesh",
        )
    ]
    assert problems(found)[0].fix == "connect laptop and mini directly with a Thunderbolt 5 cable"


def test_two_cables_between_one_pair() -> None:
    cables = full_mesh(NODES)
    cables["studio"][4] = ("mini", 4, 80.0, None)
    cables_mini = {**cables["mini"], 4: ("studio", 4, 80.0, None)}
    found = diagnose_mesh(
        mesh(NODES, studio={"cables": cables["studio"]}, mini={"cables": cables_mini})
    )
    warned = [f for f in found if f.severity == Severity.WARNING]
    assert [(f.check, f.message) for f in warned] == [
        (
            Check.FULL_MESH,
            "2 cables between mini and studio: the group uses one connection per pair",
        )
    ]
    assert rdma_possible(found)  # a warning, not a problem


def test_mismatched_os_versions() -> None:
    found = problems(diagnose_mesh(mesh(NODES, laptop={"sw_vers": SW_VERS_26_1})))
    assert [f.check for f in found] == [Check.OS_VERSION]
    assert (
        found[0].message
        == "OS versions differ: 26.1 (25B78) on laptop; 26.2 (25C56) on mini, studio"
    )
    assert "26.2 (25C56)" in found[0].fix


def test_unreachable_peers_named_with_the_reason() -> None:
    facts = mesh(NODES)
    cut = facts[0].measurements
    assert cut is not None
    note = "laptop at 169.254.0.3: not measured: 169.254.0.3:54100: Connection refused"
    facts = [
        facts[0].model_copy(
            update={"measurements": cut.model_copy(update={"links": [], "notes": [note]})}
        ),
        *[
            f.model_copy(update={"measurements": cut.model_copy(update={"links": []})})
            for f in facts[1:]
        ],
    ]
    found = problems(diagnose_mesh(facts))
    assert {f.check for f in found} == {Check.REACHABLE}
    assert any("Connection refused" in f.message for f in found) and "firewall" in found[0].fix
    assert rdma_possible(found)  # reachability is not an RDMA matter


# -- the cost of the TCP ring ----------------------------------------------------------------------
def request_for(nodes: list[str]) -> PlanRequest:
    return PlanRequest.model_validate(
        {
            "topology": {
                "nodes": [{"id": n, "memory_gb": 192, "bandwidth_gbps": 800} for n in nodes],
                "links": [
                    {"a": "studio", "b": "mini", "kind": "thunderbolt"},
                    {"a": "mini", "b": "laptop", "kind": "thunderbolt"},
                ],
            },
            "model": config(QWEN3_235B),
        }
    )


def test_tcp_ring_priced_against_rdma() -> None:
    cost = price_tcp_vs_rdma(request_for(NODES))
    assert cost.tcp_tokens_per_s is not None and cost.rdma_tokens_per_s is not None
    assert cost.rdma_tokens_per_s > cost.tcp_tokens_per_s
    report = doctor_report(mesh(NODES, mini={"rdma_ctl": RDMA_CTL_DISABLED}), request_for(NODES))
    assert not report.rdma_possible
    assert report.lines[-1].startswith("RDMA cannot work: the plan will use the TCP ring: ")
    assert "tok/s" in report.lines[-1] and "lost without RDMA" in report.lines[-1]


def test_cli_offline_on_facts_files(tmp_path: Path) -> None:
    files = []
    for f in mesh(NODES, laptop={"sw_vers": SW_VERS_26_1}):
        path = tmp_path / f"{f.node_id}.json"
        path.write_text(f.model_dump_json())
        files.append(str(path))
    run = [sys.executable, "-m", "asymtp.cli", "doctor", *files]
    r = subprocess.run(run, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "os-version" in r.stdout and "-> fix: update every node" in r.stdout
    assert "RDMA cannot work: the plan will use the TCP ring" in r.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"node_id": "x"}))
    r = subprocess.run([*run[:4], str(bad)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_linux_kinds_and_rdma_devices_from_sys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from executor import node_facts

    net, ib = tmp_path / "net", tmp_path / "infiniband"
    (net / "wlan0" / "wireless").mkdir(parents=True)
    driver = tmp_path / "drivers" / "thunderbolt-net"
    driver.mkdir(parents=True)
    (net / "thunderbolt0" / "device").mkdir(parents=True)
    (net / "thunderbolt0" / "device" / "driver").symlink_to(driver)
    (net / "eth0").mkdir()
    monkeypatch.setattr(node_facts, "SYS_NET", net)
    monkeypatch.setattr(node_facts, "SYS_INFINIBAND", ib)
    assert node_facts._kind_from_sys("wlan0") == "wifi"
    assert node_facts._kind_from_sys("thunderbolt0") == "thunderbolt"
    assert node_facts._kind_from_sys("eth0") is None  # the name decides: ethernet
    assert node_facts.rdma_devices() == []  # looked, none
    (ib / "mlx5_0").mkdir(parents=True)
    assert node_facts.rdma_devices() == ["mlx5_0"]
