"""Section "executor": prefill and decode speed of one small model, sharded and not.

One run measures, on the same model: the unsharded model in one process; today's equal split
over 2 ranks; the planner's asymmetric split for a 70/30 pair. Each rank is pinned to its own
core (`taskset`), and two settings are measured:

* an uneven pair: rank 1's core also runs a busy loop, so that node works at about half the
  speed of rank 0's, as a slower Mac would; this is the cluster asymmetric splits are for;
* an even pair: both cores free; here an uneven split cannot win and shows its cost.

The unsharded model runs on rank 0's core. Figures are the best of 3 runs after a warm-up
(`executor.speed`); prefill is prompt tokens over the time to the first token.

Run alone: `python -m bench.executor_speed [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import RESULTS_DIR, Section, write_section

MODEL_SHAPE: dict[str, Any] = {
    "hidden_size": 512,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "intermediate_size": 2048,
}
TARGET = 0.9  # asymmetric >= 0.9 x equal


def _pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") else []


def _unsharded(model_dir: Path, job: dict[str, int]) -> dict[str, float]:
    out = subprocess.run(
        [
            *_pinned(0),
            sys.executable,
            "-m",
            "executor.speed",
            "--model",
            str(model_dir),
            "--prompt-tokens",
            str(job["prompt_tokens"]),
            "--decode-tokens",
            str(job["decode_tokens"]),
            "--repeats",
            str(job["repeats"]),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _group(model_dir: Path, plan: Any, job: dict[str, int], work: Path) -> dict[str, float]:
    from executor.parity import run_group

    out = run_group(model_dir, plan, {"bench": job}, work, prefixes=[_pinned(0), _pinned(1)])
    result: dict[str, float] = json.loads((out / "speed.json").read_text())
    return result


class _BusyCore:
    """A busy loop on one core: the node sharing it runs at about half speed."""

    def __init__(self, core: int) -> None:
        self.proc = subprocess.Popen([*_pinned(core), sys.executable, "-c", "while True: pass"])

    def __enter__(self) -> _BusyCore:
        return self

    def __exit__(self, *_: Any) -> None:
        self.proc.kill()
        self.proc.wait()


def run(results_dir: Path, quick: bool = False) -> Section:
    from executor.loader import read_json
    from executor.parity import plan_for_split
    from executor.tiny_models import build_model

    job = {
        "prompt_tokens": 128 if quick else 256,
        "decode_tokens": 32 if quick else 64,
        "repeats": 2 if quick else 3,
    }
    notes = [__doc__.split("\n\n", 1)[1].split("Run alone")[0].strip()]
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        notes.append(
            "Fewer than 2 cores or no `taskset`: ranks were not pinned, figures are "
            "not comparable with the pinned runs."
        )
    with tempfile.TemporaryDirectory(prefix="asymtp-bench-") as tmp:
        work = Path(tmp)
        model_dir = build_model(work / "model", "llama", "none", "float32", seed=1, **MODEL_SHAPE)
        config = read_json(model_dir / "config.json")
        vocab = int(config["vocab_size"])
        job_v = {**job, "vocab": vocab}
        equal = plan_for_split(config, [0.5, 0.5], sharding="equal")
        asym = plan_for_split(config, [0.7, 0.3])
        size_mb = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 1e6
        print(
            f"  executor: {size_mb:.0f} MB llama, splits equal "
            f"{[round(r.share * 100) for r in equal.ranks]}% and asymmetric "
            f"{[round(r.share * 100) for r in asym.ranks]}%",
            flush=True,
        )

        rows: list[list[Any]] = []
        measured: dict[str, dict[str, dict[str, float]]] = {}
        for setting, busy in (("uneven pair", True), ("even pair", False)):
            figures: dict[str, dict[str, float]] = {}
            ctx = _BusyCore(1) if busy else None
            try:
                figures["unsharded (1 process)"] = _unsharded(model_dir, job)
                for label, plan in (("equal 2-rank", equal), ("asymmetric 2-rank 70/30", asym)):
                    sub = work / f"{setting}-{label}".replace(" ", "_").replace("/", "-")
                    sub.mkdir()
                    figures[label] = _group(model_dir, plan, job_v, sub)
            finally:
                if ctx is not None:
                    ctx.__exit__()
            measured[setting] = figures
            eq = figures["equal 2-rank"]
            for label, f in figures.items():
                rows.append(
                    [
                        setting,
                        label,
                        f["prefill_tok_s"],
                        f["decode_tok_s"],
                        round(f["decode_tok_s"] / eq["decode_tok_s"], 3),
                        round(f["prefill_tok_s"] / eq["prefill_tok_s"], 3),
                    ]
                )
                print(
                    f"  executor: {setting:<11} {label:<24} prefill {f['prefill_tok_s']:8.1f} "
                    f"tok/s  decode {f['decode_tok_s']:7.1f} tok/s",
                    flush=True,
                )

    uneven = measured["uneven pair"]
    ratio = (
        uneven["asymmetric 2-rank 70/30"]["decode_tok_s"] / uneven["equal 2-rank"]["decode_tok_s"]
    )
    even = measured["even pair"]
    even_ratio = (
        even["asymmetric 2-rank 70/30"]["decode_tok_s"] / even["equal 2-rank"]["decode_tok_s"]
    )
    result: Section = {
        "section": "executor",
        "title": "Executor: prefill and decode speed, sharded and not",
        "headline": [
            {
                "metric": "decode, asymmetric 70/30 ÷ equal split (uneven pair)",
                "value": round(ratio, 3),
                "unit": f"× (target ≥ {TARGET})",
            },
            {
                "metric": "decode, asymmetric 70/30 ÷ equal split (even pair)",
                "value": round(even_ratio, 3),
                "unit": "×",
            },
        ],
        "tables": [
            {
                "title": f"{size_mb:.0f} MB float32 llama, {job['prompt_tokens']}-token prompt, "
                f"{job['decode_tokens']} decoded tokens",
                "columns": [
                    "cluster",
                    "run",
                    "prefill tok/s",
                    "decode tok/s",
                    "decode ÷ equal",
                    "prefill ÷ equal",
                ],
                "rows": rows,
            }
        ],
        "figures": [],
        "notes": [
            *notes,
            f"Target asymmetric ≥ {TARGET} × equal on the uneven pair: "
            f"{'met' if ratio >= TARGET else 'MISSED'} ({ratio:.2f}×).",
        ],
        "data": {
            "job": job,
            "measured": measured,
            "shares": {
                "equal": [r.share for r in equal.ranks],
                "asymmetric": [r.share for r in asym.ranks],
            },
        },
    }
    write_section(results_dir, result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.executor_speed")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    run(RESULTS_DIR, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
