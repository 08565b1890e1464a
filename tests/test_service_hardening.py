"""Issue 15 against a real service: planner hogs, odd numbers, methods, slow bodies, Host
headers, the OpenAPI document, and solves dropped when their client leaves."""

from __future__ import annotations

import copy
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from planner_cases import LLAMA_70B, QWEN3_235B, config, two_nodes
from service_server import ROOT, Server, free_port, running_server

from asymtp.processes import env_without_asymtp

GB = 10**9


def hog() -> dict[str, Any]:
    """The issue's 548-byte request: a billion experts of a tiny hidden size."""
    model = {**config(QWEN3_235B), "num_experts": 10**9, "hidden_size": 64}
    return two_nodes(model)


def with_quant(bits: Any, group_size: Any) -> dict[str, Any]:
    model = {**config(QWEN3_235B), "quantization": {"bits": bits, "group_size": group_size}}
    return two_nodes(model, time_limit_s=3)


HUGE = 10**400  # 401 digits

# (case, body, status, what the answer names)
INPUTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("a billion experts", hog(), 422, "num_experts"),
    ("bits 4.0", with_quant(4.0, 64), 200, "plan_id"),
    ("group_size 64.0", with_quant(4, 64.0), 200, "plan_id"),
    ("bits 4.5", with_quant(4.5, 64), 422, "bits"),
    ("401-digit memory_gb", two_nodes(config(LLAMA_70B), memory_gb=HUGE), 422, "memory_gb"),
    (
        "401-digit memory_bytes",
        {
            **two_nodes(config(LLAMA_70B)),
            "topology": {
                "nodes": [
                    {"id": "a", "memory_bytes": HUGE, "bandwidth_gbps": 800},
                    {"id": "b", "memory_gb": 385, "bandwidth_gbps": 400},
                ],
                "links": [{"a": "a", "b": "b"}],
            },
        },
        422,
        "memory_bytes",
    ),
    (
        "401-digit heads",
        two_nodes({**config(LLAMA_70B), "num_attention_heads": HUGE}),
        422,
        "heads",
    ),
    ("401-digit bandwidth", two_nodes({**config(LLAMA_70B), "hidden_size": HUGE}), 422, "hidden"),
]


@pytest.mark.parametrize(("case", "body", "status", "names"), INPUTS, ids=[c[0] for c in INPUTS])
def test_every_input_of_the_issue_over_http(
    client: httpx.Client, case: str, body: dict[str, Any], status: int, names: str
) -> None:
    spec = {**copy.deepcopy(body), "model_path": "m"}
    for method, path, payload in (("POST", "/plan", body), ("PUT", "/deployments/inputs", spec)):
        r = client.request(method, path, json=payload, timeout=10)
        assert r.status_code == status, (method, r.text[:500])
        assert names in r.text, (method, r.text[:500])
        if status == 422:
            assert all("loc" in d and "msg" in d for d in r.json()["detail"])


def test_planner_hogs_do_not_stop_ordinary_plans(server: Server) -> None:
    """Acceptance 1: the billion-expert request twice, then an ordinary plan."""
    out: dict[int, tuple[float, httpx.Response]] = {}

    def send(i: int, body: dict[str, Any]) -> None:
        started = time.monotonic()
        r = httpx.post(f"{server.url}/plan", json=body, timeout=30)
        out[i] = (time.monotonic() - started, r)

    threads = [threading.Thread(target=send, args=(i, hog())) for i in (0, 1)]
    for t in threads:
        t.start()
    ordinary = two_nodes(config(LLAMA_70B), time_limit_s=2)
    send(2, ordinary)
    for t in threads:
        t.join(30)
    for i in (0, 1):
        seconds, r = out[i]
        assert r.status_code == 422 and "num_experts" in r.text, r.text[:300]
        assert seconds < 1 + 1
    seconds, r = out[2]
    assert r.status_code == 200 and r.json()["feasible"], r.text[:300]
    assert seconds < 2, f"the ordinary plan took {seconds:.2f}s behind two hogs"


