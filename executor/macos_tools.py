"""Pure parsers of the macOS tools whose output tells what an RDMA mesh needs.

    system_profiler SPThunderboltDataType -json   receptacles, link speed, the Mac at the other
                                                  end (one level deeper behind a hub or dock)
    networksetup -listallhardwareports            which BSD interface is a Thunderbolt port
    ibv_devices                                   RDMA devices (empty when RDMA is off)
    rdma_ctl status                               "enabled" / "disabled"
    sw_vers                                       macOS version and build

Each takes the tool's text and returns typed values; none runs anything (`node_facts` does).
"""

from __future__ import annotations

import json
import re
from typing import Any

from protocol.measurements import ThunderboltPort

_SPEED = re.compile(r"(\d+(?:\.\d+)?)\s*Gb/s", re.I)


class ToolOutputError(ValueError):
    """The tool's output is not in the documented format."""


def _speed(text: str | None) -> float | None:
    m = _SPEED.search(text or "")
    return float(m.group(1)) if m else None


def _receptacle(bus: dict[str, Any]) -> dict[str, Any]:
    for key, value in bus.items():
        if key.startswith("receptacle_") and key.endswith("_tag") and isinstance(value, dict):
            return value
    return {}


def _find_mac(items: list[Any], via: str | None) -> tuple[dict[str, Any], str | None] | None:
    """The first item with a Thunderbolt domain (a host: another Mac), searching behind hubs
    and docks (which have no domain of their own) one level at a time."""
    for item in items:
        if isinstance(item, dict) and item.get("domain_uuid_key"):
            return item, via
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("_items"), list):
            hub = str(item.get("device_name_key") or item.get("_name") or "a hub")
            found = _find_mac(item["_items"], via or hub)
            if found:
                return found
    return None


def parse_thunderbolt(text: str) -> list[ThunderboltPort]:
    """`system_profiler SPThunderboltDataType -json`: one port per bus (receptacle)."""
    try:
        data = json.loads(text)
        buses = data["SPThunderboltDataType"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ToolOutputError(f"not SPThunderboltDataType JSON: {e}") from e
    ports = []
    for i, bus in enumerate(buses if isinstance(buses, list) else []):
        if not isinstance(bus, dict):
            continue
        rec = _receptacle(bus)
        found = _find_mac(bus.get("_items") or [], None)
        peer, via = found if found else ({}, None)
        ports.append(
            ThunderboltPort(
                receptacle=str(rec.get("receptacle_id_key") or i + 1),
                domain_uuid=bus.get("domain_uuid_key"),
                speed_gbps=_speed(rec.get("current_speed_key")),
                peer_uuid=peer.get("domain_uuid_key"),
                peer_name=peer.get("device_name_key") or peer.get("_name"),
                via=via,
            )
        )
    return ports


def parse_hardware_ports(text: str) -> dict[str, str]:
    """`networksetup -listallhardwareports`: BSD device -> hardware port name
    ("en2" -> "Thunderbolt 1", "bridge0" -> "Thunderbolt Bridge")."""
    out: dict[str, str] = {}
    port = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Hardware Port":
            port = value.strip()
        elif key.strip() == "Device" and port is not None:
            out[value.strip()] = port
            port = None
    return out


def parse_ibv_devices(text: str) -> list[str]:
    """`ibv_devices`: the device names under the `device  node GUID` header."""
    names = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] == "device" or set(fields[0]) == {"-"}:
            continue
        names.append(fields[0])
    return names


def parse_rdma_ctl(text: str) -> bool | None:
    """`rdma_ctl status`: True when enabled, False when disabled, None when unreadable."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    if "disabled" in words:
        return False
    if "enabled" in words:
        return True
    return None


def parse_sw_vers(text: str) -> str | None:
    """`sw_vers`: "26.2 (25C56)" from ProductVersion and BuildVersion."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    version = fields.get("ProductVersion")
    if not version:
        return None
    build = fields.get("BuildVersion")
    return f"{version} ({build})" if build else version
