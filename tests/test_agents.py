"""End to end on loopback: a real planner and three real agent processes serve a sharded
model over an MLX ring; the answers equal the unsharded model's; faults are survived.

The tests share one cluster and run in file order: each one starts from "all ranks ready".
"""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asymtp.demo import unsharded_answer as unsharded
from asymtp.local_cluster import (
    LocalCluster,
    all_ready,
    free_port,
    free_port_block,
    serving_url,
)
from executor.loader import read_json
from executor.tiny_models import build_model
from protocol.connectivity import full_mesh
from protocol.deployment import Deployment

pytestmark = pytest.mark.slow

NAME = "e2e"
NODES = {"big": (0.012, 800.0), "mid": (0.008, 400.0), "small": (0.006, 273.0)}
PROMPT = "the ring of macs"
MAX_TOKENS = 16
READY_TIMEOUT_S = 180.0


def spec(model_dir: Path, bandwidths: dict[str, float] | None = None) -> dict[str, Any]:
    bw = bandwidths or {n: b for n, (_, b) in NODES.items()}
    ids = list(NODES)
    return {
        "topology": {
            "nodes": [
                {"id": n, "memory_gb": m, "bandwidth_gbps": bw[n]} for n, (m, _) in NODES.items()
            ],
            "links": full_mesh(ids, "thunderbolt"),
        },
        "model": read_json(model_dir / "config.json"),
        "constraints": {
            "headroom": 0.1,
            "context_tokens": 256,
            "overhead_bytes": 500_000,
            "sharding": "asymmetric",
            # Tensor parallel over TCP: the executor's lockstep and splits are what is tested.
            "parallelism": "tensor",
            "allow_unused_nodes": False,
        },
        "model_path": model_dir.name,
        "ring_port": free_port_block(len(NODES)),
        "serve_port": free_port(),
    }


