"""One rank of a deployment, as a process: load the slice, join the group, serve or follow.

    python -m executor.rank_process --assignment A.json --model DIR [--serve-host H]
        the agent's way: a signed assignment (peers, ports, backend, this rank's slices)
    python -m executor.rank_process --plan PLAN.json --rank R --hostfile H.json --model DIR
        [--serve HOST:PORT | --parity IN.json --out DIR]
        by hand, or from the parity check and the speed benchmark (`--parity` jobs)

Rank 0 serves the OpenAI API (or runs a parity job); the other ranks follow it. Events go to
stdout as JSON lines: `progress` (layers done/total), `loaded`, `joining` (attempt),
`ready` (with the URL on rank 0), `failed` (with the reason). Exit 0 after a clean shutdown.
With `--exit-with-stdin` the process ends when its stdin closes, so a rank never outlives the
agent that started it (kill -9 included).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.deployment import Assignment, Peer

BACKENDS = ("ring", "jaccl")
JOIN_TIMEOUT_S = 60.0
EXIT_FAILED = 1
ABORT_GRACE_S = 0.5
LOSS_LINGER_S = 3.0
ABORT_HOOKS: list[Any] = []  # called with the reason before a watchdog ends the process


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


@dataclass
class Role:
    rank: int
    world: int
    backend: str
    hostfile: Path | None
    coordinator: str | None
    peers: list[Peer]
    serve_host: str
    serve_port: int
    plan_id: str = ""
    revision: int = 0


def role_from_assignment(
    a: Assignment, workdir: Path, serve_host: str | None, jaccl_devices: Path | None
) -> Role:
    from executor.group import write_ring_hostfile

    if a.rank is None or a.rank_plan is None:
        raise ValueError(f"node {a.node_id} has no rank in plan {a.plan_id[:12]}")
    me = next(p for p in a.peers if p.rank == a.rank)
    hostfile: Path | None = None
    coordinator = None
    if a.backend == "jaccl":
        if jaccl_devices is None:
            raise ValueError(
                "the plan asks for JACCL (RDMA over Thunderbolt 5): give the agent "
                "--jaccl-devices FILE (the device matrix `mlx.distributed_config --backend jaccl` "
                "writes)"
            )
        hostfile = jaccl_devices
        coordinator = f"{a.peers[0].host}:{a.peers[0].port}"
    elif a.world_size > 1:
        hostfile = write_ring_hostfile(a.peers, workdir / f"ring-{a.plan_id[:12]}-{a.rank}.json")
    return Role(
        a.rank,
        a.world_size,
        a.backend,
        hostfile,
        coordinator,
        list(a.peers),
        serve_host or me.host,
        a.serve_port,
        a.plan_id,
        a.revision,
    )


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
        out: list[int] = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True
        )
        return out

    def decode(self, tokens: Any) -> str:
        # The end-of-sequence token ends the generation; it is never part of the text.
        out: str = self.tokenizer.decode([t for t in tokens if t not in self.lockstep.eos])
        return out

    def generate(self, prompt: list[int], max_tokens: int, temperature: float, top_p: float) -> Any:
        return self.lockstep.generate(prompt, max_tokens, temperature, top_p)

    def ping(self) -> None:
        self.lockstep.ping()


def serve(lockstep: Any, model_dir: Path, model_id: str, role: Role, describe: Any) -> int:
    import uvicorn
    from mlx_lm.utils import load_tokenizer

    from executor.openai_server import create_app

    tokenizer = load_tokenizer(model_dir)
    engine = MlxEngine(lockstep, tokenizer, model_id)
    fatal: list[str] = []

    def on_fatal(reason: str) -> None:
        fatal.append(reason)
        server.should_exit = True

    host, port = role.serve_host, role.serve_port
    status = {"plan_id": role.plan_id, "revision": role.revision, "world_size": role.world}
    app, gen_server = create_app(engine, status=status, on_fatal=on_fatal)
    ABORT_HOOKS.append(gen_server.abort)
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
        emit("failed", reason=describe(fatal[0]))
        return EXIT_FAILED
    if not server.started:
        emit("failed", reason=f"could not serve on {host}:{port} (in use?)")
        gen_server.jobs.put(lockstep.shutdown)
        gen_server.close()
        return EXIT_FAILED
    gen_server.jobs.put(lockstep.shutdown)  # the followers leave with us
    gen_server.close()
    return 0


def _announce(server: Any, url: str) -> None:
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    emit("ready", url=url)


def parity(lockstep: Any, spec_file: Path, out_dir: Path) -> None:
    import mlx.core as mx

    spec = json.loads(spec_file.read_text())
    if "bench" in spec:
        from executor.speed import measure

        b = spec["bench"]
        result = measure(lockstep, b["vocab"], b["prompt_tokens"], b["decode_tokens"], b["repeats"])
        (out_dir / "speed.json").write_text(json.dumps(result))
        lockstep.shutdown()
        return
    logits = {
        f"logits_{i}": lockstep.logits(p) for i, p in enumerate(spec.get("logits_prompts", []))
    }
    if logits:
        mx.save_safetensors(str(out_dir / "logits.safetensors"), logits)
    greedy = spec.get("greedy_prompts", [])
    tokens = lockstep.greedy_batch(greedy, spec["max_tokens"]) if greedy else []
    (out_dir / "tokens.json").write_text(json.dumps(tokens))
    lockstep.shutdown()


def _exit_with_stdin() -> None:
    def watch() -> None:
        try:
            # The raw descriptor: a buffered stdin's lock would trouble interpreter shutdown.
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(EXIT_FAILED)  # the agent is gone: so is this rank

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m executor.rank_process")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--assignment", type=Path, help="a signed assignment (the agent's way)")
    p.add_argument("--plan", type=Path, help="a plan JSON (asymtp plan --json)")
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--hostfile", type=Path)
    p.add_argument("--backend", choices=BACKENDS, default="ring")
    p.add_argument("--serve", metavar="HOST:PORT")
    p.add_argument("--serve-host", help="rank 0's API address (default: this node's address)")
    p.add_argument("--jaccl-devices", type=Path)
    p.add_argument("--workdir", type=Path, default=Path("."))
    p.add_argument("--join-timeout", type=float, default=JOIN_TIMEOUT_S)
    p.add_argument("--exit-with-stdin", action="store_true")
    p.add_argument("--parity", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if (args.assignment is None) == (args.plan is None):
        p.error("give --assignment or --plan")
    return args


def _role(args: argparse.Namespace) -> tuple[Role, Any, str]:
    """(role, rank plan, model id) from an assignment or a plan file."""
    from executor.model_paths import served_name
    from protocol.schema import Plan

    if args.assignment is not None:
        a = Assignment.model_validate_json(args.assignment.read_text())
        role = role_from_assignment(a, args.workdir, args.serve_host, args.jaccl_devices)
        return role, a.rank_plan, served_name(a.model_path)
    plan = Plan.model_validate_json(args.plan.read_text())
    rank_plan = next((r for r in plan.ranks if r.rank == args.rank), None)
    if rank_plan is None:
        raise ValueError(f"plan {plan.plan_id[:12]} has no rank {args.rank}")
    host, _, port = (args.serve or "127.0.0.1:8000").rpartition(":")
    role = Role(
        args.rank,
        len(plan.ranks),
        args.backend,
        args.hostfile,
        None,
        [],
        host,
        int(port),
        plan.plan_id,
    )
    return role, rank_plan, args.model.name


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.exit_with_stdin:
        _exit_with_stdin()

    from executor.group import (
        GroupSpec,
        JoinError,
        LivenessPort,
        Watchdog,
        describe_loss,
        join,
        liveness_port,
        probe_peers,
    )
    from executor.loader import LoadError, eos_token_ids, load_shard
    from executor.lockstep import Lockstep

    try:
        role, rank_plan, model_id = _role(args)
        if role.peers:
            me = next(p for p in role.peers if p.rank == role.rank)
            LivenessPort(me.host, liveness_port(me))
        eos_ids = eos_token_ids(args.model)
        model, _, _ = load_shard(
            args.model, rank_plan, progress=lambda d, t: emit("progress", done=d, total=t)
        )
        emit("loaded")
        group = join(
            GroupSpec(role.rank, role.world, role.backend, role.hostfile, role.coordinator),
            args.join_timeout,
            on_attempt=lambda n: emit("joining", attempt=n),
        )
    except (LoadError, JoinError, ValueError, OSError) as e:
        emit("failed", reason=str(e) or type(e).__name__)
        return EXIT_FAILED

    def describe(message: str) -> str:
        return describe_loss(message, role.peers, role.rank)

    def on_stall(reason: str) -> None:
        reason = reason if reason.startswith("peer") else describe(reason)
        emit("failed", reason=reason)
        for hook in ABORT_HOOKS:
            hook(reason)
        if ABORT_HOOKS:
            time.sleep(ABORT_GRACE_S)  # let open responses carry the error to their clients
        os._exit(EXIT_FAILED)

    def probe() -> str | None:
        return probe_peers(role.peers, role.rank) if role.peers else None

    lockstep = Lockstep(model, group, eos_ids, watchdog=Watchdog(on_stall, probe))
    try:
        if role.rank != 0:
            emit("ready")
            lockstep.follow()
            return 0
        if args.parity:
            emit("ready")
            parity(lockstep, args.parity, args.out or Path("."))
            return 0
        return serve(lockstep, args.model, model_id, role, describe)
    except RuntimeError as e:  # the ring lost a peer mid-step
        emit("failed", reason=describe(str(e)))
        # Stay reachable a moment: peers probing liveness then blame only the rank truly gone.
        time.sleep(LOSS_LINGER_S)
        return EXIT_FAILED


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: MLX's communication threads may still exist, and tearing
    # them down ends in std::terminate ("terminate called without an active exception").
    os._exit(code)
