"""Link measurement: a TCP responder every agent runs, and the client that measures a peer.

Wire format (after connecting, the client sends one mode byte):

    b"H"  hello: the responder answers its node id and a newline (so a reused address or port
          never passes for another node), then the client sends the next mode byte
    b"P"  ping-pong: the responder echoes each PING_BYTES message until the client closes
    b"B"  bulk sink: the responder reads until the client shuts its side down (at most
          MAX_BULK_BYTES) and answers the byte count it got as 8 bytes, big endian

Bounded on both sides: the client sends at most `bulk_bytes` for at most `bulk_s`; the
responder drops connections idle for IDLE_S and reads at most MAX_BULK_BYTES per transfer.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

PING_BYTES = 64
CHUNK = 1 << 20
MAX_BULK_BYTES = 256 << 20
IDLE_S = 5.0
MAX_CONNECTIONS = 16
"""Peers measure one address at a time: more at once is not a measurement, refuse it."""


class MeasureError(Exception):
    """A peer address could not be measured (refused, timed out, or another node answered)."""


@dataclass(frozen=True)
class Slowness:
    """Deliberate slowness, for tests: a peer that is slower by construction."""

    echo_delay_s: float = 0.0
    sink_bytes_per_s: float | None = None


class _Handler(socketserver.BaseRequestHandler):
    server: Responder

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(IDLE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            mode = _recv_exact(sock, 1)
            if mode == b"H":
                sock.sendall(self.server.node_id.encode() + b"\n")
                mode = _recv_exact(sock, 1)
            if mode == b"P":
                self._echo(sock)
            elif mode == b"B":
                self._sink(sock)
        except (OSError, MeasureError):
            pass  # the client went away or idled: nothing to answer

    def _echo(self, sock: socket.socket) -> None:
        delay = self.server.slowness.echo_delay_s
        while True:
            try:
                msg = _recv_exact(sock, PING_BYTES)
            except MeasureError:
                return  # the client closed: done
            if delay:
                time.sleep(delay)
            sock.sendall(msg)

    def _sink(self, sock: socket.socket) -> None:
        rate = self.server.slowness.sink_bytes_per_s
        got, started = 0, time.monotonic()
        buf = bytearray(CHUNK)
        while got < MAX_BULK_BYTES:
            n = sock.recv_into(buf)
            if n == 0:
                break
            got += n
            if rate:
                # Read no faster than `rate`: TCP flow control slows the sender to match.
                ahead = got / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        sock.sendall(struct.pack(">Q", got))


class Responder(socketserver.ThreadingTCPServer):
    """The measurement responder: `with Responder(...) as r: r.start()`; `r.port` is bound."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, node_id: str, port: int, host: str = "0.0.0.0", slowness: Slowness | None = None
    ) -> None:
        self.node_id = node_id
        self.slowness = slowness or Slowness()
        self._active = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), _Handler)
        self.port: int = self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._active.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._active.release()

    def start(self) -> Responder:
        threading.Thread(target=self.serve_forever, name="measure-responder", daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@dataclass(frozen=True)
class LinkFigures:
    rtt_median_us: float
    rtt_p99_us: float
    bandwidth_gbps: float
    bytes_sent: int


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise MeasureError("connection closed early")
        data += part
    return bytes(data)


def _connect(host: str, port: int, peer: str, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise MeasureError(f"{host}:{port}: {e.strerror or e}") from e
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.sendall(b"H")
        answer = b""
        while not answer.endswith(b"\n") and len(answer) < 80:
            answer += _recv_exact(sock, 1)
    except (OSError, MeasureError) as e:
        sock.close()
        raise MeasureError(f"{host}:{port}: no hello ({e})") from e
    if answer.strip().decode(errors="replace") != peer:
        sock.close()
        raise MeasureError(f"{host}:{port} answers as {answer.strip()!r}, not {peer!r}")
    return sock


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (`q` in [0, 1])."""
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def ping(host: str, port: int, peer: str, count: int = 40, timeout: float = 2.0) -> list[float]:
    """Round trips of `count` small messages, in µs, ascending."""
    with _connect(host, port, peer, timeout) as sock:
        sock.sendall(b"P")
        msg = bytes(PING_BYTES)
        rtts = []
        try:
            for _ in range(count):
                t0 = time.perf_counter()
                sock.sendall(msg)
                _recv_exact(sock, PING_BYTES)
                rtts.append((time.perf_counter() - t0) * 1e6)
        except OSError as e:
            raise MeasureError(f"{host}:{port}: ping failed ({e})") from e
    return sorted(rtts)


def bulk(
    host: str, port: int, peer: str, max_bytes: int = 64 << 20, max_s: float = 0.5
) -> tuple[float, int]:
    """(Gb/s, bytes) of one transfer to the peer, stopped at `max_bytes` or after `max_s`."""
    chunk = bytes(CHUNK)
    with _connect(host, port, peer, max_s + 5.0) as sock:
        sock.sendall(b"B")
        sent, t0 = 0, time.perf_counter()
        try:
            while sent < min(max_bytes, MAX_BULK_BYTES) and time.perf_counter() - t0 < max_s:
                sock.sendall(chunk)
                sent += CHUNK
            sock.shutdown(socket.SHUT_WR)
            got = struct.unpack(">Q", _recv_exact(sock, 8))[0]
        except OSError as e:
            raise MeasureError(f"{host}:{port}: bulk transfer failed ({e})") from e
        took = time.perf_counter() - t0
    return got * 8 / took / 1e9, got


def measure_link(
    host: str,
    port: int,
    peer: str,
    pings: int = 40,
    bulk_bytes: int = 64 << 20,
    bulk_s: float = 0.5,
) -> LinkFigures:
    rtts = ping(host, port, peer, pings)
    gbps, sent = bulk(host, port, peer, bulk_bytes, bulk_s)
    return LinkFigures(
        rtt_median_us=round(percentile(rtts, 0.5), 1),
        rtt_p99_us=round(percentile(rtts, 0.99), 1),
        bandwidth_gbps=round(gbps, 3),
        bytes_sent=sent,
    )
