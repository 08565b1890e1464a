"""Loading a rank reads only its slices: the peak stays near the shard, not the whole model.

Each rank loads in a fresh process (peaks are per process); the bound is the issue's:
shard bytes + the largest full layer + 25%, for MLX's allocator peak and for resident memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from executor.loader import read_json
from executor.tiny_models import build_model
from planner.splits import plan_for_split
from protocol.plan import plan_json

pytestmark = pytest.mark.slow


# Sizes where one layer is well below the whole model and the process's own few MB of
# bookkeeping do not decide the outcome: ~97 MB in float32, ~55 MB at 4 bits.
SIZES = {"none": (512, 2048), "4bit": (1024, 4096)}


@pytest.mark.parametrize("quant", list(SIZES))
def test_peak_memory_while_loading_stays_near_the_shard(tmp_path: Path, quant: str) -> None:
    hidden, intermediate = SIZES[quant]
    model_dir = build_model(
        tmp_path / "model",
        "llama",
        quant,
        "float32",
        hidden_size=hidden,
        num_hidden_layers=6,
        intermediate_size=intermediate,
        head_dim=64,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 128,
    )
    plan = plan_for_split(read_json(model_dir / "config.json"), [0.7, 0.3])
    (tmp_path / "plan.json").write_text(plan_json(plan))
    model_bytes = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    for rank in (0, 1):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "executor.load_probe",
                "--model",
                str(model_dir),
                "--plan",
                str(tmp_path / "plan.json"),
                "--rank",
                str(rank),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        m = json.loads(out.stdout)
        sizes = {k: f"{v / 1e6:.1f} MB" for k, v in m.items()}
        print(f"{quant} rank {rank}: model {model_bytes / 1e6:.1f} MB", sizes)
        bound = 1.25 * (m["shard_bytes"] + m["largest_layer_bytes"])
        assert m["shard_bytes"] < 0.8 * model_bytes, "an uneven split should hold a part"
        assert m["mlx_peak_bytes"] <= bound
        assert m["rss_growth_bytes"] <= bound
