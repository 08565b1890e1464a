"""Section "executor": prefill and decode speed of one small model, sharded and not.

One run measures, on the same model: the unsharded model in one process; today's equal split
over 2 ranks; the planner's asymmetric split for a 70/30 pair. Each rank is pinned to its own
core (`taskset`); the unsharded model runs on rank 0's core. Three clusters are emulated:

* uneven pair, busy loop: rank 1's core also runs a busy loop, so rank 1 computes at about
  half speed; every time its data arrives it may also wait for the scheduler to switch back;
* uneven pair, half-core cgroup: rank 1 may use 5 ms of every 10 ms of its core (a cgroup v1
  CPU quota). MLX's ring busy-waits for its peers, so a rank that waits spends its quota
  waiting: this penalises the rank with *less* work, i.e. the asymmetric split's rank 1;
* even pair: both cores free; an uneven split cannot win here and shows its cost (a 70/30
  split bounded by compute alone would run at 0.5 / 0.7 = 0.71 of the equal split).

Neither emulation is a slower Mac: a real one computes slowly without adding latency to the
collectives and without spending anything while it waits. The figures are the best of 3 runs
after a warm-up (`executor.speed`); prefill is prompt tokens over the time to the first token.
MLX's CPU backend on Linux is slow at matrix products (~1.6 GFLOP/s here), so prefill is
compute-bound and shows the split's effect most directly.

Run alone: `python -m bench.executor_speed [--quick]`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import Section, run_alone, write_section

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


def pinned_json(module: str, *args: str) -> dict[str, float]:
    """`python -m module args` on core 0, whose last line of output is its JSON result."""
    out = subprocess.run(
        [*_pinned(0), sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _unsharded(model_dir: Path, job: dict[str, int]) -> dict[str, float]:
    return pinned_json(
        "executor.speed",
        "--model",
        str(model_dir),
        *(
            f"--{key.replace('_', '-')}={job[key]}"
            for key in ("prompt_tokens", "decode_tokens", "repeats")
        ),
    )


def _group(
    model_dir: Path, plan: Any, job: dict[str, int], work: Path, rank1: list[str]
) -> dict[str, float]:
    from executor.parity import run_group

    out = run_group(model_dir, plan, {"bench": job}, work, prefixes=[_pinned(0), rank1])
    result: dict[str, float] = json.loads((out / "speed.json").read_text())
    return result


CGROUP = Path("/sys/fs/cgroup/cpu/asymtp-bench-half-core")  # cgroup v1 cpu controller


class _SlowCore:
    """Rank 1's node slowed: a busy loop sharing its core, or a half-core CPU quota."""

    def __init__(self, core: int, how: str) -> None:
        self.core = core
        self.how = how
        self.hog: subprocess.Popen[bytes] | None = None
        if how == "busy loop":
            self.hog = subprocess.Popen([*_pinned(core), sys.executable, "-c", "while True: pass"])
            return
        CGROUP.mkdir(exist_ok=True)
        (CGROUP / "cpu.cfs_period_us").write_text("10000")
        (CGROUP / "cpu.cfs_quota_us").write_text("5000")

    def prefix(self) -> list[str]:
        if self.how == "busy loop":
            return _pinned(self.core)
        enter = f'echo $$ > {CGROUP}/cgroup.procs && exec "$@"'
        return ["sh", "-c", enter, "sh", *_pinned(self.core)]

    def close(self) -> None:
        if self.hog is not None:
            self.hog.kill()
            self.hog.wait()
        elif CGROUP.exists():
            with contextlib.suppress(OSError):  # a process still inside: the kernel keeps it
                CGROUP.rmdir()


def _cgroup_writable() -> bool:
    try:
        CGROUP.mkdir(exist_ok=True)
    except OSError:
        return False
    return True


EQUAL, ASYM = "equal 2-rank", "asymmetric 2-rank 70/30"
SETTINGS = ("uneven pair, busy loop", "uneven pair, half-core cgroup", "even pair")


def run(results_dir: Path, quick: bool = False) -> Section:
    from executor.loader import read_json
    from executor.tiny_models import build_model
    from planner.splits import plan_for_split

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
        for setting in SETTINGS:
            how = setting.split(", ")[1] if "uneven" in setting else None
            if how == "half-core cgroup" and not _cgroup_writable():
                notes.append(f"Skipped '{setting}': {CGROUP.parent} cannot be written here.")
                continue
            slow = _SlowCore(1, "busy loop" if how == "busy loop" else "cgroup") if how else None
            figures: dict[str, dict[str, float]] = {}
            try:
                figures["unsharded (1 process)"] = _unsharded(model_dir, job)
                for label, plan in ((EQUAL, equal), (ASYM, asym)):
                    sub = work / f"{setting}-{label}".replace(" ", "_").replace("/", "-")
                    sub.mkdir()
                    rank1 = slow.prefix() if slow is not None else _pinned(1)
                    figures[label] = _group(model_dir, plan, job_v, sub, rank1)
            finally:
                if slow is not None:
                    slow.close()
            measured[setting] = figures
            eq = figures[EQUAL]
            for label, f in figures.items():
                rows.append(
                    [
                        setting,
                        label,
                        f["prefill_tok_s"],
                        f["decode_tok_s"],
                        round(f["prefill_tok_s"] / eq["prefill_tok_s"], 3),
                        round(f["decode_tok_s"] / eq["decode_tok_s"], 3),
                    ]
                )
                print(
                    f"  executor: {setting:<30} {label:<24} prefill {f['prefill_tok_s']:7.1f} "
                    f"tok/s  decode {f['decode_tok_s']:6.1f} tok/s",
                    flush=True,
                )

    headline = []
    for setting, figures in measured.items():
        for kind in ("decode", "prefill"):
            ratio = figures[ASYM][f"{kind}_tok_s"] / figures[EQUAL][f"{kind}_tok_s"]
            target = f" (target ≥ {TARGET})" if "uneven" in setting and kind == "decode" else ""
            headline.append(
                {
                    "metric": f"{kind}, asymmetric 70/30 ÷ equal split, {setting}",
                    "value": round(ratio, 2),
                    "unit": f"×{target}",
                }
            )
    result: Section = {
        "section": "executor",
        "title": "Executor: prefill and decode speed, sharded and not",
        "headline": headline,
        "tables": [
            {
                "title": f"{size_mb:.0f} MB float32 llama, {job['prompt_tokens']}-token prompt, "
                f"{job['decode_tokens']} decoded tokens (tokens/s, best of {job['repeats']})",
                "columns": [
                    "cluster",
                    "run",
                    "prefill tok/s",
                    "decode tok/s",
                    "prefill ÷ equal",
                    "decode ÷ equal",
                ],
                "rows": rows,
            }
        ],
        "figures": [],
        "notes": notes,
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


if __name__ == "__main__":
    sys.exit(run_alone("bench.executor_speed", run))
