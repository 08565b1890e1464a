"""One rank of a deployment, as a process: load the slice, join the group, serve or follow.

    python -m executor.rank_process --assignment A.json --model DIR [--serve-host H]
        the agent's way: a signed assignment (peers, ports, backend, this rank's slices)
    python -m executor.rank_process --plan PLAN.json --rank R --hostfile H.json --model DIR
        [--serve HOST:PORT | --parity IN.json --out DIR]
        by hand, or from the parity check and the speed benchmark (`--parity` jobs)

Rank 0 serves the OpenAI API through the continuous-batching engine (`executor.engine`), or runs
a parity job; the other ranks follow it. Events go to stdout as JSON lines
(`executor.events`). Exit 0 after a clean shutdown.
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

from executor.events import Failed, Joining, Loaded, Progress, Ready, emit
from executor.lockstep import PREFILL_STEP, STEP_TIMEOUT_S
from executor.scheduler import DEFAULT_MAX_QUEUE
from protocol.deployment import Assignment, Peer

BACKENDS = ("ring", "jaccl")
JOIN_TIMEOUT_S = 60.0
EXIT_FAILED = 1
ABORT_GRACE_S = 0.5
LOSS_LINGER_S = 3.0
ABORT_HOOKS: list[Any] = []  # called with the reason before a watchdog ends the process
API_TOKEN_ENV = "ASYMTP_API_TOKEN"  # how the agent hands the token over (not in `ps`)


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
    context_tokens: int = 8192
    batch_size: int = 1


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
        a.context_tokens,
        a.batch_size,
    )


def serve(lockstep: Any, args: argparse.Namespace, model_id: str, role: Role, describe: Any) -> int:
    import uvicorn
    from mlx_lm.utils import load_tokenizer

    from executor.api import create_app
    from executor.api.bounds import TokenRequired, check_exposure
    from executor.engine import MlxEngine

    token = args.api_token or os.environ.get(API_TOKEN_ENV) or None
    try:
        check_exposure(role.serve_host, token)
    except TokenRequired as e:
        emit(Failed(str(e)))
        lockstep.shutdown()  # the followers leave with us
        return EXIT_FAILED
    fatal: list[str] = []

    def on_fatal(reason: str) -> None:
        fatal.append(reason)
        server.should_exit = True

    engine = MlxEngine(
        lockstep,
        load_tokenizer(args.model),
        model_id,
        role.context_tokens,
        role.batch_size,
        args.max_queue,
        on_fatal=on_fatal,
        prefill_step=args.prefill_step,
    )
    host, port = role.serve_host, role.serve_port
    status = {"plan_id": role.plan_id, "revision": role.revision, "world_size": role.world}
    app, gen_server = create_app(engine, status, on_fatal, api_token=token)
    ABORT_HOOKS.extend([engine.abort, gen_server.abort])
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))

    def drain(*_: Any) -> None:
        # A new plan is coming: refuse new requests, let those in flight finish, then stop.
        gen_server.draining = True

        def stop_when_idle() -> None:
            while gen_server.in_flight or engine.in_flight:
                time.sleep(0.05)
            server.should_exit = True

        threading.Thread(target=stop_when_idle, daemon=True).start()

    signal.signal(signal.SIGTERM, drain)
    threading.Thread(target=lambda: _announce(server, f"http://{host}:{port}"), daemon=True).start()
    server.run()
    gen_server.close()
    engine.close()  # the followers leave with us
    if fatal:
        emit(Failed(describe(fatal[0])))
        return EXIT_FAILED
    if not server.started:
        emit(Failed(f"could not serve on {host}:{port} (in use?)"))
        return EXIT_FAILED
    return 0


def _announce(server: Any, url: str) -> None:
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    emit(Ready(url))


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
    p.add_argument("--api-token", help=f"bearer token for rank 0's API (or ${API_TOKEN_ENV})")
    p.add_argument("--parity", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--context-tokens", type=int, default=8192, help="with --plan")
    p.add_argument("--batch-size", type=int, default=1, help="with --plan")
    p.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE)
    p.add_argument(
        "--prefill-step", type=int, default=PREFILL_STEP, help="prompt tokens per step (rank 0)"
    )
    p.add_argument(
        "--heartbeats",
        action="store_true",
        help="with --plan and a ring hostfile: answer and ask heartbeats on each rank's ring "
        "port + LIVENESS_OFFSET (an assignment always does)",
    )
    p.add_argument(
        "--step-timeout", type=float, default=STEP_TIMEOUT_S, help="bound of a wait, no work"
    )
    p.add_argument(
        "--delay-per-token",
        type=float,
        default=0.0,
        help="testing: this rank sleeps as long per token of each forward pass (a slow machine "
        "by construction)",
    )
    args = p.parse_args(argv)
    if (args.assignment is None) == (args.plan is None):
        p.error("give --assignment or --plan")
    if args.heartbeats and (args.backend != "ring" or args.hostfile is None):
        p.error("--heartbeats needs a ring hostfile")
    return args


def _role(args: argparse.Namespace) -> tuple[Role, Any, str, Any]:
    """(role, rank plan, model id, stage links or None) from an assignment or a plan file."""
    from executor.model_paths import served_name
    from executor.stage_links import links_for
    from executor.stages import StageLayout
    from protocol.plan import Plan

    if args.assignment is not None:
        a = Assignment.model_validate_json(args.assignment.read_text())
        role = role_from_assignment(a, args.workdir, args.serve_host, args.jaccl_devices)
        links = links_for(StageLayout.of_peers(a.peers), role.rank)
        return role, a.rank_plan, served_name(a.model_path), links
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
        _hostfile_peers(args.hostfile) if args.heartbeats else [],
        host,
        int(port),
        plan.plan_id,
        context_tokens=args.context_tokens,
        batch_size=args.batch_size,
    )
    return role, rank_plan, args.model.name, links_for(StageLayout.of_plan(plan), role.rank)


def _hostfile_peers(hostfile: Path) -> list[Peer]:
    """A ring hostfile's ranks as peers, so a group started by hand has heartbeats too."""
    peers = []
    for rank, (address, *_) in enumerate(json.loads(hostfile.read_text())):
        host, _, port = address.rpartition(":")
        peers.append(Peer(rank=rank, node_id=f"rank{rank}", host=host, port=int(port)))
    return peers


