"""Processes on this machine, for tests, the demo, the local cluster and the benchmarks: one
way to start a command in its own process group with its log in a file, stop it, and start an
`asymtp serve` and wait for its `/healthz`.

    with running_service(tmp_path / "db.sqlite", token="s3cret-token-16ch") as service:
        httpx.get(f"{service.url}/healthz")
        service.restart()                         # same port, same database file
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from protocol.deployment import LIVENESS_OFFSET

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_port_block(n: int, offsets: tuple[int, ...] = (0, LIVENESS_OFFSET)) -> int:
    """A base port b such that b + o + i is free for every offset o and i < n."""
    for _ in range(200):
        base = 20000 + secrets.randbelow(20000)
        ports = [base + o + i for o in offsets for i in range(n)]
        if all(_is_free(p) for p in ports):
            return base
    raise RuntimeError("no free block of ports found")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def env_without_asymtp(**extra: str) -> dict[str, str]:
    """This environment without any ASYMTP_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYMTP_")}
    return {**env, **extra}


@dataclass
class Proc:
    """A command in its own process group (a stop reaches its children, e.g. uvicorn's
    workers), its output appended to `log`."""

    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str]
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.popen is not None
            os.killpg(self.popen.pid, sig) if sig == signal.SIGKILL else self.popen.send_signal(sig)

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM, then SIGKILL to the group after `timeout`; no child outlives it."""
        p = self.popen
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_healthy(self, url: str, timeout: float = START_TIMEOUT_S) -> Proc:
        """Wait until `url/healthz` answers 200; RuntimeError with the log's tail if the
        process exits or does not answer in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                code = self.popen.returncode if self.popen else None
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.tail(40)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop(timeout=5.0)
        raise RuntimeError(f"{self.name} did not answer /healthz in {timeout:g}s:\n{self.tail(40)}")


@dataclass
class Service:
    """An `asymtp serve` on a loopback port. `entry` is the `python -m` module: "service"
    (quick to start) or "asymtp.cli" (`asymtp serve` through the dispatcher)."""

    db_path: Path
    port: int = field(default_factory=free_port)
    token: str | None = None
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(suffix=".log")[1]))
    entry: str = "service"
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        """Headers carrying the token (empty without one)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def key_path(self) -> Path:
        """The signing key file the service keeps next to its database (with a token)."""
        return self.db_path.with_name(self.db_path.name + ".signing-key")

    def command(self) -> list[str]:
        serve = ["serve"] if self.entry == "asymtp.cli" else []
        return [
            *(sys.executable, "-m", self.entry, *serve),
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)),
            *("--db", str(self.db_path), "--log-level", "warning", *self.args),
        ]

    def start(self, timeout: float = START_TIMEOUT_S) -> Service:
        token = {"ASYMTP_TOKEN": self.token} if self.token else {}
        env = env_without_asymtp(**token, **self.env)
        self.proc = Proc("asymtp serve", self.command(), self.log_path, env, cwd=ROOT).start()
        self.proc.wait_healthy(self.url, timeout)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None:
            self.proc.stop(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        return self.proc.tail(lines) if self.proc else ""


@contextlib.contextmanager
def running_service(
    db_path: Path,
    *,
    token: str | None = None,
    workers: int = 1,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    port: int | None = None,
    entry: str = "service",
) -> Iterator[Service]:
    """A started service over `db_path`; stopped on exit. Retries once on a port clash (the
    free port was taken between choosing and binding it)."""
    service = Service(
        db_path, port or free_port(), token, workers, dict(env or {}), list(args or []), entry=entry
    )
    try:
        service.start()
    except RuntimeError:
        if port is not None or "address already in use" not in service.log_tail().lower():
            raise
        service.port = free_port()
        service.start()
    try:
        yield service
    finally:
        service.stop()
