"""Forming and watching an `mx.distributed` group.

- `join`: initialise the ring (TCP) or JACCL (RDMA over Thunderbolt 5) group, retrying while
  peers come up out of order, within a deadline.
- `LivenessPort` / `lost_peers`: each rank keeps a plain TCP port open while it lives, so a
  rank whose collective failed can tell *which* peer went away (the ring's own error names
  none, and its ports close once the group has formed).
- `Watchdog`: a collective waiting on a peer that is alive but stuck blocks forever; the
  watchdog turns "no progress for N seconds" into a clean failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.deployment import LIVENESS_OFFSET, Peer


class JoinError(RuntimeError):
    """The group did not form in time."""


@dataclass(frozen=True)
class GroupSpec:
    rank: int
    world: int
    backend: str  # ring | jaccl
    hostfile: Path | None = None
    """Ring: JSON list of ["host:port"] per rank. JACCL: the device matrix."""
    coordinator: str | None = None
    """JACCL only: rank 0's host:port."""


def write_ring_hostfile(peers: list[Peer], path: Path) -> Path:
    path.write_text(
        json.dumps([[f"{p.host}:{p.port}"] for p in sorted(peers, key=lambda p: p.rank)])
    )
    return path


def liveness_port(peer: Peer) -> int:
    return peer.port + LIVENESS_OFFSET


def join(
    spec: GroupSpec, deadline_s: float, on_attempt: Callable[[int], None] | None = None
) -> Any:
    """The group, or `JoinError` once `deadline_s` has passed without the peers answering."""
    import mlx.core as mx

    if spec.world == 1:
        return None
    if spec.hostfile is None:
        raise ValueError("a group of more than one rank needs a hostfile")
    os.environ["MLX_RANK"] = str(spec.rank)
    if spec.backend == "jaccl":
        os.environ["MLX_IBV_DEVICES"] = str(spec.hostfile)
        if spec.coordinator:
            os.environ["MLX_JACCL_COORDINATOR"] = spec.coordinator
    else:
        os.environ["MLX_HOSTFILE"] = str(spec.hostfile)
    started, attempt, last = time.monotonic(), 0, ""
    while True:
        attempt += 1
        if on_attempt:
            on_attempt(attempt)
        try:
            group = mx.distributed.init(strict=True, backend=spec.backend)
        except RuntimeError as e:
            # The ring gives up after ~30 s without a peer; try again while time remains.
            last = str(e)
            if time.monotonic() - started >= deadline_s:
                raise JoinError(
                    f"the group of {spec.world} did not form within {deadline_s:g}s "
                    f"({attempt} attempts; last: {last})"
                ) from None
            time.sleep(1.0)
            continue
        if group.size() != spec.world or group.rank() != spec.rank:
            raise JoinError(
                f"joined as rank {group.rank()} of {group.size()}, expected {spec.rank} of {spec.world}"
            )
        return group


class LivenessPort:
    """Accepts and closes connections for as long as this process lives."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        threading.Thread(target=self._serve, name="liveness", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()


def lost_peers(peers: list[Peer], me: int, timeout: float = 1.0) -> list[Peer]:
    """Peers whose liveness port no longer answers."""
    lost = []
    for p in peers:
        if p.rank == me:
            continue
        try:
            with socket.create_connection((p.host, liveness_port(p)), timeout=timeout):
                pass
        except OSError:
            lost.append(p)
    return lost


def _named(peers: list[Peer]) -> str:
    return ", ".join(f"{p.rank} ({p.node_id})" for p in peers)


def probe_peers(peers: list[Peer], me: int) -> str | None:
    """A failure reason naming the peers that are gone, or None while all answer."""
    gone = lost_peers(peers, me)
    return f"peer {_named(gone)} lost: its process is gone" if gone else None


def describe_loss(message: str, peers: list[Peer], me: int) -> str:
    gone = lost_peers(peers, me) if peers else []
    if gone:
        return f"peer {_named(gone)} lost: {message}"
    return f"peer lost: {message}"


class Watchdog:
    """Bounds every armed wait on the group.

    A dead peer does not always make a collective fail (a rank can sit in a receive that never
    completes), so once a wait has lasted `probe_after_s` the watchdog asks `probe` every
    second whether a peer is gone and fails at once with its answer; a peer alive but stuck is
    caught when the wait reaches its limit.
    """

    def __init__(
        self,
        on_stall: Callable[[str], None],
        probe: Callable[[], str | None] | None = None,
        probe_after_s: float = 2.0,
    ) -> None:
        self.on_stall = on_stall
        self.probe = probe
        self.probe_after_s = probe_after_s
        self.started: float | None = None
        self.limit = 0.0
        self.what = ""
        self.lock = threading.Lock()
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    @contextlib.contextmanager
    def armed(self, seconds: float, what: str) -> Any:
        with self.lock:
            self.started, self.limit, self.what = time.monotonic(), seconds, what
        try:
            yield
        finally:
            with self.lock:
                self.started = None

    def _watch(self) -> None:
        next_probe = 0.0
        while True:
            time.sleep(0.25)
            with self.lock:
                started, limit, what = self.started, self.limit, self.what
            if started is None:
                continue
            now = time.monotonic()
            if now - started > limit:
                self.on_stall(
                    f"no answer from the group for {limit:g}s during {what} (a peer stuck or gone)"
                )
                return
            if self.probe and now - started > self.probe_after_s and now >= next_probe:
                next_probe = now + 1.0
                if (lost := self.probe()) is not None:
                    self.on_stall(lost)
                    return
