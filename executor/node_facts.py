"""This machine's facts for the planner: memory, chip, interfaces and their kind, OS version,
Thunderbolt ports and RDMA devices (sysctl, vm_stat, networksetup, system_profiler, ibv_devices,
rdma_ctl and sw_vers on macOS, parsed by `executor.macos_tools`; psutil and /sys elsewhere)."""

from __future__ import annotations

import ipaddress
import platform
import re
import shutil
import socket
import subprocess
from pathlib import Path

import psutil

from executor import macos_tools
from protocol.measurements import InterfaceKind, ThunderboltPort
from protocol.schema import Interface, NodeFacts

SYS_NET = Path("/sys/class/net")
SYS_INFINIBAND = Path("/sys/class/infiniband")


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _macos_memory() -> tuple[int, int] | None:
    total = _run("sysctl", "-n", "hw.memsize").strip()
    stat = _run("vm_stat")
    page = re.search(r"page size of (\d+) bytes", stat)
    if not total.isdigit() or not page:
        return None
    pages = {
        k.strip(): int(v.strip(" ."))
        for k, v in re.findall(r"^(Pages [^:]+):\s+(\d+)\.", stat, re.M)
    }
    # Free, inactive and purgeable pages can be handed to a new process without swapping.
    free = sum(pages.get(k, 0) for k in ("Pages free", "Pages inactive", "Pages purgeable"))
    return int(total), free * int(page.group(1))


def memory() -> tuple[int, int]:
    if platform.system() == "Darwin" and (mac := _macos_memory()):
        return mac
    vm = psutil.virtual_memory()
    return vm.total, vm.available


def chip() -> str | None:
    if platform.system() == "Darwin":
        return _run("sysctl", "-n", "machdep.cpu.brand_string").strip() or None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _kind_from_name(name: str) -> InterfaceKind:
    if name.startswith(("lo", "Loopback")):
        return "loopback"
    if name.startswith(("bridge", "thunderbolt", "tb")):
        return "thunderbolt"  # macOS "Thunderbolt Bridge" is bridge0
    if name.startswith(("wl", "awdl")):
        return "wifi"
    if name.startswith(("en", "eth")):
        return "ethernet"
    return "other"


def _kind_from_port(port: str) -> InterfaceKind | None:
    """A macOS hardware port name: "Thunderbolt 1", "Thunderbolt Bridge", "Wi-Fi", ..."""
    if port.startswith("Thunderbolt"):
        return "thunderbolt"
    if port.startswith("Wi-Fi"):
        return "wifi"
    if "Ethernet" in port or "LAN" in port:
        return "ethernet"
    return None


def _kind_from_sys(name: str) -> InterfaceKind | None:
    """Linux: /sys says whether an interface is wireless or the thunderbolt-net driver's."""
    base = SYS_NET / name
    if (base / "wireless").exists():
        return "wifi"
    driver = base / "device" / "driver"
    if driver.exists() and "thunderbolt" in driver.resolve().name:
        return "thunderbolt"
    return None


def _kinds() -> dict[str, InterfaceKind]:
    """Interface -> kind as the OS tells it; names the OS says nothing about are left out."""
    if platform.system() == "Darwin":
        ports = macos_tools.parse_hardware_ports(_run("networksetup", "-listallhardwareports"))
        return {dev: k for dev, port in ports.items() if (k := _kind_from_port(port))}
    return {n: k for n in psutil.net_if_addrs() if (k := _kind_from_sys(n))}


def interfaces() -> list[Interface]:
    kinds = _kinds()
    out = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        listed = []
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6) or not a.netmask:
                continue
            ip = a.address.split("%")[0]
            try:
                prefix = ipaddress.ip_network(f"{ip}/{a.netmask}", strict=False).prefixlen
            except ValueError:
                continue
            listed.append(f"{ip}/{prefix}")
        if listed:
            out.append(
                Interface(
                    name=name[:64],
                    addresses=listed[:32],
                    kind=kinds.get(name) or _kind_from_name(name),
                )
            )
    return out[:64]


def rdma_enabled() -> bool | None:
    if platform.system() != "Darwin":
        return None
    return macos_tools.parse_rdma_ctl(_run("rdma_ctl", "status"))


def os_version() -> str | None:
    if platform.system() == "Darwin":
        return macos_tools.parse_sw_vers(_run("sw_vers"))
    return platform.release()[:64] or None


def rdma_devices() -> list[str] | None:
    """None where the OS has no way to list them (macOS before RDMA over Thunderbolt)."""
    if platform.system() == "Darwin":
        if not shutil.which("ibv_devices"):
            return None
        return macos_tools.parse_ibv_devices(_run("ibv_devices"))[:64]
    if not SYS_INFINIBAND.is_dir():
        return []
    return sorted(p.name for p in SYS_INFINIBAND.iterdir())[:64]


def thunderbolt() -> list[ThunderboltPort] | None:
    if platform.system() != "Darwin":
        return None
    text = _run("system_profiler", "SPThunderboltDataType", "-json")
    try:
        return macos_tools.parse_thunderbolt(text)[:16] if text else None
    except macos_tools.ToolOutputError:
        return None


def collect(node_id: str, memory_override: tuple[int, int] | None = None) -> NodeFacts:
    """`memory_override` (total, available) lets a test or a demo simulate a smaller machine."""
    total, available = memory_override or memory()
    return NodeFacts(
        node_id=node_id,
        hostname=socket.gethostname()[:255],
        os=f"{platform.system()} {platform.release()}"[:64],
        chip=(chip() or None),
        memory_bytes=total,
        available_bytes=min(available, total),
        interfaces=interfaces(),
        rdma=rdma_enabled(),
        os_version=os_version(),
        rdma_devices=rdma_devices(),
        thunderbolt=thunderbolt(),
    )
