"""Rank 0 of a real loopback group, driven by a test: the real engine (`MlxEngine`, its
scheduler and the lockstep group) runs one scenario and writes what it saw as JSON.

    python tests/engine_driver.py SCENARIO OUT.json -- <executor.rank_process arguments>

The other ranks are ordinary `executor.rank_process` followers.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor import rank_process
from executor.engine import MlxEngine
from executor.engine_api import Done, EngineBusy, Generation, Sampling, TokenEvent

TOKENS = 6


def collect(handle: Any) -> dict[str, Any]:
    tokens, logprobs, done = [], [], None
    for event in handle:
        if isinstance(event, TokenEvent):
            tokens.append(event.token)
            logprobs.append([event.logprob, event.top_logprobs])
        else:
            done = event
    assert isinstance(done, Done)
    return {
        "tokens": tokens,
        "logprobs": logprobs,
        "finish": done.finish.value,
        "cached": done.cached_tokens,
    }


def run(engine: MlxEngine, prompt: list[int], **sampling: Any) -> dict[str, Any]:
    max_tokens = sampling.pop("max_tokens", TOKENS)
    return collect(engine.submit(Generation(prompt, Sampling(max_tokens, **sampling))))


def prompts(vocab: int) -> list[list[int]]:
    rng = random.Random(5)
    return [[rng.randrange(3, vocab) for _ in range(n)] for n in (3, 30, 7, 19, 1, 12, 25, 5)]


def batching(engine: MlxEngine, vocab: int) -> dict[str, Any]:
    ps = prompts(vocab)
    out: dict[str, Any] = {"prompts": ps}
    follow_up = [*ps[1], 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    out["follow_up_cold"] = run(engine, follow_up)  # the prefix cache is empty yet
    out["alone"] = [run(engine, p) for p in ps]
    handles = [engine.submit(Generation(p, Sampling(TOKENS))) for p in ps]
    out["together"] = [collect(h) for h in handles]
    first = [engine.submit(Generation(p, Sampling(2 * TOKENS))) for p in ps[:4]]
    events = iter(first[0])
    early = [next(events) for _ in range(3)]  # the batch is decoding...
    late = iter(engine.submit(Generation(ps[4], Sampling(TOKENS))))  # ...when this one joins
    late_first = next(late)
    out["running_when_late_began"] = len(engine.scheduler.running)
    out["late"] = collect(iter([late_first, *late]))
    rest = collect(iter([*early, *events]))
    out["early"] = [rest, *[collect(h) for h in first[1:]]]
    out["follow_up_warm"] = run(engine, follow_up)
    out["stats"] = engine.stats()
    return out


def cancellation(engine: MlxEngine) -> dict[str, Any]:
    s = engine.scheduler
    handle = engine.submit(Generation([5, 6, 7], Sampling(500)))
    other = engine.submit(Generation([8, 9], Sampling(40)))
    events = iter(handle)
    for _ in range(3):
        next(events)
    seq = next(i for i, live in s.running.items() if live.handle is handle)
    steps_at_cancel = s.steps
    handle.cancel()
    while seq in s.lockstep.batch.ids:
        time.sleep(0.001)
    steps_at_drop = s.steps
    ending = [e for e in events if isinstance(e, Done)]
    return {
        "steps_between": steps_at_drop - steps_at_cancel,
        "finish": ending[0].finish.value,
        "other": collect(other),
        "other_alone": run(engine, [8, 9], max_tokens=40),
    }


def busy(engine: MlxEngine) -> dict[str, Any]:
    """Fill the plan's KV budget (each sequence reserves the whole context), then the queue:
    the next submission is refused."""
    held: list[Any] = []
    for _ in range(engine.scheduler.budget // engine.context_tokens):
        held.append(engine.submit(Generation([3, 4], Sampling(10_000))))
        next(iter(held[-1]))  # running
    refused = None
    try:
        for _ in range(engine.scheduler.max_queue + 1):
            held.append(engine.submit(Generation([3, 4], Sampling(10_000))))
    except EngineBusy as e:
        refused = e.retry_after_s
    running, waiting = len(engine.scheduler.running), len(engine.scheduler.waiting)
    for h in held:
        h.cancel()
    finishes = [collect(h)["finish"] for h in held]
    return {"held": len(held), "refused": refused, "running": running, "waiting": waiting,
            "finishes": finishes}  # fmt: skip


def sampling(engine: MlxEngine) -> dict[str, Any]:
    p = [4, 5, 6, 7]
    handles = [
        engine.submit(Generation(p, Sampling(12, temperature=1.0, seed=42))),
        engine.submit(Generation(p, Sampling(12, temperature=1.0, seed=42))),
        engine.submit(Generation(p, Sampling(12, temperature=1.0))),
        engine.submit(Generation(p, Sampling(12, temperature=1.0))),
        engine.submit(Generation(p, Sampling(3, top_logprobs=3))),
        engine.submit(Generation(p, Sampling(12, frequency_penalty=1.5, presence_penalty=1.0))),
    ]
    seeded_a, seeded_b, fresh_a, fresh_b, logprobs, penalised = [collect(h) for h in handles]
    seeded, fresh = [seeded_a, seeded_b], [fresh_a, fresh_b]
    return {"seeded": seeded, "fresh": fresh, "logprobs": logprobs, "penalised": penalised}


def slow(engine: MlxEngine) -> dict[str, Any]:
    started = time.monotonic()
    result = run(engine, list(range(3, 43)), max_tokens=2)
    return {"seconds": time.monotonic() - started, **result}


def main() -> int:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    args = rank_process._parse(sys.argv[sys.argv.index("--") + 1 :])
    started = rank_process.start(args)
    if started is None:
        return 1
    from mlx_lm.utils import load_tokenizer

    role = started.role
    engine = MlxEngine(
        started.lockstep, load_tokenizer(args.model), started.model_id,
        role.context_tokens, role.batch_size, args.max_queue, prefill_step=args.prefill_step,
    )  # fmt: skip
    rank_process.ABORT_HOOKS.append(engine.abort)
    vocab = int(json.loads((args.model / "config.json").read_text())["vocab_size"])
    results = {
        "batching": lambda: {
            **batching(engine, vocab),
            "cancellation": cancellation(engine),
            "sampling": sampling(engine),
            "busy": busy(engine),
        },
        "slow": lambda: slow(engine),
    }[scenario]()
    out.write_text(json.dumps(results))
    print(json.dumps({"event": "done"}), flush=True)
    if scenario == "slow":
        # A prefill whose bound is minutes long: the test stops the peer during it.
        handle = engine.submit(Generation(list(range(3, 203)), Sampling(1)))
        print(json.dumps({"event": "prefilling"}), flush=True)
        for _ in handle:
            pass
        return 1
    engine.close()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
