"""Forming and watching an `mx.distributed` group.

- `join`: initialise the ring (TCP) or JACCL (RDMA over Thunderbolt 5) group, retrying while
  peers come up out of order, within a deadline.
- `LivenessPort` / `lost_peers`: each rank keeps a plain TCP port open while it lives and
  answers every connection with a heartbeat line, so a rank whose collective failed can tell
  *which* peer went away (the ring's own error names none, and its ports close once the group
  has formed), and a stopped peer (SIGSTOP, a hung machine: connected by the kernel, never
  answered) is told from a slow one (which answers while it computes).
- `Watchdog`: a collective waiting on a peer that is stopped or gone blocks forever; the
  watchdog asks the peers' heartbeats during every long wait and fails within seconds when one
  does not answer, and fails any wait that outlasts its limit (which the caller scales with the
  work in flight).
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
from enum import StrEnum
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


HEARTBEAT = b"alive\n"
HEARTBEAT_TIMEOUT_S = 1.0


class LivenessPort:
    """Answers every connection with a heartbeat line for as long as this process runs."""

    @classmethod
    def for_rank(cls, peers: list[Peer], rank: int) -> LivenessPort:
        me = next(p for p in peers if p.rank == rank)
        return cls(me.host, liveness_port(me))

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
            with contextlib.suppress(OSError):
                conn.sendall(HEARTBEAT)
            conn.close()


class Silence(StrEnum):
    GONE = "its process is gone"
    STOPPED = "its process does not answer (stopped or hung)"


def _heartbeat(peer: Peer, timeout: float) -> Silence | None:
    """None while the peer answers; else why not."""
    try:
        with socket.create_connection((peer.host, liveness_port(peer)), timeout=timeout) as s:
            s.settimeout(timeout)
            return None if s.recv(len(HEARTBEAT)) == HEARTBEAT else Silence.GONE
    except TimeoutError:
        return Silence.STOPPED
    except OSError:
        return Silence.GONE


def silent_peers(
    peers: list[Peer], me: int, timeout: float = HEARTBEAT_TIMEOUT_S
) -> list[tuple[Peer, Silence]]:
    """Peers whose heartbeat does not come, with why."""
    out = []
    for p in peers:
        if p.rank != me and (why := _heartbeat(p, timeout)) is not None:
            out.append((p, why))
    return out


def lost_peers(peers: list[Peer], me: int, timeout: float = HEARTBEAT_TIMEOUT_S) -> list[Peer]:
    """Peers whose process is gone or does not answer."""
    return [p for p, _ in silent_peers(peers, me, timeout)]


def _named(peers: list[Peer]) -> str:
    return ", ".join(f"{p.rank} ({p.node_id})" for p in peers)


def _reason(silent: list[tuple[Peer, Silence]]) -> str:
    return "; ".join(f"peer {_named([p])} lost: {why}" for p, why in silent)


def describe_loss(message: str, peers: list[Peer], me: int) -> str:
    gone = lost_peers(peers, me) if peers else []
    if gone:
        return f"peer {_named(gone)} lost: {message}"
    return f"peer lost: {message}"


class Watchdog:
    """Bounds every armed wait on the group.

    A dead or stopped peer does not always make a collective fail (a rank can sit in a receive
    that never completes), so once a wait has lasted `probe_after_s` the watchdog asks every
    peer's heartbeat each second and fails, naming the peer, when one is gone or has not
    answered `STRIKES` times in a row (one late answer on a loaded machine is not a stop); a
    wait that outlasts its limit fails too (peers alive but stuck).
    """

    STRIKES = 2

    def __init__(
        self,
        on_stall: Callable[[str], None],
        peers: list[Peer],
        rank: int,
        describe: Callable[[str], str],
        heartbeat: LivenessPort | None = None,
        probe_after_s: float = 2.0,
    ) -> None:
        self.on_stall = on_stall
        self.peers = peers
        self.rank = rank
        self.describe = describe
        self.heartbeat = heartbeat  # kept open (answering) while this watchdog lives
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

    def _probe(self, strikes: dict[int, int]) -> str | None:
        silent = silent_peers(self.peers, self.rank)
        for rank in list(strikes):
            if all(p.rank != rank for p, _ in silent):
                del strikes[rank]
        for p, _ in silent:
            strikes[p.rank] = strikes.get(p.rank, 0) + 1
        caught = [
            (p, why) for p, why in silent if why == Silence.GONE or strikes[p.rank] >= self.STRIKES
        ]
        return _reason(caught) if caught else None

    def _watch(self) -> None:
        next_probe = 0.0
        strikes: dict[int, int] = {}
        while True:
            time.sleep(0.25)
            with self.lock:
                started, limit, what = self.started, self.limit, self.what
            if started is None:
                strikes.clear()
                continue
            now = time.monotonic()
            if now - started > limit:
                self.on_stall(
                    self.describe(
                        f"no answer from the group for {limit:g}s during {what} "
                        "(a peer stuck or gone)"
                    )
                )
                return
            if self.peers and now - started > self.probe_after_s and now >= next_probe:
                next_probe = now + 1.0
                if (lost := self._probe(strikes)) is not None:
                    self.on_stall(lost)
                    return
