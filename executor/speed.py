"""Prefill and decode speed of a model, sharded (from rank 0 of a group) or not.

    python -m executor.speed --model DIR [--prompt-tokens 256] [--decode-tokens 64]

prints the unsharded figures as JSON; a group measures the same way through the parity job
(`{"bench": {...}}`, see `executor.rank_process`). Prefill speed is prompt tokens over the time
to the first token; decode speed is the tokens after the first over the time they took. The
best of `repeats` runs counts (the machine may be busy), after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_PROMPT_TOKENS = 256
DEFAULT_DECODE_TOKENS = 64
DEFAULT_REPEATS = 3


def measure(
    lockstep: Any, vocab: int, prompt_tokens: int, decode_tokens: int, repeats: int
) -> dict[str, float]:
    import random

    rng = random.Random(0)
    prompt = [rng.randrange(3, vocab) for _ in range(prompt_tokens)]
    eos, lockstep.eos = lockstep.eos, set()  # always the full length
    best_prefill, best_decode = 0.0, 0.0
    try:
        for run in range(repeats + 1):
            started = time.perf_counter()
            first = None
            count = 0
            for _ in lockstep.generate(prompt, decode_tokens + 1):
                count += 1
                if first is None:
                    first = time.perf_counter()
            end = time.perf_counter()
            assert first is not None
            if run == 0:
                continue  # warm-up: kernels, caches, the ring's first buffers
            best_prefill = max(best_prefill, prompt_tokens / (first - started))
            best_decode = max(best_decode, (count - 1) / (end - first))
    finally:
        lockstep.eos = eos
    return {"prefill_tok_s": round(best_prefill, 2), "decode_tok_s": round(best_decode, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m executor.speed")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--prompt-tokens", type=int, default=DEFAULT_PROMPT_TOKENS)
    p.add_argument("--decode-tokens", type=int, default=DEFAULT_DECODE_TOKENS)
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    args = p.parse_args(argv)

    from executor.loader import load_shard
    from executor.lockstep import Lockstep

    model, _, spec = load_shard(args.model)
    result = measure(
        Lockstep(model, None, []), spec.vocab, args.prompt_tokens, args.decode_tokens, args.repeats
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
