"""Sample outputs of the macOS tools, written from their documented formats (the key names of
`system_profiler -json` as macOS 15/26 print them), and builders of NodeFacts for a mesh."""

from __future__ import annotations

import json
from typing import Any

from executor.macos_tools import parse_ibv_devices, parse_rdma_ctl, parse_sw_vers, parse_thunderbolt
from protocol.measurements import LinkMeasurement, Measurements
from protocol.schema import Interface, NodeFacts

# A Mac Studio (M3 Ultra): port 1 reaches another Mac through a Thunderbolt 4 hub, port 2 has
# a direct Thunderbolt 5 cable, port 3 is empty. A hub has no domain of its own: the Mac behind
# it is one level deeper in `_items`.
STUDIO_WITH_HUB = """{
  "SPThunderboltDataType" : [
    {
      "_items" : [
        {
          "_items" : [
            {
              "_name" : "Mac mini",
              "device_name_key" : "Mac mini",
              "domain_uuid_key" : "B1B1B1B1-0000-4000-8000-000000000001",
              "mode_key" : "thunderbolt_mode",
              "route_string_key" : "301",
              "switch_uid_key" : "0x05AC00B1B1B1B101",
              "vendor_name_key" : "Apple Inc."
            }
          ],
          "_name" : "Thunderbolt 4 Hub",
          "device_id_key" : "0x0029",
          "device_name_key" : "Thunderbolt 4 Hub",
          "mode_key" : "thunderbolt_mode",
          "route_string_key" : "1",
          "switch_uid_key" : "0x0108A0C1D2E3F401",
          "vendor_name_key" : "OWC"
        }
      ],
      "_name" : "thunderboltusb4_bus_0",
      "device_name_key" : "Mac Studio",
      "domain_uuid_key" : "A0A0A0A0-0000-4000-8000-000000000001",
      "receptacle_1_tag" : {
        "current_link_width_key" : "0x2",
        "current_speed_key" : "Up to 40 Gb/s",
        "link_status_key" : "0x2",
        "receptacle_id_key" : "1",
        "receptacle_status_key" : "receptacle_connected"
      },
      "route_string_key" : "0",
      "switch_uid_key" : "0x05AC00A0A0A0A001",
      "vendor_name_key" : "Apple Inc."
    },
    {
      "_items" : [
        {
          "_name" : "MacBook Pro",
          "device_name_key" : "MacBook Pro",
          "domain_uuid_key" : "C2C2C2C2-0000-4000-8000-000000000002",
          "mode_key" : "thunderbolt_mode",
          "route_string_key" : "1",
          "switch_uid_key" : "0x05AC00C2C2C2C202",
          "vendor_name_key" : "Apple Inc."
        }
      ],
      "_name" : "thunderboltusb4_bus_1",
      "device_name_key" : "Mac Studio",
      "domain_uuid_key" : "A0A0A0A0-0000-4000-8000-000000000002",
      "receptacle_1_tag" : {
        "current_speed_key" : "Up to 80 Gb/s",
        "receptacle_id_key" : "2",
        "receptacle_status_key" : "receptacle_connected"
      },
      "route_string_key" : "0",
      "switch_uid_key" : "0x05AC00A0A0A0A002",
      "vendor_name_key" : "Apple Inc."
    },
    {
      "_name" : "thunderboltusb4_bus_2",
      "device_name_key" : "Mac Studio",
      "domain_uuid_key" : "A0A0A0A0-0000-4000-8000-000000000003",
      "receptacle_1_tag" : {
        "receptacle_id_key" : "3",
        "receptacle_status_key" : "receptacle_no_devices_connected"
      },
      "route_string_key" : "0",
      "switch_uid_key" : "0x05AC00A0A0A0A003",
      "vendor_name_key" : "Apple Inc."
    }
  ]
}"""

