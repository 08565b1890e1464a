"""Start a real `asymtp serve` on a free loopback port, for tests that talk HTTP to it.

    from service_server import running_server         # tests/ is on sys.path under pytest

    with running_server(tmp_path / "db.sqlite", token="s3cret") as server:
        httpx.get(f"{server.url}/healthz")
        httpx.put(f"{server.url}/deployments/demo", json=spec, headers=server.auth)
        server.restart()                      # same port, same database file

The server is `python -m service` (the `asymtp serve` code without the dispatcher,
which imports every subcommand's module); `entry="asymtp.cli"` runs `asymtp serve` itself.
`running_server` waits for /healthz before it yields and stops the server (SIGTERM, then
SIGKILL to its process group) on exit. The server's environment is this one without any
ASYMTP_* variable, plus `env`; its log is in `server.log_path`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from asymtp.local_cluster import free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0


@dataclass
class Server:
    db_path: Path
    port: int
    token: str | None = None
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(suffix=".log")[1]))
    entry: str = "service"
    """`python -m` module: "service" (quick to start) or "asymtp.cli" (`asymtp serve`)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        """Headers carrying the token (empty without one)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            self.entry,
            *(["serve"] if self.entry == "asymtp.cli" else []),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--db",
            str(self.db_path),
            "--log-level",
            "warning",
            *self.args,
        ]

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASYMTP_")}
        if self.token:
            env["ASYMTP_TOKEN"] = self.token
        env.update(self.env)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches the workers too
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"asymtp serve exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"asymtp serve did not answer /healthz in {timeout:g}s:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        p = self.process
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
        # Workers of a multi-process server share the group; make sure none outlives it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def running_server(
    db_path: Path,
    *,
    token: str | None = None,
    workers: int = 1,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    port: int | None = None,
    entry: str = "service",
) -> Iterator[Server]:
    """A started server over `db_path`; stopped on exit. Retries once on a port clash."""
    server = Server(
        db_path=db_path, port=port or free_port(), token=token, workers=workers, entry=entry
    )
    server.env.update(env or {})
    server.args.extend(args or [])
    try:
        server.start()
    except RuntimeError:
        if port is not None or "address already in use" not in server.log_tail().lower():
            raise
        server.port = free_port()
        server.start()
    try:
        yield server
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            server.log_path.unlink()
