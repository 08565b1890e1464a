"""This machine's facts for the planner: memory, chip, interfaces (sysctl/vm_stat on macOS,
psutil elsewhere)."""

from __future__ import annotations

import ipaddress
import platform
import re
import socket
import subprocess

import psutil

from protocol.schema import Interface, NodeFacts


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


def _kind(name: str) -> str:
    if name.startswith(("lo", "Loopback")):
        return "loopback"
    if name.startswith(("bridge", "thunderbolt", "tb")):
        return "thunderbolt"  # macOS "Thunderbolt Bridge" is bridge0
    if name.startswith(("wl", "awdl")):
        return "wifi"
    if name.startswith(("en", "eth")):
        return "ethernet"
    return "other"


def interfaces() -> list[Interface]:
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
            out.append(Interface(name=name[:64], addresses=listed[:32], kind=_kind(name)))
    return out[:64]


def rdma_enabled() -> bool | None:
    if platform.system() != "Darwin":
        return None
    status = _run("rdma_ctl", "status").lower()
    return None if not status else "enabled" in status


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
    )