IBV_DEVICES = """    device                 node GUID
    ------              ----------------
    rdma_en2            0000000000000000
    rdma_en3            0000000000000000
"""
IBV_DEVICES_NONE = """    device                 node GUID
    ------              ----------------
"""
RDMA_CTL_ENABLED = "enabled\n"
RDMA_CTL_DISABLED = "disabled\n"
SW_VERS_26_2 = "ProductName:\t\tmacOS\nProductVersion:\t\t26.2\nBuildVersion:\t\t25C56\n"
SW_VERS_26_1 = "ProductName:\t\tmacOS\nProductVersion:\t\t26.1\nBuildVersion:\t\t25B78\n"


def uuid(node: str, port: int) -> str:
    return f"{node.upper()}-PORT-{port}"


def profiler(node: str, cables: dict[int, tuple[str, int, float, str | None]]) -> str:
    """`system_profiler SPThunderboltDataType -json` of `node`: port -> (peer node, peer port,
    link Gb/s, hub or None), in the sample's format."""
    buses: list[dict[str, Any]] = []
    for port, (peer, peer_port, gbps, hub) in sorted(cables.items()):
        mac = {
            "_name": peer,
            "device_name_key": "Mac Studio",
            "domain_uuid_key": uuid(peer, peer_port),
            "vendor_name_key": "Apple Inc.",
        }
        item = {"_name": hub, "device_name_key": hub, "_items": [mac]} if hub else mac
        buses.append(
            {
                "_name": f"thunderboltusb4_bus_{port}",
                "domain_uuid_key": uuid(node, port),
                "receptacle_1_tag": {
                    "current_speed_key": f"Up to {gbps:g} Gb/s",
                    "receptacle_id_key": str(port),
                },
                "_items": [item],
            }
        )
    return json.dumps({"SPThunderboltDataType": buses})


def full_mesh(
    nodes: list[str], gbps: float = 80
) -> dict[str, dict[int, tuple[str, int, float, str | None]]]:
    """A direct cable between every pair: node i's port j+1 goes to node j's port i+1."""
    cables: dict[str, dict[int, tuple[str, int, float, str | None]]] = {n: {} for n in nodes}
    for i, a in enumerate(nodes):
        for j, b in enumerate(nodes):
            if i != j:
                cables[a][j + 1] = (b, i + 1, gbps, None)
    return cables


def mac_facts(
    node: str,
    cables: dict[int, tuple[str, int, float, str | None]],
    rdma_ctl: str = RDMA_CTL_ENABLED,
    sw_vers: str = SW_VERS_26_2,
    ibv: str = IBV_DEVICES,
    peers: list[str] | None = None,
) -> NodeFacts:
    """A Mac's facts as its agent reports them, from the tools' outputs; `peers` it measured."""
    links = [
        LinkMeasurement(
            peer=p,
            address="169.254.0.2",
            interface="en2",
            kind="thunderbolt",
            rtt_median_us=400.0,
            rtt_p99_us=900.0,
            bandwidth_gbps=55.0,
        )
        for p in peers or []
    ]
    return NodeFacts(
        node_id=node,
        hostname=f"{node}.local",
        os="Darwin 25.2.0",
        chip="Apple M3 Ultra",
        memory_bytes=96 * 10**9,
        available_bytes=90 * 10**9,
        interfaces=[Interface(name="en2", addresses=["169.254.0.1/16"], kind="thunderbolt")],
        rdma=parse_rdma_ctl(rdma_ctl),
        os_version=parse_sw_vers(sw_vers),
        rdma_devices=parse_ibv_devices(ibv),
        thunderbolt=parse_thunderbolt(profiler(node, cables)),
        measurements=Measurements(
            measured_at=1.0, took_s=1.0, memory_bandwidth_gbps=700.0, links=links
        ),
    )


def mesh(nodes: list[str], **overrides: dict[str, Any]) -> list[NodeFacts]:
    """Facts of a healthy full mesh of `nodes`; `overrides[node]` changes mac_facts arguments."""
    cables = full_mesh(nodes)
    return [
        mac_facts(
            n,
            **{"cables": cables[n], "peers": [p for p in nodes if p != n], **overrides.get(n, {})},
        )
        for n in nodes
    ]
