"""Continuous batching, the prefix cache, cancellation and admission over a real loopback ring
group (rank 0 runs the real engine through `tests/engine_driver.py`; the followers are
ordinary rank processes), and the watchdog against a slow and a stopped peer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from executor.loader import read_json
from executor.parity import free_ports
from executor.tiny_models import build_model
from planner.splits import plan_for_split
from protocol.plan import plan_json

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("engine_driver.py")
ROOT = DRIVER.parent.parent


SHARES = {2: [0.6, 0.4], 3: [0.5, 0.3, 0.2]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # On three ranks the planner gives the smallest no heads of some layers: its caches there
    # do not depend on its input, the case where ranks could evaluate different all-sums.
    return build_model(
        tmp_path_factory.mktemp("models") / "qwen3",
        "qwen3",
        "none",
        seed=3,
        hidden_size=256,
        num_hidden_layers=4,
        intermediate_size=1024,
        head_dim=32,
    )


class Group:
    """Rank 0 (the driver) and followers, as processes on 127.0.0.1."""

    def __init__(self, work: Path, model_dir: Path, scenario: str, ranks: list[list[str]]):
        plan = plan_for_split(read_json(model_dir / "config.json"), SHARES[len(ranks)])
        (work / "plan.json").write_text(plan_json(plan))
        hosts = [[f"127.0.0.1:{p}"] for p in free_ports(len(ranks))]
        (work / "hosts.json").write_text(json.dumps(hosts))
        self.out = work / "result.json"
        self.procs: list[subprocess.Popen[str]] = []
        for rank, extra in enumerate(ranks):
            common = ["--model", str(model_dir), "--plan", str(work / "plan.json")]
            common += ["--rank", str(rank), "--hostfile", str(work / "hosts.json"), *extra]
            common += ["--heartbeats"]
            head = [str(DRIVER), scenario, str(self.out), "--"] if rank == 0 else []
            cmd = [sys.executable, *head, *(["-m", "executor.rank_process"] if rank else [])]
            self.procs.append(
                subprocess.Popen(
                    [*cmd, *common], cwd=ROOT, stdout=subprocess.PIPE, stderr=None, text=True
                )
            )

    def events(self, rank: int = 0) -> Iterator[dict[str, Any]]:
        stdout = self.procs[rank].stdout
        assert stdout is not None
        for line in stdout:
            if line.startswith("{"):
                yield json.loads(line)

    def result(self) -> dict[str, Any]:
        for ev in self.events():
            assert ev["event"] != "failed", ev
            if ev["event"] == "done":
                return dict(json.loads(self.out.read_text()))
        raise AssertionError(f"rank 0 ended without a result (exit {self.procs[0].wait()})")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
            p.wait()


@pytest.fixture(scope="module")
def batching(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[dict]:
    budget = ["--context-tokens", "128", "--batch-size", "8", "--max-queue", "4"]
    budget += ["--prefill-step", "8"]  # prompts join over several steps, between decode steps
    work = tmp_path_factory.mktemp("batching")
    group = Group(work, model_dir, "batching", [budget] * 3)
    try:
        yield group.result()
        for p in group.procs:  # the followers are released by rank 0's shutdown
            assert p.wait(timeout=60) == 0
    finally:
        group.close()


def _prefix(got: dict[str, Any], alone: dict[str, Any]) -> None:
    """`got` (perhaps longer) continues exactly as `alone` did."""
    n = len(alone["tokens"])
    assert got["tokens"][:n] == alone["tokens"]
    if alone["finish"] == "stop":
        assert got["tokens"] == alone["tokens"]


def test_concurrent_sequences_get_their_tokens_alone(batching: dict[str, Any]) -> None:
    alone, together = batching["alone"], batching["together"]
    assert len(together) == 8 and len({len(p) for p in batching["prompts"]}) == 8
    for a, t in zip(alone, together):
        assert t["tokens"] == a["tokens"] and t["finish"] == a["finish"]
    assert any(a["tokens"] for a in alone)


def test_a_sequence_joining_mid_batch_gets_its_tokens_alone(batching: dict[str, Any]) -> None:
    assert batching["running_when_late_began"] >= 2  # it decoded alongside the first ones
    assert batching["late"]["tokens"] == batching["alone"][4]["tokens"]
    for got, alone in zip(batching["early"], batching["alone"][:4]):
        _prefix(got, alone)


def test_prefix_cache_hit_gives_identical_tokens(batching: dict[str, Any]) -> None:
    cold, warm = batching["follow_up_cold"], batching["follow_up_warm"]
    print("cached tokens:", warm["cached"], "stats:", batching["stats"])
    assert cold["cached"] == 0 and warm["cached"] >= len(batching["prompts"][1])
    assert warm["tokens"] == cold["tokens"]
    stats = batching["stats"]
    assert stats["prefix_cache_hits"] >= 1 and stats["prefix_cache_misses"] >= 1
    assert stats["prefix_cache_tokens"] > 0  # (bytes are rank 0's: none if it holds no KV heads)


def test_cancellation_frees_the_slot_at_the_next_step(batching: dict[str, Any]) -> None:
    c = batching["cancellation"]
    print("steps between cancel() and the drop:", c["steps_between"])
    assert c["finish"] == "cancelled" and c["steps_between"] <= 1
    assert c["other"]["tokens"] == c["other_alone"]["tokens"]


def test_queue_overflow_is_refused(batching: dict[str, Any]) -> None:
    b = batching["busy"]
    # 8 sequences reserve 128 tokens each (the whole 128 × 8 budget), 4 wait, the 13th is busy.
    assert (b["running"], b["waiting"], b["held"]) == (8, 4, 12)
    assert b["refused"] and b["refused"] > 0
    assert set(b["finishes"]) == {"cancelled"}


def test_seeds_logprobs_and_penalties(batching: dict[str, Any]) -> None:
    s = batching["sampling"]
    assert s["seeded"][0]["tokens"] == s["seeded"][1]["tokens"]
    assert s["fresh"][0]["tokens"] != s["fresh"][1]["tokens"]
    logprob, top = s["logprobs"]["logprobs"][0]
    assert len(top) == 3 and logprob == pytest.approx(top[0][1]) and logprob <= 0
    assert s["penalised"]["tokens"]


def test_slow_prefill_completes_and_a_stopped_peer_is_caught(
    tmp_path: Path, model_dir: Path
) -> None:
    # The old fixed bound was 60 s for any wait; here it is 2 s, and the follower takes 0.1 s
    # per token, so the 39-token prefill alone takes 4.7 s: more than twice the old bound.
    old_bound = ["--step-timeout", "2"]
    group = Group(
        tmp_path, model_dir, "slow", [old_bound, [*old_bound, "--delay-per-token", "0.12"]]
    )
    try:
        result = group.result()
        print(f"prefill and 2 tokens took {result['seconds']:.1f}s")
        assert result["seconds"] > 4.0 and result["finish"] in ("length", "stop")
        events = group.events()
        assert next(events)["event"] == "prefilling"  # 200 tokens: a bound of 201 s
        time.sleep(1.0)
        group.procs[1].send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        failed = next(ev for ev in events if ev["event"] == "failed")
        noticed = time.monotonic() - stopped
        print(f"noticed in {noticed:.1f}s: {failed['reason']}")
        assert noticed < 10 and "peer 1" in failed["reason"]
        assert "does not answer" in failed["reason"]
    finally:
        group.close()
