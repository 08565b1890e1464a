"""Pipeline and hybrid plans over real ring groups of 2-3 local processes give the unsharded
model's logits (float32 tolerance of `executor.parity`) and the same greedy tokens: a pure
pipeline of 2 stages (5/3 of 8 layers) and of 3 stages (5/2/1), and a hybrid of 2 stages whose
first runs tensor-parallel on 2 ranks with an uneven split (70/30) — for a dense, an MoE and a
hybrid-attention (Gated DeltaNet + full attention) family. Few prompts and tokens: each case
is one group of processes on a shared 2-core machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from asymtp.stage_plans import LayoutError, parse_stages, plan_for_stages
from executor.loader import read_json
from executor.parity import check
from executor.stages import StageError, StageLayout
from executor.tiny_models import VOCAB, build_model
from protocol.deployment import Peer

LAYOUTS = {
    "pipeline-2": "5:1/3:1",
    "pipeline-3": "5:1/2:1/1:1",
    "hybrid-2+1": "5:0.7,0.3/3:1",
}
FAMILIES = ("qwen3", "qwen3_moe", "qwen3_next")
CASES = [(family, name) for family in FAMILIES for name in LAYOUTS]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline-models")


def tiny(models: Path, family: str) -> Path:
    """The family's 8-layer tiny model, built once per module."""
    model_dir = models / family
    if not (model_dir / "config.json").exists():
        build_model(model_dir, family, num_hidden_layers=8)
    return model_dir


