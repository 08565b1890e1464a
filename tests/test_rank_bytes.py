"""Planned weight bytes per rank equal what each rank holds after loading its slices (sum of
MLX's `nbytes`), for mixed-precision checkpoints (8-bit embeddings and head beside 4-bit
layers) and for every family's quantized variants, on 2 and 3 uneven ranks."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlx.utils import tree_flatten

from executor.loader import load_shard, read_json
from executor.tiny_models import build_model
from planner.splits import plan_for_split

CASES = [
    ("llama", "mixed", [0.7, 0.3]),
    ("llama", "mixed", [0.5, 0.3, 0.2]),
    ("qwen3_moe", "mixed", [0.5, 0.3, 0.2]),
    ("deepseek_v3", "mixed", [0.5, 0.3, 0.2]),
    ("deepseek_v3", "4bit", [0.7, 0.3]),
    ("glm4_moe", "8bit", [0.5, 0.3, 0.2]),
    ("gpt_oss", "mxfp4", [0.5, 0.3, 0.2]),
    ("minimax", "4bit", [0.7, 0.3]),
    ("mixtral", "4bit", [0.5, 0.3, 0.2]),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rank-bytes")


@pytest.mark.parametrize(
    ("family", "quant", "shares"), CASES, ids=[f"{f}-{q}-{len(s)}ranks" for f, q, s in CASES]
)
def test_planned_weights_equal_loaded_bytes(
    models: Path, family: str, quant: str, shares: list[float]
) -> None:
    model_dir = models / f"{family}-{quant}"
    if not (model_dir / "config.json").exists():
        build_model(model_dir, family, quant)
    plan = plan_for_split(read_json(model_dir / "config.json"), shares)
    for rank in plan.ranks:
        model, _, _ = load_shard(model_dir, rank)
        held = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
        planned = rank.memory_bytes.weights
        print(f"{family} {quant} rank {rank.rank}: planned {planned} B, loaded {held} B", rank)
        if rank.q_heads[0] == rank.q_heads[1]:
            # No heads: the rank drops its attention blocks, replicated parts included.
            assert held <= planned
        else:
            assert abs(held - planned) <= 0.01 * planned
