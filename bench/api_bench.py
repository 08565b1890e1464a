"""Serving: what several clients get from one small model on a 2-rank loopback ring.

Aggregate decode throughput (completion tokens of all streams ÷ wall time, greedy, short
prompts) at 1, 4 and 8 concurrent requests, for asymtp (rank 0's API, even split) and for
`mlx_lm.server` run distributed with its own tensor parallelism on the same two ranks
(`MLX_RANK` / `MLX_HOSTFILE`, ring backend on 127.0.0.1); then the time to first token of the
second turn of a ~2,000-token conversation, after its first turn (the prefix cache can hit)
and cold (a conversation never seen). The figures depend on the engine wired into rank 0:
the serial engine decodes one sequence at a time and has no prefix cache.

Run alone: `python -m bench.api_bench [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench import RESULTS_DIR, Section, write_section
from executor.tiny_models import CORPUS_WORDS

CONCURRENCY = (1, 4, 8)
READY_TIMEOUT_S = 240.0
REQUEST_TIMEOUT_S = 900.0
CONVERSATION_WORDS = 2000
QUICK_CONVERSATION_WORDS = 150
TARGET_VS_MLX_LM = 0.9
TARGET_SCALING = 3.0
TARGET_TTFT = 5.0


@contextmanager
def mlx_lm_server(model_dir: Path, work: Path, ranks: int = 2) -> Iterator[str]:
    from executor.parity import free_ports

    *ring, port = free_ports(ranks + 1)
    hostfile = work / "mlx-lm-hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in ring]))
    cmd = [sys.executable, "-m", "mlx_lm.server", "--model", str(model_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    procs = [
        subprocess.Popen(
            cmd,
            env={**os.environ, "MLX_RANK": str(r), "MLX_HOSTFILE": str(hostfile)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for r in range(ranks)
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("mlx_lm.server exited while starting")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlx_lm.server did not serve within {READY_TIMEOUT_S:g}s")
            time.sleep(0.5)
        yield url
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _complete(url: str, headers: dict[str, str], prompt: str, max_tokens: int) -> int:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    r = httpx.post(f"{url}/v1/completions", json=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
    r.raise_for_status()
    return int(r.json()["usage"]["completion_tokens"])


def throughput(url: str, headers: dict[str, str], streams: int, max_tokens: int) -> float:
    """Completion tokens of `streams` concurrent requests ÷ the wall time they took."""
    rng = random.Random(streams)
    prompts = [" ".join(rng.choice(CORPUS_WORDS) for _ in range(16)) for _ in range(streams)]
    counts: list[int] = []
    errors: list[BaseException] = []

    def one(p: str) -> None:
        try:
            counts.append(_complete(url, headers, p, max_tokens))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(p,)) for p in prompts]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"a request failed: {errors[0]}")
    return sum(counts) / (time.perf_counter() - start)


def _first_token_s(url: str, headers: dict[str, str], messages: list[dict[str, str]]) -> float:
    body = {"messages": messages, "max_tokens": 4, "temperature": 0, "stream": True}
    start = time.perf_counter()
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=REQUEST_TIMEOUT_S
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0].get("delta", {})
                if delta.get("content"):
                    return time.perf_counter() - start
    raise RuntimeError("the stream ended without a token")


def second_turn_ttft(url: str, headers: dict[str, str], seed: int, warm: bool, words: int) -> float:
    """TTFT of turn 2 of a `words`-token conversation; `warm`: turn 1 was just served."""
    rng = random.Random(seed)
    first = [{"role": "user", "content": " ".join(rng.choice(CORPUS_WORDS) for _ in range(words))}]
    answer = "the plan fits."
    if warm:
        _first_token_s(url, headers, first)
    turn2 = [
        *first,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "and then?"},
    ]
    return _first_token_s(url, headers, turn2)


def measure(url: str, headers: dict[str, str], max_tokens: int, words: int) -> dict[str, Any]:
    out: dict[str, Any] = {"tok_s": {}}
    throughput(url, headers, 1, 4)  # warm-up: compile, first allocations
    for c in CONCURRENCY:
        out["tok_s"][c] = round(throughput(url, headers, c, max_tokens), 2)
        print(f"  serving: {url} {c} streams: {out['tok_s'][c]} tok/s", flush=True)
    try:
        out["ttft_cold_s"] = round(second_turn_ttft(url, headers, 101, False, words), 3)
        out["ttft_warm_s"] = round(second_turn_ttft(url, headers, 202, True, words), 3)
    except (httpx.HTTPError, RuntimeError) as e:
        # Throughput stands on its own: keep it, and say why the TTFT is missing.
        out["ttft_cold_s"] = out["ttft_warm_s"] = None
        out["ttft_error"] = str(e).splitlines()[0]
    print(
        f"  serving: {url} TTFT cold {out['ttft_cold_s']}s warm {out['ttft_warm_s']}s", flush=True
    )
    return out


def run(results_dir: Path, quick: bool = False) -> Section:
    from asymtp.api_group import serving_group
    from bench.executor_speed import MODEL_SHAPE
    from executor.tiny_models import build_model

    max_tokens = 16 if quick else 64
    words = QUICK_CONVERSATION_WORDS if quick else CONVERSATION_WORDS
    with tempfile.TemporaryDirectory(prefix="asymtp-serving-") as tmp:
        work = Path(tmp)
        model_dir = build_model(work / "model", "llama", "none", "float32", seed=1, **MODEL_SHAPE)
        token = "bench-token"
        with serving_group(
            model_dir, work / "asymtp", [0.5, 0.5], api_token=token, sharding="equal"
        ) as g:
            ours = measure(g.url, {"Authorization": f"Bearer {token}"}, max_tokens, words)
        with mlx_lm_server(model_dir, work) as url:
            theirs = measure(url, {}, max_tokens, words)
    return _section(results_dir, ours, theirs, max_tokens, words)


def _section(
    results_dir: Path, ours: dict[str, Any], theirs: dict[str, Any], n: int, words: int
) -> Section:
    rows = [
        [
            f"{c} streams",
            ours["tok_s"][c],
            theirs["tok_s"][c],
            round(ours["tok_s"][c] / theirs["tok_s"][c], 2),
        ]
        for c in CONCURRENCY
    ]
    rows.append(
        [
            f"TTFT, turn 2 of {words} words, cold (s)",
            ours["ttft_cold_s"],
            theirs["ttft_cold_s"],
            None,
        ]
    )
    rows.append(["TTFT, turn 2 after turn 1 (s)", ours["ttft_warm_s"], theirs["ttft_warm_s"], None])
    notes = [__doc__.split("\n\n", 1)[1].split("Run alone")[0].strip()]
    notes += [
        f"{who} TTFT not measured: {d['ttft_error']}"
        for who, d in (("asymtp", ours), ("mlx_lm.server", theirs))
        if "ttft_error" in d
    ]
    worst = min(ours["tok_s"][c] / theirs["tok_s"][c] for c in CONCURRENCY)
    headline = [
        {
            "metric": "asymtp ÷ mlx_lm.server, worst concurrency",
            "value": round(worst, 2),
            "unit": f"× (target ≥ {TARGET_VS_MLX_LM})",
        },
        {
            "metric": "asymtp 8 streams ÷ 1 stream",
            "value": round(ours["tok_s"][8] / ours["tok_s"][1], 2),
            "unit": f"× (target ≥ {TARGET_SCALING})",
        },
        {
            "metric": "asymtp TTFT cold ÷ with prefix",
            "value": round(ours["ttft_cold_s"] / ours["ttft_warm_s"], 2)
            if ours["ttft_warm_s"]
            else "not measured",
            "unit": f"× (target ≥ {TARGET_TTFT})",
        },
    ]
    result: Section = {
        "section": "serving",
        "title": "Serving: concurrent throughput and prefix cache, asymtp vs mlx_lm.server",
        "headline": headline,
        "tables": [
            {
                "title": f"2-rank loopback ring, even split; {n} greedy tokens per request (aggregate tok/s)",
                "columns": ["load", "asymtp", "mlx_lm.server", "asymtp ÷ mlx_lm"],
                "rows": rows,
            }
        ],
        "figures": [],
        "notes": notes,
        "data": {"asymtp": ours, "mlx_lm_server": theirs, "max_tokens": n, "words": words},
    }
    write_section(results_dir, result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.api_bench")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    run(RESULTS_DIR, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
