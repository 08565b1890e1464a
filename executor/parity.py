"""Run a model sharded over a real ring group of local processes and compare it with the
unsharded model: the max logit difference and how many greedy continuations agree."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import mlx.core as mx

from executor.loader import load_shard, read_json
from executor.lockstep import Lockstep
from executor.stages import StageLayout
from protocol.plan import Plan, plan_json

GROUP_TIMEOUT_S = 300.0
GREEDY_PROMPT_TOKENS = 12


def _greedy(ref: Lockstep, prompt: list[int], steps: int) -> list[int]:
    """`steps` greedy tokens, not stopping at end-of-sequence (as the batched group does)."""
    eos, ref.eos = ref.eos, set()
    try:
        return list(ref.generate(prompt, steps))
    finally:
        ref.eos = eos


@dataclass(frozen=True)
class Tolerance:
    """Allowed |sharded logit - unsharded logit|: `relative` × the largest |logit| the
    unsharded model produced, plus an `absolute` floor. Real logits reach tens, and a sum
    split over ranks rounds differently, so an absolute bound alone fails correct shards; a
    wrong KV-head mapping or a missing all-sum moves logits by a sizeable fraction of their
    scale and still fails."""

    relative: float
    absolute: float

    def bound(self, scale: float) -> float:
        return self.relative * scale + self.absolute


TOLERANCES = {
    "float32": Tolerance(relative=1e-5, absolute=1e-5),
    # 8 (bf16) or 11 (fp16) mantissa bits: each rounding moves a logit by ~1e-3 of its size.
    "float16": Tolerance(relative=2e-2, absolute=1e-3),
    "bfloat16": Tolerance(relative=5e-2, absolute=1e-3),
}


@dataclass(frozen=True)
class ParityReport:
    ranks: int
    max_logit_diff: float
    greedy_equal: int
    greedy_total: int
    greedy_worst_pick: float
    """Over every greedy token the group chose, the most the unsharded model ranks it below
    its own best choice given the same prefix (0 when every pick is also its argmax)."""
    plan: Plan
    seconds: float
    logit_scale: float = 0.0
    """The largest |logit| of the unsharded model over the compared prompts."""
    dtype: str = "float32"
    """The logits' dtype (the model's activation dtype)."""

    @property
    def all_equal(self) -> bool:
        return self.greedy_equal == self.greedy_total

    @property
    def tolerance(self) -> Tolerance:
        return TOLERANCES.get(self.dtype, TOLERANCES["bfloat16"])

    def passes(self, tolerance: Tolerance | None = None) -> bool:
        """Logits within the tolerance, and greedy continuations identical or diverging only
        at a near-tie the tolerance allows."""
        bound = (tolerance or self.tolerance).bound(self.logit_scale)
        return self.max_logit_diff <= bound and self.greedy_worst_pick <= bound

    def lines(self) -> list[str]:
        shares = ", ".join(f"{r.share * 100:.0f}%" for r in self.plan.ranks)
        stages = StageLayout.of_plan(self.plan).stages
        layout = "; ".join(
            f"layers [{s.layers[0]}, {s.layers[1]}) on "
            + (f"ranks {s.first}-{s.last}" if s.size > 1 else f"rank {s.first}")
            for s in stages
        )
        return [
            f"ranks: {self.ranks} (weight shares {shares})",
            *([f"pipeline stages: {layout}"] if len(stages) > 1 else []),
            f"max |logit - unsharded logit|: {self.max_logit_diff:.3g} absolute, "
            f"{self.max_logit_diff / max(self.logit_scale, 1e-30):.3g} of the largest "
            f"|logit| ({self.logit_scale:.3g}, {self.dtype})",
            f"greedy continuations identical: {self.greedy_equal}/{self.greedy_total}",
            f"worst greedy pick vs the unsharded argmax: {self.greedy_worst_pick:.3g} below",
        ]


def prompts(count: int, vocab: int, seed: int = 0, length: int | None = None) -> list[list[int]]:
    """Random token prompts; of one `length` when given (batched greedy decoding needs it)."""
    rng = random.Random(seed)
    return [
        [rng.randrange(3, vocab) for _ in range(length or rng.randint(3, 24))] for _ in range(count)
    ]


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def rank_command(model_dir: Path, workdir: Path, rank: int) -> list[str]:
    """The command of one local rank process over the `plan.json` and `hosts.json` of
    `workdir` (what it then does — a parity job, serving — follows as more flags)."""
    plan, hosts = workdir / "plan.json", workdir / "hosts.json"
    module = ["-m", "executor.rank_process"]
    where = ["--plan", str(plan), "--rank", str(rank), "--hostfile", str(hosts)]
    return [sys.executable, *module, "--model", str(model_dir), *where]


def run_group(
    model_dir: Path,
    plan: Plan,
    job: dict[str, Any],
    workdir: Path,
    timeout: float = GROUP_TIMEOUT_S,
    prefixes: list[list[str]] | None = None,
) -> Path:
    """Start one process per rank on 127.0.0.1, run `job` on rank 0; its results are files in
    the returned directory. `prefixes` go before each rank's command (e.g. `taskset -c 1`)."""
    n = len(plan.ranks)
    (workdir / "plan.json").write_text(plan_json(plan))
    (workdir / "hosts.json").write_text(json.dumps([[f"127.0.0.1:{p}"] for p in free_ports(n)]))
    (workdir / "job.json").write_text(json.dumps(job))
    procs = [
        subprocess.Popen(
            [
                *(prefixes[r] if prefixes else []),
                *rank_command(model_dir, workdir, r),
                "--parity",
                str(workdir / "job.json"),
                "--out",
                str(workdir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(n)
    ]
    deadline = time.monotonic() + timeout
    failures = []
    try:
        for r, p in enumerate(procs):
            out, err = p.communicate(timeout=max(deadline - time.monotonic(), 1))
            if p.returncode:
                failures.append(f"rank {r} exited {p.returncode}: {(out + err)[-800:]}")
    except subprocess.TimeoutExpired:
        failures.append(f"the group did not finish within {timeout:g}s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if failures:
        raise RuntimeError("; ".join(failures))
    return workdir


def _worst_pick(model: Any, prompt: list[int], got: list[int]) -> float:
    """Teacher-forced: how far below the unsharded model's best logit each chosen token lies.
    Where a continuation diverges at a near-tie, this says by how little."""
    if not got:
        return 0.0
    seq = mx.array([*prompt, *got[:-1]], dtype=mx.int32)[None]
    logits = model(seq)[0, len(prompt) - 1 :, :].astype(mx.float32)
    chosen = mx.take_along_axis(logits, mx.array(got, dtype=mx.int32)[:, None], axis=-1)[:, 0]
    return cast(float, mx.max(logits.max(axis=-1) - chosen).item())


def check(
    model_dir: Path,
    plan: Plan,
    n_logit_prompts: int = 4,
    n_greedy: int = 20,
    max_tokens: int = 32,
    seed: int = 0,
    prefixes: list[list[str]] | None = None,
) -> ParityReport:
    started = time.monotonic()
    config = read_json(model_dir / "config.json")
    vocab = int(config.get("vocab_size") or config.get("text_config", {}).get("vocab_size"))
    logit_prompts = prompts(n_logit_prompts, vocab, seed)
    greedy_prompts = prompts(n_greedy, vocab, seed + 1, length=GREEDY_PROMPT_TOKENS)
    job = {
        "logits_prompts": logit_prompts,
        "greedy_prompts": greedy_prompts,
        "max_tokens": max_tokens,
    }
    with tempfile.TemporaryDirectory(prefix="asymtp-parity-") as tmp:
        out = run_group(model_dir, plan, job, Path(tmp), prefixes=prefixes)
        loaded = mx.load(str(out / "logits.safetensors")) if logit_prompts else {}
        assert isinstance(loaded, dict)
        got_logits = {k: mx.array(v) for k, v in loaded.items()}
        mx.eval(got_logits)
        got_tokens = json.loads((out / "tokens.json").read_text())

    model, _, _ = load_shard(model_dir)
    eos = config.get("eos_token_id")
    ref = Lockstep(model, None, [eos] if isinstance(eos, int) else [])
    diff, scale, dtype = 0.0, 0.0, "float32"
    for i, p in enumerate(logit_prompts):
        want = ref.logits(p)
        dtype = str(want.dtype).rpartition(".")[2]
        want = want.astype(mx.float32)
        delta = mx.abs(got_logits[f"logits_{i}"].astype(mx.float32) - want)
        diff = max(diff, cast(float, delta.max().item()))
        scale = max(scale, cast(float, mx.abs(want).max().item()))
    # The reference decodes each prompt on its own, through the serving path.
    expected = [_greedy(ref, p, max_tokens) for p in greedy_prompts]
    equal = sum(got == want for got, want in zip(got_tokens, expected))
    worst = max(
        (_worst_pick(model, p, got) for p, got in zip(greedy_prompts, got_tokens)), default=0.0
    )
    return ParityReport(
        len(plan.ranks),
        diff,
        equal,
        len(greedy_prompts),
        worst,
        plan,
        time.monotonic() - started,
        scale,
        dtype,
    )