@dataclass
class Started:
    role: Role
    lockstep: Any
    model_id: str
    describe: Any


def start(args: argparse.Namespace) -> Started | None:
    """Load this rank's slice, join the group and arm the watchdog (None: failed, said so)."""
    from executor.group import GroupSpec, JoinError, LivenessPort, Watchdog, describe_loss, join
    from executor.loader import LoadError, eos_token_ids, load_shard
    from executor.lockstep import Lockstep

    try:
        role, rank_plan, model_id, links = _role(args)
        heartbeat = LivenessPort.for_rank(role.peers, role.rank) if role.peers else None
        model: Any
        eos_ids = eos_token_ids(args.model)
        model, _, _ = load_shard(
            args.model, rank_plan, progress=lambda d, t: emit(Progress(d, t)), links=links
        )
        if args.delay_per_token > 0:
            model = SlowModel(model, args.delay_per_token)
        emit(Loaded())
        group = join(
            GroupSpec(role.rank, role.world, role.backend, role.hostfile, role.coordinator),
            args.join_timeout,
            on_attempt=lambda n: emit(Joining(n)),
        )
    except (LoadError, JoinError, ValueError, OSError) as e:
        emit(Failed(str(e) or type(e).__name__))
        return None

    def describe(message: str) -> str:
        return describe_loss(message, role.peers, role.rank)

    def on_stall(reason: str) -> None:
        emit(Failed(reason))
        for hook in ABORT_HOOKS:
            hook(reason)
        if ABORT_HOOKS:
            time.sleep(ABORT_GRACE_S)  # let open responses carry the error to their clients
        os._exit(EXIT_FAILED)

    watchdog = Watchdog(on_stall, role.peers, role.rank, describe, heartbeat)
    if links is not None and not _bind_stages(links, group, model, watchdog, args.step_timeout):
        return None
    lockstep = Lockstep(model, group, eos_ids, watchdog, args.step_timeout)
    return Started(role, lockstep, model_id, describe)


def _bind_stages(links: Any, group: Any, model: Any, watchdog: Any, timeout: float) -> bool:
    """A pipeline rank's links join the group, watched: a peer may be lost meanwhile."""
    try:
        with watchdog.armed(timeout, "the pipeline stages' hand-shake"):
            print(links.bind(group, model), file=sys.stderr, flush=True)
    except RuntimeError as e:  # the ring lost a peer
        emit(Failed(str(e)))
        return False
    return True


class SlowModel:
    """Testing: a model whose forward passes take `delay` seconds per token on this rank."""

    def __init__(self, model: Any, delay: float) -> None:
        self.model, self.delay = model, delay

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay * inputs.shape[0] * inputs.shape[1])
        return self.model(inputs, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.exit_with_stdin:
        _exit_with_stdin()
    started = start(args)
    if started is None:
        return EXIT_FAILED
    role, lockstep = started.role, started.lockstep
    try:
        if role.rank != 0:
            emit(Ready())
            lockstep.follow()
            return 0
        if args.parity:
            emit(Ready())
            parity(lockstep, args.parity, args.out or Path("."))
            return 0
        return serve(lockstep, args, started.model_id, role, started.describe)
    except RuntimeError as e:  # the ring lost a peer mid-step
        emit(Failed(started.describe(str(e))))
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