def complete(url: str, prompt: str = PROMPT, max_tokens: int = MAX_TOKENS) -> str:
    r = httpx.post(
        f"{url}/v1/completions",
        json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    text: str = r.json()["choices"][0]["text"]
    return text


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # ~9 MB float32: more than the two larger budgets hold after headroom.
    models = tmp_path_factory.mktemp("models")
    return build_model(
        models / "e2e-qwen3",
        "qwen3",
        "none",
        "float32",
        seed=3,
        hidden_size=256,
        num_hidden_layers=4,
        intermediate_size=1024,
        head_dim=32,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[LocalCluster]:
    work = tmp_path_factory.mktemp("cluster")
    with LocalCluster(work, model_dir.parent) as c:
        c.start_planner()
        for node, (memory_gb, _) in NODES.items():
            c.start_agent(node, NAME, memory_gb)
        c.deploy(NAME, spec(model_dir))
        c.wait_for(NAME, all_ready, READY_TIMEOUT_S, what="all ranks ready")
        yield c


@pytest.fixture(scope="module")
def expected(model_dir: Path) -> str:
    return unsharded(model_dir, PROMPT, MAX_TOKENS)


def ready(c: LocalCluster) -> Deployment:
    return c.wait_for(NAME, all_ready, READY_TIMEOUT_S, what="all ranks ready")


def test_completion_equals_the_unsharded_model(cluster: LocalCluster, expected: str) -> None:
    d = ready(cluster)
    assert [r.node_id for r in d.plan.ranks] and len(d.plan.ranks) == 3
    assert len({r.share for r in d.plan.ranks}) == 3, "the split should be uneven"
    assert complete(serving_url(d)) == expected


def test_openai_client_streaming_and_not(cluster: LocalCluster, model_dir: Path) -> None:
    from openai import OpenAI

    d = ready(cluster)
    client = OpenAI(base_url=f"{serving_url(d)}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == [model_dir.name]
    messages: Any = [{"role": "user", "content": PROMPT}]
    whole = client.chat.completions.create(
        model=model_dir.name, messages=messages, max_tokens=MAX_TOKENS, temperature=0
    )
    answer = whole.choices[0].message.content
    assert answer == unsharded(model_dir, PROMPT, MAX_TOKENS, chat=True)
    stream = client.chat.completions.create(
        model=model_dir.name, messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 2 and "".join(pieces) == answer
    text = client.completions.create(
        model=model_dir.name, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0
    )
    assert text.choices[0].text == unsharded(model_dir, PROMPT, MAX_TOKENS)


def test_serving_continues_while_the_planner_is_down(cluster: LocalCluster, expected: str) -> None:
    d = ready(cluster)
    url = serving_url(d)
    cluster.procs["planner"].stop()
    assert complete(url) == expected  # the group does not need the planner to serve
    time.sleep(4)  # heartbeats fail meanwhile; the agents keep their ranks
    assert complete(url) == expected
    cluster.restart("planner")
    seen = time.time()
    after = cluster.wait_for(
        NAME,
        lambda d: all_ready(d) and all(a.seen_at > seen for a in d.agents.values()),
        60,
        what="agents reporting to the restarted planner",
    )
    assert after.plan.plan_id == d.plan.plan_id and after.revision == d.revision
    assert complete(url) == expected


def test_a_new_plan_reloads_every_rank(
    cluster: LocalCluster, model_dir: Path, expected: str
) -> None:
    before = ready(cluster)
    # The small node gets faster memory: the planner moves work to it.
    new = spec(model_dir, {"big": 800.0, "mid": 400.0, "small": 700.0})
    new["ring_port"], new["serve_port"] = free_port_block(len(NODES)), free_port()
    deployed = cluster.deploy(NAME, new)
    assert deployed.plan.plan_id != before.plan.plan_id
    assert [r.ffn for r in deployed.plan.ranks] != [r.ffn for r in before.plan.ranks]
    after = cluster.wait_for(
        NAME,
        lambda d: all_ready(d, deployed.plan.plan_id, deployed.revision),
        READY_TIMEOUT_S,
        what="all ranks ready on the new plan",
    )
    url = serving_url(after)
    health = httpx.get(f"{url}/healthz", timeout=10).json()
    assert health["plan_id"] == deployed.plan.plan_id  # rank 0 runs the new split
    assert complete(url) == expected


def test_killed_agent_is_noticed_and_the_group_recovers(
    cluster: LocalCluster, expected: str
) -> None:
    d = ready(cluster)
    url = serving_url(d)
    victim = d.plan.ranks[-1].node_id
    outcome: dict[str, Any] = {}

    def long_request() -> None:
        try:
            with httpx.stream(
                "POST",
                f"{url}/v1/completions",
                timeout=120,
                # No max_tokens: all the room the plan's context leaves (asking for more is a 400).
                json={"prompt": PROMPT, "temperature": 0, "stream": True},
            ) as r:
                outcome["status"] = r.status_code
                chunks = r.iter_text()
                body = next(chunks, "")
                started.set()
                outcome["body"] = body + "".join(chunks)
        except httpx.HTTPError as e:
            outcome["error"] = repr(e)

    started = threading.Event()
    t = threading.Thread(target=long_request)
    t.start()
    started.wait(30)  # mid-generation: its first tokens are out
    killed_at = time.monotonic()
    cluster.procs[victim].signal(signal.SIGKILL)
    failed = cluster.wait_for(
        NAME,
        lambda d: all("peer" in (d.agents[n].last_failure or "") for n in NODES if n != victim),
        30,
        what="the survivors reporting the lost peer",
    )
    noticed = time.monotonic() - killed_at
    t.join(60)
    assert not t.is_alive(), "the in-flight request must end, not hang"
    assert "error" in outcome or "generation failed" in outcome.get("body", ""), outcome
    reasons = {n: failed.agents[n].last_failure for n in NODES if n != victim}
    print(f"noticed in {noticed:.1f}s: {reasons}")
    assert any(victim in (r or "") for r in reasons.values()), reasons  # "peer N (victim) lost"

    cluster.restart(victim)
    recovered = ready(cluster)
    assert recovered.plan.plan_id == d.plan.plan_id
    assert complete(serving_url(recovered)) == expected


class _TamperingProxy(http.server.ThreadingHTTPServer):
    """Forwards to the planner, altering the world size in every assignment it passes on."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        super().__init__(("127.0.0.1", 0), _TamperHandler)


class _TamperHandler(http.server.BaseHTTPRequestHandler):
    server: _TamperingProxy

    def _forward(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
        }
        r = httpx.request(
            method, self.server.upstream + self.path, content=body, headers=headers, timeout=90
        )
        content = r.content
        if "/assignments/" in self.path and r.status_code == 200:
            a = json.loads(content)
            a["world_size"] += 1
            content = json.dumps(a).encode()
        self.send_response(r.status_code)
        for k, v in r.headers.items():
            if k.lower() not in (
                "content-length",
                "transfer-encoding",
                "connection",
                "content-encoding",
            ):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def log_message(self, *_: Any) -> None:
        pass


def test_an_altered_plan_is_refused(cluster: LocalCluster, model_dir: Path) -> None:
    proxy = _TamperingProxy(cluster.url)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        name = "tampered"
        one = spec(model_dir)
        one["topology"] = {"nodes": [{"id": "lone", "memory_gb": 1.0, "bandwidth_gbps": 400}]}
        one["constraints"]["allow_unused_nodes"] = True
        cluster.deploy(name, one)
        port = proxy.server_address[1]
        agent = cluster.start_agent("lone", name, 1.0)
        agent.cmd[agent.cmd.index("--planner") + 1] = f"http://127.0.0.1:{port}"
        agent.signal(signal.SIGKILL)
        cluster.procs["lone"] = agent = type(agent)(
            agent.name, agent.cmd, agent.log, agent.env
        ).start()
        deadline = time.monotonic() + 60
        reason = ""
        while time.monotonic() < deadline:
            d = cluster.deployment(name)
            a = d.agents.get("lone") if d else None
            if a is not None and a.state == "failed" and "signature" in (a.reason or ""):
                reason = a.reason or ""
                break
            time.sleep(0.25)
        assert "does not match" in reason, agent.tail()
        assert "starting rank" not in agent.tail(200)  # nothing was loaded or run
    finally:
        proxy.shutdown()


def _wait_agent(cluster: LocalCluster, name: str, node: str, pred: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = cluster.deployment(name)
        a = d.agents.get(node) if d else None
        if a is not None and pred(a):
            return a
        time.sleep(0.25)
    raise AssertionError(f"{node} of {name}: not reached; log:\n{cluster.procs[node].tail()}")


def _lone(model_dir: Path, node: str, memory_gb: float, model_path: str) -> dict[str, Any]:
    one = spec(model_dir)
    one["topology"] = {"nodes": [{"id": node, "memory_gb": memory_gb, "bandwidth_gbps": 400}]}
    one["model_path"] = model_path
    return one


def test_corrupt_weights_fail_naming_the_file(cluster: LocalCluster, model_dir: Path) -> None:
    broken = cluster.models_dir / "broken-copy"
    broken.mkdir(exist_ok=True)
    for f in model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])  # cut short
    cluster.deploy("corrupt", _lone(model_dir, "corrupt-node", 1.0, broken.name))
    cluster.start_agent("corrupt-node", "corrupt", 1.0)
    a = _wait_agent(cluster, "corrupt", "corrupt-node", lambda a: a.state == "failed" and a.reason)
    print(a.reason)
    assert "model.safetensors" in a.reason, a.reason


def test_a_plan_bigger_than_free_memory_is_refused_before_loading(
    cluster: LocalCluster, model_dir: Path
) -> None:
    # The topology claims 1 GB; the machine (simulated) has 2 MB free.
    cluster.deploy("too-big", _lone(model_dir, "tiny-node", 1.0, model_dir.name))
    cluster.start_agent("tiny-node", "too-big", 0.002)
    a = _wait_agent(cluster, "too-big", "tiny-node", lambda a: a.state == "failed" and a.reason)
    print(a.reason)
    assert "refused before loading" in a.reason and "MB" in a.reason, a.reason
    assert "starting rank" not in cluster.procs["tiny-node"].tail(200)