@pytest.mark.slow
@pytest.mark.parametrize(("family", "layout"), CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_pipeline_equals_unsharded(models: Path, family: str, layout: str) -> None:
    model_dir = tiny(models, family)
    plan = plan_for_stages(read_json(model_dir / "config.json"), parse_stages(LAYOUTS[layout]))
    stages = StageLayout.of_plan(plan).stages
    assert [s.layers for s in stages][-1][1] == 8 and len(stages) > 1
    if layout.startswith("hybrid"):
        assert stages[0].size == 2 and len({r.share for r in plan.ranks[:2]}) == 2
    report = check(model_dir, plan, n_logit_prompts=2, n_greedy=4, max_tokens=8)
    print(*report.lines(), sep="\n")
    assert report.passes(), report.lines()
    assert report.greedy_equal == report.greedy_total == 4


def test_layout_from_ranks_layers() -> None:
    layout = StageLayout.of([(0, 5), (0, 5), (5, 7), (7, 8)])
    assert [(s.first, s.end, s.layers) for s in layout.stages] == [
        (0, 2, (0, 5)),
        (2, 3, (5, 7)),
        (3, 4, (7, 8)),
    ]
    roles = [layout.role(r) for r in range(4)]
    assert [r.embeds for r in roles] == [True, True, False, False]
    assert [r.sends_output for r in roles] == [False, True, True, False]
    assert [r.sends_final for r in roles] == [False, False, False, True]
    assert [r.stage_rank for r in roles] == [0, 1, 0, 0]
    assert not StageLayout.of([(0, 8), (0, 8)]).pipelined


@pytest.mark.parametrize(
    "layers",
    [[(0, 5), (6, 8)], [(0, 5), (5, 8), (0, 5)], [(2, 8)], [(0, 4), (4, 4)]],
    ids=["gap", "stage-not-consecutive", "not-from-0", "empty-stage"],
)
def test_layout_rejects_what_is_not_a_pipeline(layers: list[tuple[int, int]]) -> None:
    with pytest.raises(StageError, match="rank"):
        StageLayout.of(layers)


def test_layout_from_peers() -> None:
    peers = [
        Peer(rank=r, node_id=f"n{r}", host="h", port=1, layers=x)
        for r, x in enumerate([(0, 3), (3, 8)])
    ]
    layout = StageLayout.of_peers(list(reversed(peers)))
    assert layout is not None and len(layout.stages) == 2
    assert StageLayout.of_peers([p.model_copy(update={"layers": None}) for p in peers]) is None


@pytest.mark.parametrize("text", ["5:", "x:1", "0:1", "5:1,-1", "5:1//3:1"])
def test_bad_stage_texts(text: str) -> None:
    with pytest.raises(LayoutError, match="--stages"):
        parse_stages(text)


def test_a_stage_rank_loads_only_its_layers(models: Path) -> None:
    # Rank 0 (stage 0) holds the embeddings and the head; the later stages neither. Every rank
    # holds its own layers only, and no more than the planner counted for it.
    from executor.load_probe import probe

    model_dir = tiny(models, "qwen3")
    plan = plan_for_stages(read_json(model_dir / "config.json"), parse_stages("5:1/2:1/1:1"))
    held = [probe(model_dir, plan, r.rank)["shard_bytes"] for r in plan.ranks]
    whole = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    vocab_rows = 2 * VOCAB * 128 * 4  # embeddings and head, float32
    layer = (whole - vocab_rows) / 8
    assert held[0] == pytest.approx(5 * layer + vocab_rows, rel=0.02)
    assert held[1] == pytest.approx(2 * layer, rel=0.02)
    assert held[2] == pytest.approx(1 * layer, rel=0.02)
    for r, got in zip(plan.ranks, held):
        assert got <= r.memory_bytes.weights * 1.02, (r.rank, got, r.memory_bytes)


@pytest.mark.slow
def test_serving_a_hybrid_pipeline_batches_like_alone(models: Path, tmp_path: Path) -> None:
    # The continuous batch (sequences joining, prefilled in chunks, decoding together, leaving)
    # over a 2+1 hybrid: each completion decoded with others equals it decoded alone.
    import concurrent.futures

    import httpx

    from asymtp.api_group import serving_group
    from executor.tiny_models import CORPUS_WORDS

    model_dir = tiny(models, "qwen3")
    plan = plan_for_stages(read_json(model_dir / "config.json"), parse_stages("5:0.7,0.3/3:1"))
    texts = [" ".join(CORPUS_WORDS[i : i + n]) for i, n in ((0, 3), (4, 9), (10, 5))]

    def complete(url: str, prompt: str) -> str:
        body = {"model": "qwen3", "prompt": prompt, "max_tokens": 8, "temperature": 0}
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        return str(r.json()["choices"][0]["text"])

    with serving_group(model_dir, tmp_path / "group", [], plan=plan, batch_size=4) as group:
        alone = [complete(group.url, t) for t in texts]
        with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
            together = list(pool.map(lambda t: complete(group.url, t), texts))
    assert together == alone and all(alone)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stages", "5:1/2:1"], "the stages hold 7 layers, the model has 8"),
        (["--stages", "5:1/3:x"], "'3:x' is not LAYERS:SHARE"),
        (["--stages", "8"], "the stages need 2 to 8 ranks"),
        (["--stages", "4/4", "--ranks", "2"], "not both"),
        (["--stages", "4/4", "--split", "0.5,0.5"], "--split goes with --ranks"),
    ],
)
def test_check_parity_refuses_bad_stages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from asymtp.cli import main

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(
        '{"model_type": "qwen3", "num_hidden_layers": 8, "hidden_size": 64, "vocab_size": 64,'
        ' "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 128}'
    )
    assert main(["check-parity", "--model", str(model_dir), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_a_stopped_stage_is_caught(models: Path, tmp_path: Path) -> None:
    # Heartbeats and the watchdog as in a single stage: rank 2 (the last stage) stops while
    # rank 0 serves (idle: it pings the group); rank 0 fails within seconds, naming it.
    import json
    import signal
    import subprocess
    import time

    from executor.parity import free_ports, rank_command
    from protocol.plan import plan_json

    model_dir = tiny(models, "qwen3")
    plan = plan_for_stages(read_json(model_dir / "config.json"), parse_stages("4/2/2"))
    (tmp_path / "plan.json").write_text(plan_json(plan))
    *ring, serve = free_ports(4)
    (tmp_path / "hosts.json").write_text(json.dumps([[f"127.0.0.1:{p}"] for p in ring]))
    extra = ["--serve", f"127.0.0.1:{serve}", "--heartbeats", "--step-timeout", "2"]
    procs = [
        subprocess.Popen(
            [*rank_command(model_dir, tmp_path, r), *extra], stdout=subprocess.PIPE, text=True
        )
        for r in range(3)
    ]
    try:
        assert procs[0].stdout is not None
        events = (json.loads(line) for line in procs[0].stdout if line.startswith("{"))
        assert next(ev for ev in events if ev["event"] in ("ready", "failed"))["event"] == "ready"
        procs[2].send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        failed = next(ev for ev in events if ev["event"] == "failed")
        noticed = time.monotonic() - stopped
        print(f"noticed in {noticed:.1f}s: {failed['reason']}")
        # A follower that notices first and exits is named too, as in a single stage.
        assert noticed < 15 and "2 (rank2)" in failed["reason"]
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()
