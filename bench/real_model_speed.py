"""Section "realmodel": decode speed of the real model (SmolLM2-135M-Instruct as imported from
the shipped GGUF: Q4_1 layers, a Q8_0 embedding), in one run:

* mlx-lm's own single-process `generate_step` (the reference every number is compared to);
* asymtp unsharded: the same directory through asymtp's loader and lockstep loop, one process
  (its 1-rank path: no group, no collectives);
* asymtp over 2 local ranks, as even a split as whole heads allow (9 query / 3 KV heads: no
  exactly even one exists) and an uneven 70/30 one.

Each process is pinned to a core (`taskset`: the single-process runs to core 0, rank r to core
r). Figures are the best of the repeats after one warm-up; decode speed counts the tokens after
the first over the time they took. On this 2-core Linux CPU machine the ring's collectives
cost more than a 135M model's compute, so the 2-rank rows show that cost, not a speed-up.

Run alone: `python -m bench.real_model_speed [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import RESULTS_DIR, Section, write_section
from bench.executor_speed import _group, _pinned, _unsharded, pinned_json

TARGET_ONE_RANK = 0.95
"""asymtp's 1-rank decode ≥ 0.95 × mlx-lm's."""
MLX_LM, ONE_RANK = "mlx-lm generate_step (1 process)", "asymtp unsharded (1 process)"
EVEN, UNEVEN = "asymtp 2 ranks, even", "asymtp 2 ranks, uneven 70/30"


def mlx_lm_decode(model_dir: Path, job: dict[str, int]) -> dict[str, float]:
    """mlx-lm's own loop on a random prompt, measured like `executor.speed.measure`."""
    import random

    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    model = load(str(model_dir))[0]
    rng = random.Random(0)
    prompt = mx.array([rng.randrange(3, job["vocab"]) for _ in range(job["prompt_tokens"])])
    best = 0.0
    for run in range(job["repeats"] + 1):
        first = end = 0.0
        count = 0
        for _ in generate_step(prompt, model, max_tokens=job["decode_tokens"] + 1):
            count += 1
            end = time.perf_counter()
            first = first or end
        if run:  # the first run warms kernels and caches up
            best = max(best, (count - 1) / (end - first))
    return {"decode_tok_s": round(best, 2)}


def _mlx_lm_pinned(model_dir: Path, job: dict[str, int]) -> dict[str, float]:
    return pinned_json(
        "bench.real_model_speed", "--mlx-lm-only", str(model_dir), "--job", json.dumps(job)
    )


def _show(label: str, f: dict[str, float]) -> None:
    print(f"  realmodel: {label:<34} decode {f['decode_tok_s']:7.1f} tok/s", flush=True)


def run(results_dir: Path, quick: bool = False) -> Section:
    from executor.loader import read_json
    from executor.shipped_model import Variant, imported
    from planner.splits import plan_for_split

    job = {
        "prompt_tokens": 32 if quick else 128,
        "decode_tokens": 16 if quick else 64,
        "repeats": 1 if quick else 3,
    }
    figures: dict[str, dict[str, float]] = {}
    shares: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="asymtp-bench-real-") as tmp:
        work = Path(tmp)
        model_dir = imported(work, Variant.PACKED, say=lambda _m: None)
        config = read_json(model_dir / "config.json")
        job_v = {**job, "vocab": int(config["vocab_size"])}
        figures[MLX_LM] = _mlx_lm_pinned(model_dir, job_v)
        _show(MLX_LM, figures[MLX_LM])
        figures[ONE_RANK] = _unsharded(model_dir, job)
        _show(ONE_RANK, figures[ONE_RANK])
        for label, fractions in ((EVEN, [0.5, 0.5]), (UNEVEN, [0.7, 0.3])):
            plan = plan_for_split(config, fractions)
            sub = work / label.replace(" ", "_").replace("/", "-").replace(",", "")
            sub.mkdir()
            figures[label] = _group(model_dir, plan, job_v, sub, _pinned(1))
            _show(label, figures[label])
            shares[label] = [round(r.share, 3) for r in plan.ranks]
    ref = figures[MLX_LM]["decode_tok_s"]
    rows: list[list[Any]] = []
    for label, f in figures.items():
        split = "/".join(f"{x * 100:.0f}" for x in shares.get(label, [1.0]))
        rows.append([label, split, f["decode_tok_s"], round(f["decode_tok_s"] / ref, 3)])
    ratio = figures[ONE_RANK]["decode_tok_s"] / ref
    result: Section = {
        "section": "realmodel",
        "title": "Real model: decode speed of SmolLM2-135M (Q4_1/Q8_0), asymtp vs mlx-lm",
        "headline": [
            {
                "metric": "decode, asymtp unsharded ÷ mlx-lm generate_step",
                "value": round(ratio, 3),
                "unit": f"× (target ≥ {TARGET_ONE_RANK})",
            }
        ],
        "tables": [
            {
                "title": f"{job['prompt_tokens']}-token prompt, {job['decode_tokens']} decoded "
                f"tokens (tokens/s, best of {job['repeats']})",
                "columns": ["run", "weight shares %", "decode tok/s", "÷ mlx-lm"],
                "rows": rows,
            }
        ],
        "figures": [],
        "notes": [__doc__.split("\n\n", 1)[1].split("Run alone")[0].strip()],
        "data": {"job": job, "measured": figures, "shares": shares},
    }
    write_section(results_dir, result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.real_model_speed")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--mlx-lm-only", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mlx_lm_only:
        print(json.dumps(mlx_lm_decode(args.mlx_lm_only, json.loads(args.job))))
        return 0
    run(RESULTS_DIR, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
