"""One rank of a deployment, as a process: load the slice, join the group, serve or follow.

    python -m executor.rank_process --model DIR --plan PLAN.json --rank R --hostfile H.json
        [--serve HOST:PORT]            rank 0 serves the OpenAI API, the others follow it
        [--parity IN.json --out DIR]   rank 0 computes logits and greedy tokens for IN.json

Events go to stdout as JSON lines for the agent: `progress` (layers done/total), `loaded`,
`ready` (with the URL on rank 0), `failed` (with the reason). Exit 0 after a clean shutdown.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

BACKENDS = ("ring", "jaccl")


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def init_group(rank: int, world: int, hostfile: Path | None, backend: str) -> Any:
    import mlx.core as mx

    if world == 1:
        return None
    if hostfile is None:
        raise ValueError("a group of more than one rank needs --hostfile")
    os.environ["MLX_RANK"] = str(rank)
    if backend == "jaccl":
        # JACCL (RDMA over Thunderbolt 5, macOS 26.2+) reads its device matrix from this file.
        os.environ["MLX_IBV_DEVICES"] = str(hostfile)
    else:
        os.environ["MLX_HOSTFILE"] = str(hostfile)
    group = mx.distributed.init(strict=True, backend=backend)
    if group.size() != world or group.rank() != rank:
        raise RuntimeError(f"joined as rank {group.rank()} of {group.size()}, expected {rank} of {world}")
    return group


class MlxEngine:
    """The `Engine` the OpenAI server drives: a tokenizer plus the lockstep group."""

    def __init__(self, lockstep: Any, tokenizer: Any, model_id: str) -> None:
        self.lockstep = lockstep
        self.tokenizer = tokenizer
        self.model_id = model_id

    def encode(self, text: str) -> list[int]:
        out: list[int] = self.tokenizer.encode(text)
        return out

    def chat_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model has no chat template; use /v1/completions")
        out: list[int] = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return out

    def decode(self, tokens: Any) -> str:
        out: str = self.tokenizer.decode(list(tokens))
        return out

    def generate(self, prompt: list[int], max_tokens: int, temperature: float, top_p: float) -> Any:
        return self.lockstep.generate(prompt, max_tokens, temperature, top_p)


def serve(lockstep: Any, model_dir: Path, host: str, port: int) -> int:
    import uvicorn
    from mlx_lm.utils import load_tokenizer

    from executor.openai_server import create_app

    tokenizer = load_tokenizer(model_dir)
    engine = MlxEngine(lockstep, tokenizer, model_dir.name)
    fatal: list[str] = []

    def on_fatal(reason: str) -> None:
        fatal.append(reason)
        server.should_exit = True

    app, gen_server = create_app(engine, on_fatal=on_fatal)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))

    def drain(*_: Any) -> None:
        # A new plan is coming: refuse new requests, let the one in flight finish, then stop.
        gen_server.draining = True

        def stop_when_idle() -> None:
            while gen_server.in_flight:
                time.sleep(0.05)
            server.should_exit = True

        threading.Thread(target=stop_when_idle, daemon=True).start()

    signal.signal(signal.SIGTERM, drain)
    threading.Thread(target=lambda: _announce(server, f"http://{host}:{port}"), daemon=True).start()
    server.run()
    if fatal:
        emit("failed", reason=_peer_reason(fatal[0]))
        return 1
    gen_server.jobs.put(lockstep.shutdown)
    gen_server.close()
    return 0


def _announce(server: Any, url: str) -> None:
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    emit("ready", url=url)


def _peer_reason(message: str) -> str:
    if "peer" in message or "connection" in message:
        return f"peer lost: {message}"
    return message


def parity(lockstep: Any, spec_file: Path, out_dir: Path) -> None:
    import mlx.core as mx

    spec = json.loads(spec_file.read_text())
    logits = {f"logits_{i}": lockstep.logits(p) for i, p in enumerate(spec.get("logits_prompts", []))}
    if logits:
        mx.save_safetensors(str(out_dir / "logits.safetensors"), logits)
    greedy = spec.get("greedy_prompts", [])
    tokens = lockstep.greedy_batch(greedy, spec["max_tokens"]) if greedy else []
    (out_dir / "tokens.json").write_text(json.dumps(tokens))
    lockstep.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m executor.rank_process")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--plan", type=Path, required=True, help="a plan JSON (asymtp plan --json)")
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--hostfile", type=Path)
    p.add_argument("--backend", choices=BACKENDS, default="ring")
    p.add_argument("--serve", metavar="HOST:PORT")
    p.add_argument("--parity", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    from executor.loader import LoadError, load_shard
    from executor.lockstep import Lockstep
    from planner.schema import Plan

    try:
        plan = Plan.model_validate_json(args.plan.read_text())
        rank_plan = next(r for r in plan.ranks if r.rank == args.rank)
        model, config, _ = load_shard(
            args.model, rank_plan, progress=lambda d, t: emit("progress", done=d, total=t)
        )
        emit("loaded")
        group = init_group(args.rank, len(plan.ranks), args.hostfile, args.backend)
    except (LoadError, ValueError, OSError, StopIteration) as e:
        emit("failed", reason=str(e) or type(e).__name__)
        return 1
    eos = config.get("eos_token_id")
    lockstep = Lockstep(model, group, eos if isinstance(eos, list) else [eos] if eos is not None else [])
    try:
        if args.rank != 0:
            emit("ready")
            lockstep.follow()
            return 0
        if args.parity:
            emit("ready")
            parity(lockstep, args.parity, args.out or Path("."))
            return 0
        host, _, port = (args.serve or "127.0.0.1:8000").rpartition(":")
        return serve(lockstep, args.model, host, int(port))
    except RuntimeError as e:  # the ring lost a peer mid-step
        emit("failed", reason=_peer_reason(str(e)))
        return 1


if __name__ == "__main__":
    sys.exit(main())