def test_metrics_label_only_known_methods(client: httpx.Client) -> None:
    for i in range(30):
        client.request(f"JUNK{i}", "/plan")
    client.request("BREW", "/healthz")
    text = client.get("/metrics").text
    assert "JUNK" not in text and "BREW" not in text
    assert 'method="other"' in text
    methods = set(re.findall(r'method="([^"]+)"', text))
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other"}


def test_token_less_service_answers_loopback_host_names_only(server: Server) -> None:
    for host in ("evil.example", "evil.example:80", "10.0.0.1", "127.0.0.1.evil.example"):
        r = httpx.get(f"{server.url}/healthz", headers={"Host": host})
        assert r.status_code == 421 and "loopback" in r.json()["detail"], host
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "[::1]", "localhost"):
        assert httpx.get(f"{server.url}/healthz", headers={"Host": host}).status_code == 200


def _raw_request(port: int, head: str, body: bytes = b"", wait_s: float = 15) -> tuple[str, float]:
    """Send `head` (and `body`) on a raw socket; (the status line, seconds until it came)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        started = time.monotonic()
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = s.recv(4096).decode("latin-1")
        return answer.split("\r\n", 1)[0], time.monotonic() - started


def test_auth_is_checked_before_the_body_is_read(token_server: Server) -> None:
    head = "PUT /deployments/x HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 50000\n"
    status, seconds = _raw_request(token_server.port, head)  # the body never comes
    assert status.startswith("HTTP/1.1 401") and seconds < 2, (status, seconds)


def test_a_body_that_does_not_arrive_is_408_in_bounded_time(tmp_path: Path) -> None:
    env = {"ASYMTP_BODY_TIMEOUT_S": "1"}
    with running_server(tmp_path / "db", env=env) as s:
        head = "POST /plan HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 5000\n"
        status, seconds = _raw_request(s.port, head, b'{"topology": ')
        assert status.startswith("HTTP/1.1 408") and 0.9 < seconds < 5, (status, seconds)
        assert httpx.get(f"{s.url}/healthz").status_code == 200


def test_openapi_says_what_the_service_enforces(token_server: Server) -> None:
    spec = httpx.get(f"{token_server.url}/openapi.json").json()
    limit = spec["components"]["schemas"]["Constraints"]["properties"]["time_limit_s"]
    assert limit["maximum"] == 30 and "exclusiveMaximum" not in limit
    r = httpx.options(f"{token_server.url}/deployments/x", headers=token_server.auth)
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == {"DELETE", "GET", "PUT"}


@pytest.mark.parametrize("token", [" ", "x", "fifteen-chars!!"])
def test_a_short_token_is_refused_beyond_loopback(tmp_path: Path, token: str) -> None:
    cmd = [sys.executable, "-m", "service", "--host", "0.0.0.0", "--port", str(free_port())]
    cmd += ["--db", str(tmp_path / "x.sqlite")]
    env = env_without_asymtp(ASYMTP_TOKEN=token)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "16 characters" in r.stderr


def test_a_queued_solve_is_dropped_when_its_client_leaves(tmp_path: Path) -> None:
    # One solver thread, every solve 2 s by construction: B queues behind A, and leaves.
    env = {"SLOW_SOLVE_S": "2", "ASYMTP_SOLVER_THREADS": "1"}
    with running_server(tmp_path / "db", entry="tests.slow_solves", env=env) as s:
        first = threading.Thread(
            target=httpx.post,
            args=(f"{s.url}/plan",),
            kwargs={"json": two_nodes(config(LLAMA_70B)), "timeout": 60},
        )
        first.start()
        time.sleep(0.3)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{s.url}/plan", json=two_nodes(config(QWEN3_235B)), timeout=0.5)
        first.join(60)
        assert _gauge(s, "asymtp_plan_solves_pending") == 0


def _gauge(s: Server, name: str) -> float:
    text = httpx.get(f"{s.url}/metrics").text
    match = re.search(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M)
    assert match, text
    return float(match.group(1))
