"""`make run`: the whole product on one machine, end to end.

Builds a small model (nothing is downloaded), starts the planner and three agents with uneven
simulated memory (48/32/16 "GB" scaled down to MB), builds the topology from what the agents
report, deploys, shows loading progress, asks rank 0's OpenAI endpoint for a chat completion,
checks it against the unsharded model, and shuts everything down.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from asymtp.local_cluster import LocalCluster, all_ready, free_port, free_port_block, serving_url
from protocol.deployment import Deployment

DEPLOYMENT = "demo"
MODEL_NAME = "demo-qwen3"
# (node id, simulated memory in GB, memory bandwidth GB/s): 48/32/16 "GB" scaled to MB.
NODES = [("studio", 0.048, 800.0), ("macbook", 0.032, 400.0), ("mini", 0.016, 273.0)]
# ~71 MB in float32: too big for any two of the nodes, so the plan needs all three.
MODEL_SHAPE: dict[str, Any] = {
    "hidden_size": 384,
    "num_hidden_layers": 8,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "head_dim": 32,
    "intermediate_size": 1536,
}
CONSTRAINTS = {
    "headroom": 0.1,
    "context_tokens": 512,
    "overhead_bytes": 1_000_000,
    "sharding": "auto",
}
PROMPT = "How does a tensor split across three Macs?"
MAX_TOKENS = 24


def say(msg: str) -> None:
    print(msg, flush=True)


def build_demo_model(models_dir: Path) -> Path:
    from executor.tiny_models import build_model

    target = models_dir / MODEL_NAME
    if (target / "config.json").exists():
        return target
    return build_model(target, "qwen3", "none", "float32", seed=7, **MODEL_SHAPE)


def progress_printer() -> Any:
    last: dict[str, str] = {}

    def show(d: Deployment) -> None:
        for node in sorted(d.agents):
            a = d.agents[node]
            line: str = a.state
            if a.state == "loading" and a.progress is not None:
                filled = round(a.progress * 20)
                line = f"loading [{'#' * filled}{'.' * (20 - filled)}] {a.progress * 100:3.0f}%"
            elif a.reason:
                line = f"{a.state}: {a.reason}"
            if last.get(node) != line:
                last[node] = line
                say(f"  {node:<8} {line}")

    return show


def unsharded_answer(model_dir: Path, prompt: str, max_tokens: int, chat: bool = False) -> str:
    """The unsharded model's greedy continuation, with mlx-lm's own loader and decoding loop
    (not ours), detokenized as the OpenAI endpoint does."""
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    model, tokenizer = load(str(model_dir))[:2]
    messages = [{"role": "user", "content": prompt}]
    ids = (
        tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        if chat
        else tokenizer.encode(prompt)
    )
    import mlx.core as mx

    out: list[int] = []
    for token, _ in generate_step(mx.array(ids), model, max_tokens=max_tokens):
        if token in tokenizer.eos_token_ids:
            break
        out.append(int(token))
    text: str = tokenizer.decode(out)
    return text


def run(workdir: Path) -> int:
    from planner.table import render

    started = time.monotonic()
    models_dir = workdir / "models"
    say(f"1/6 building a small qwen3 model under {models_dir} (random weights, own tokenizer)")
    model_dir = build_demo_model(models_dir)
    size_mb = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 1e6
    say(f"    {model_dir.name}: {size_mb:.1f} MB of float32 weights")

    with LocalCluster(workdir, models_dir) as cluster:
        say(f"2/6 starting the planner on {cluster.url} and 3 agents (48/32/16 MB budgets)")
        cluster.start_planner()
        for node, memory_gb, _ in NODES:
            cluster.start_agent(node, DEPLOYMENT, memory_gb)
        topology = wait_for_topology(cluster)

        say("3/6 deploying: the planner splits the model in proportion to memory and bandwidth")
        ring_port = free_port_block(len(NODES))
        spec = {
            "topology": topology,
            "model": _read_json(model_dir / "config.json"),
            "constraints": CONSTRAINTS,
            "model_path": MODEL_NAME,
            "ring_port": ring_port,
            "serve_port": free_port(),
        }
        deployed = cluster.deploy(DEPLOYMENT, spec)
        say(render(deployed.plan))

        say("4/6 agents loading their slices and forming the ring")
        ready = cluster.wait_for(
            DEPLOYMENT, all_ready, timeout=240, on_change=progress_printer(), what="all ranks ready"
        )
        url = serving_url(ready)

        say(f"5/6 chat request to rank 0's OpenAI endpoint {url}/v1/chat/completions")
        messages = [{"role": "user", "content": PROMPT}]
        body = {
            "model": MODEL_NAME,
            "messages": messages,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
        }
        t0 = time.monotonic()
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        r.raise_for_status()
        reply = r.json()
        answer = reply["choices"][0]["message"]["content"]
        took = time.monotonic() - t0
        tokens = reply["usage"]["completion_tokens"]
        say(f"    user:      {PROMPT}")
        say(f"    assistant: {answer!r}")
        say(
            f"    ({tokens} tokens in {took:.2f}s; a random model talks nonsense, but the same "
            "nonsense as unsharded:)"
        )
        expected = unsharded_answer(model_dir, PROMPT, MAX_TOKENS, chat=True)
        same = expected == answer
        say(f"    unsharded: {expected!r} -> {'identical' if same else 'DIFFERENT'}")

        say("6/6 shutting down: deployment deleted, agents and planner stopped")
        with cluster.http() as h:
            h.delete(f"/deployments/{DEPLOYMENT}")
    say(f"done in {time.monotonic() - started:.0f}s; logs in {workdir / 'logs'}")
    return 0 if same else 1


def wait_for_topology(cluster: LocalCluster, timeout: float = 90.0) -> dict[str, Any]:
    """The topology drafted from the agents' reports, once all of them have measured their
    memory bandwidth and every loopback link between them; printed as a table."""
    started = time.monotonic()
    deadline = started + timeout
    want = len(NODES) + len(NODES) * (len(NODES) - 1) // 2  # every node and every pair
    notes: list[str] = []
    while time.monotonic() < deadline:
        body = cluster.topology(DEPLOYMENT)
        topology: dict[str, Any] = body.get("topology", body)
        notes = body.get("notes", [])
        parts = topology.get("nodes", []) + topology.get("links", [])
        if len([x for x in parts if x.get("source") == "measured"]) == want:
            for line in measured_table(topology, notes):
                say(line)
            say(f"      all measured {time.monotonic() - started:.1f}s after the agents started")
            return topology
        time.sleep(0.25)
    raise TimeoutError(
        f"the agents did not all report their measurements within {timeout:g}s; the draft's "
        f"notes: {'; '.join(notes) or 'none (no reports)'}"
    )


def measured_table(topology: dict[str, Any], notes: list[str]) -> list[str]:
    lines = ["    topology measured by the agents (loopback links stand in for the cables):"]
    for n in topology["nodes"]:
        lines.append(
            f"      node {n['id']:<8} {n['memory_bytes'] / 1e6:5.0f} MB   memory "
            f"{n['bandwidth_gbps']:7.2f} GB/s {n.get('source', 'user')}"
        )
    for x in topology["links"]:
        lines.append(
            f"      link {x['a'] + '-' + x['b']:<16} {x['kind']:<9} "
            f"{x.get('latency_us', 0):7.1f} µs one way {x.get('bandwidth_gbps', 0):7.2f} Gb/s "
            f"{x.get('source', 'assumed')}"
        )
    lines += [f"      {n}" for n in notes if ": measured at " in n]
    return lines


def _read_json(path: Path) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(path.read_text())
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asymtp.demo", description=__doc__)
    p.add_argument("--workdir", type=Path, default=Path("run"))
    p.add_argument("--fresh", action="store_true", help="delete the workdir first")
    args = p.parse_args(argv)
    if args.fresh and args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "logs").mkdir(exist_ok=True)
    for old in (args.workdir / "logs").glob("*.log"):
        old.unlink()
    (args.workdir / "planner.sqlite").unlink(missing_ok=True)
    try:
        return run(args.workdir.resolve())
    except (TimeoutError, RuntimeError, httpx.HTTPError) as e:
        print(f"asymtp demo failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
