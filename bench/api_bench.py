"""Serving: what several clients get from one small model on a 2-rank loopback ring.

Aggregate decode throughput (completion tokens of all streams ÷ wall time, greedy, short
prompts) at 1, 4 and 8 concurrent requests, for asymtp (rank 0's API, even split) and for
`mlx_lm.server` run distributed with its own tensor parallelism on the same two ranks
(`MLX_RANK` / `MLX_HOSTFILE`, ring backend on 127.0.0.1); then the time to first token of the
second turn of a ~2,000-token conversation, after its first turn (the prefix cache can hit)
and cold (a conversation never seen). Both servers run side by side and take turns, round
after round at each concurrency (A B, then B A), each round with fresh prompts: on a shared
machine whose load drifts by ±50 % within minutes, a change of load then falls on both. The
table gives each one's median over the rounds, and the ratio is the median of the rounds'
ratios. The server waiting its turn is not free: a rank waiting in MLX's ring backend polls
its socket (about half a core each for either server's idle follower, measured with `ps`),
so both are measured beside that load, as they are beside the other engineers' work.

Run alone: `python -m bench.api_bench [--quick]`.
"""

from __future__ import annotations

import json
import os
import random
import statistics
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

from bench import Section, run_alone, write_section
from executor.tiny_models import CORPUS_WORDS

CONCURRENCY = (1, 4, 8)
READY_TIMEOUT_S = 240.0
REQUEST_TIMEOUT_S = 900.0
CONVERSATION_WORDS = 2000
QUICK_CONVERSATION_WORDS = 150
TARGET_VS_MLX_LM = 0.9
TARGET_SCALING = 3.0
TARGET_TTFT = 5.0
ROUNDS = 2
QUICK_ROUNDS = 1


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


def throughput(
    url: str, headers: dict[str, str], streams: int, max_tokens: int, round_: int = 0
) -> float:
    """Completion tokens of `streams` concurrent requests ÷ the wall time they took."""
    rng = random.Random(1000 * round_ + streams)
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


Server = tuple[str, dict[str, str]]
"""A server's URL and the headers its requests carry."""


def take_turns(servers: dict[str, Server], max_tokens: int, rounds: int) -> dict[str, Any]:
    """tok/s of each server at each concurrency, round after round, the servers' order
    alternating (A B, B A, …) so that a drift of the machine's load falls on both."""
    out: dict[str, Any] = {name: {"rounds": {c: [] for c in CONCURRENCY}} for name in servers}
    for url, headers in servers.values():
        throughput(url, headers, 1, 4, round_=-1)  # warm-up: compile, first allocations
    for c in CONCURRENCY:
        for r in range(rounds):
            for name in list(servers)[:: 1 if r % 2 == 0 else -1]:
                tok_s = round(throughput(*servers[name], c, max_tokens, round_=r), 2)
                out[name]["rounds"][c].append(tok_s)
                print(f"  serving: {name} {c} streams, round {r + 1}: {tok_s} tok/s", flush=True)
    for name in servers:
        got = out[name]["rounds"]
        out[name]["tok_s"] = {c: round(statistics.median(got[c]), 2) for c in CONCURRENCY}
    return out


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[int, float]:
    """The median over the rounds of asymtp ÷ mlx_lm.server, each round's pair measured
    back to back."""
    return {
        c: round(
            statistics.median(
                a / b for a, b in zip(ours["rounds"][c], theirs["rounds"][c], strict=True)
            ),
            2,
        )
        for c in CONCURRENCY
    }


def batch_cost(rows: int = 8, repeats: int = 30) -> float:
    """Time of one of the model's matrix products for `rows` token rows ÷ for one row, on this
    machine's MLX: what a decode step of `rows` sequences costs against one. Near `rows` when
    the product is bound by arithmetic rather than by reading the weights (MLX's CPU backend
    on Linux calls the reference BLAS), which caps what batching can gain."""
    import mlx.core as mx

    from bench.executor_speed import MODEL_SHAPE

    w = mx.random.normal((MODEL_SHAPE["intermediate_size"], MODEL_SHAPE["hidden_size"]))
    fastest = []  # the least disturbed of the repeats: the machine is shared
    for m in (1, rows):
        x = mx.random.normal((m, MODEL_SHAPE["hidden_size"]))
        mx.eval(w, x, x @ w.T)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            mx.eval(x @ w.T)
            times.append(time.perf_counter() - start)
        fastest.append(min(times))
    return round(fastest[1] / fastest[0], 2)


def ttft(url: str, headers: dict[str, str], words: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
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
        with (
            serving_group(
                model_dir, work / "asymtp", [0.5, 0.5], api_token=token, sharding="equal"
            ) as g,
            mlx_lm_server(model_dir, work) as url,
        ):
            servers = {"asymtp": (g.url, {"Authorization": f"Bearer {token}"}), "mlx_lm": (url, {})}
            got = take_turns(servers, max_tokens, QUICK_ROUNDS if quick else ROUNDS)
            for name, server in servers.items():
                got[name].update(ttft(*server, words))
    got["asymtp"]["batch_cost_8"] = batch_cost()
    return _section(results_dir, got["asymtp"], got["mlx_lm"], max_tokens, words)


def _section(
    results_dir: Path, ours: dict[str, Any], theirs: dict[str, Any], n: int, words: int
) -> Section:
    vs = ratios(ours, theirs)
    rows: list[list[Any]] = [
        [f"{c} streams", ours["tok_s"][c], theirs["tok_s"][c], vs[c]] for c in CONCURRENCY
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
    notes.append(
        "Each round, asymtp / mlx_lm.server tok/s: "
        + "; ".join(
            f"{c} streams "
            + ", ".join(f"{a} / {b}" for a, b in zip(ours["rounds"][c], theirs["rounds"][c]))
            for c in CONCURRENCY
        )
    )
    notes.append(
        f"What batching can gain here: one of the model's matrix products takes "
        f"{ours['batch_cost_8']}× as long for 8 token rows as for 1 on this machine (MLX's CPU "
        "backend on Linux calls the reference BLAS, bound by arithmetic, not by reading the "
        "weights), so a decode step of 8 sequences costs several times one of 1, for both "
        "servers; on Apple silicon, where decode is bound by reading the weights, 8 rows cost "
        "about what 1 does."
    )
    worst = min(vs.values())
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
                "title": f"2-rank loopback ring, even split; {n} greedy tokens per request "
                "(aggregate tok/s, median of the rounds)",
                "columns": ["load", "asymtp", "mlx_lm.server", "asymtp ÷ mlx_lm (median)"],
                "rows": rows,
            }
        ],
        "figures": [],
        "notes": notes,
        "data": {"asymtp": ours, "mlx_lm_server": theirs, "max_tokens": n, "words": words},
    }
    write_section(results_dir, result)
    return result


if __name__ == "__main__":
    sys.exit(run_alone("bench.api_bench", run))
