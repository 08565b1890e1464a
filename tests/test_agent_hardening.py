"""Issue 15 on the agent's side, with real agents: replayed or redirected assignments, the
development key beyond loopback, a model path that cannot be opened, a config.json that
links out of the models directory. Refusals are logged with why; the agent keeps running."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_server import ROOT, Server

from asymtp.processes import Proc, env_without_asymtp
from executor.agent import resolve_model
from planner.request_io import load_request
from protocol.deployment import Deployment
from protocol.signing import DEVELOPMENT_KEY

SEED_FILE = ROOT / "planner" / "examples" / "seed-128-48.yaml"
NODE = "m1-ultra"


def spec(model_path: str = "m") -> dict[str, Any]:
    body = load_request(SEED_FILE).model_dump(mode="json", exclude_unset=True)
    return {**body, "model_path": model_path}


def agent(tmp: Path, planner: str, deployment: str, *extra: str, name: str = "agent") -> Proc:
    cmd = [sys.executable, "-m", "asymtp.cli", "agent", "--planner", planner]
    cmd += ["--deployment", deployment, "--node-id", NODE, "--models-dir", str(tmp)]
    cmd += ["--memory-gb", "400", "--no-measure", *extra]
    env = env_without_asymtp(PYTHONUNBUFFERED="1")
    return Proc(name, cmd, tmp / f"{name}.log", env, cwd=ROOT).start()


def wait_until(what: str, done: Any, proc: Proc, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = done()
        if result:
            return result
        assert proc.alive, f"the agent died:\n{proc.tail(40)}"
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen in {timeout:g}s:\n{proc.tail(40)}")


# -- the development key -----------------------------------------------------------------------
@pytest.mark.parametrize("with_key_file", [False, True])
def test_the_development_key_is_refused_beyond_loopback(
    tmp_path: Path, with_key_file: bool
) -> None:
    extra = []
    if with_key_file:
        (tmp_path / "dev.key").write_text(DEVELOPMENT_KEY + "\n")
        extra = ["--signing-key-file", str(tmp_path / "dev.key")]
    cmd = [sys.executable, "-m", "asymtp.cli", "agent", "--planner", "http://192.0.2.10:8420"]
    cmd += ["--deployment", "d", "--node-id", NODE, "--models-dir", str(tmp_path), *extra]
    env = env_without_asymtp()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "development key" in line and "not on loopback" in line, line


# -- replays -------------------------------------------------------------------------------------
def captured(server: Server) -> dict[str, bytes]:
    """Validly signed assignments from a real service: demo revisions 1 and 2 for our node,
    demo revision 2 for another node, and the same node in another deployment."""
    h = server.auth
    url = server.url

    def get(deployment: str, node: str) -> bytes:
        r = httpx.get(f"{url}/deployments/{deployment}/assignments/{node}", headers=h)
        assert r.status_code == 200, r.text
        return r.content

    def deploy(name: str) -> None:
        r = httpx.put(f"{url}/deployments/{name}", json=spec(), headers=h, timeout=60)
        assert r.status_code == 200, r.text

    deploy("replay-demo")
    rev1 = get("replay-demo", NODE)
    deploy("replay-demo")
    deploy("replay-other")
    return {
        "rev2": get("replay-demo", NODE),
        "rev1": rev1,
        "other deployment": get("replay-other", NODE),
        "other node": get("replay-demo", "laptop-48"),
    }


class Replayer(http.server.ThreadingHTTPServer):
    """A planner that answers assignment polls with recorded answers, in order, then 304s."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        super().__init__(("127.0.0.1", 0), _ReplayHandler)


class _ReplayHandler(http.server.BaseHTTPRequestHandler):
    server: Replayer

    def do_GET(self) -> None:
        if "/assignments/" not in self.path:
            self._send(404, b'{"detail": "not recorded"}', {})
            return
        if not self.server.answers:
            time.sleep(1.0)
            self.send_response(304)
            self.end_headers()
            return
        body = self.server.answers.pop(0)
        a = json.loads(body)
        self._send(200, body, {"ETag": f'"{a["plan_id"]}:{a["revision"]}"'})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(200, b"{}", {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def replayer(token_server: Server) -> Iterator[Replayer]:
    recorded = captured(token_server)
    order = ["rev2", "rev1", "other deployment", "other node"]
    server = Replayer([recorded[k] for k in order])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()


@pytest.mark.slow
def test_replayed_and_redirected_assignments_are_refused(
    tmp_path: Path, token_server: Server, replayer: Replayer
) -> None:
    url = f"http://127.0.0.1:{replayer.server_address[1]}"
    key = ["--signing-key-file", str(token_server.key_path)]
    proc = agent(tmp_path, url, "replay-demo", *key)
    try:
        refused = lambda: [  # noqa: E731
            line for line in proc.tail(200).splitlines() if "refused an assignment" in line
        ]
        lines = wait_until("three refusals", lambda: len(refused()) >= 3 and refused(), proc)
        assert "revision 1 is older than revision 2" in lines[0], lines
        assert "deployment 'replay-other'" in lines[1], lines
        assert "node 'laptop-48'" in lines[2], lines
        assert "(revision 1)" not in proc.tail(200)  # the old revision never started
        assert proc.alive
    finally:
        proc.stop(10)


# -- models that cannot be opened ------------------------------------------------------------------
@pytest.mark.slow
def test_a_256_character_model_path_fails_and_the_agent_keeps_running(
    tmp_path: Path, token_server: Server
) -> None:
    h, url = token_server.auth, token_server.url
    r = httpx.put(f"{url}/deployments/long-path", json=spec("a" * 256), headers=h, timeout=60)
    assert r.status_code == 200, r.text
    key = ["--signing-key-file", str(token_server.key_path), "--token", token_server.token or ""]
    proc = agent(tmp_path, url, "long-path", *key)
    try:

        def record() -> Any:
            d = Deployment.model_validate_json(
                httpx.get(f"{url}/deployments/long-path", headers=h).content
            )
            return d.agents.get(NODE)

        failed = wait_until(
            "failed",
            lambda: (a := record()) and a.state == "failed" and a.revision == 1 and a,
            proc,
        )
        assert "too long" in (failed.reason or ""), failed.reason
        # Still following the planner: the next revision is acted on too.
        httpx.put(f"{url}/deployments/long-path", json=spec("absent"), headers=h, timeout=60)
        again = wait_until(
            "the next revision",
            lambda: (a := record()) and a.revision == 2 and a.state == "failed" and a,
            proc,
        )
        assert "not found" in (again.reason or ""), again.reason
        assert proc.alive
    finally:
        proc.stop(10)


def test_a_config_json_linking_out_of_the_models_dir_is_refused(tmp_path: Path) -> None:
    models, outside = tmp_path / "models", tmp_path / "outside"
    (models / "m").mkdir(parents=True)
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (models / "m" / "config.json").symlink_to(outside / "config.json")
    with pytest.raises(ValueError, match="links out of the models directory"):
        resolve_model(models, "m")
    (models / "ok").mkdir()
    (models / "ok" / "config.json").write_text("{}")
    assert resolve_model(models, "ok") == (models / "ok").resolve()
    with pytest.raises(ValueError, match="too long"):
        resolve_model(models, "a" * 256)
