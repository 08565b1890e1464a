"""A DeepSeek-V3 checkpoint that keeps `kv_b_proj` (conversions older than mlx-lm's absorbed
`embed_q`/`unembed_out`) loads to the same model, whole and as a rank's slice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from executor.loader import load_shard, read_json
from executor.tiny_models import build_model
from planner.splits import plan_for_split


def _with_kv_b_proj(src: Path, dst: Path) -> None:
    """The inverse of mlx-lm's sanitize: each layer's halves stacked back into kv_b_proj."""
    shutil.copytree(src, dst)
    weights = mx.load(str(src / "model.safetensors"))
    assert isinstance(weights, dict)
    for name in [n for n in weights if n.endswith("embed_q.weight")]:
        base = name.removesuffix("embed_q.weight")
        wk = weights.pop(name).swapaxes(-1, -2)  # heads x nope x latent
        wv = weights.pop(f"{base}unembed_out.weight")  # heads x v x latent
        kv_b = mx.concatenate([wk, wv], axis=1)
        weights[f"{base}kv_b_proj.weight"] = kv_b.reshape(-1, kv_b.shape[-1])
    mx.save_safetensors(str(dst / "model.safetensors"), weights, metadata={"format": "mlx"})


def test_kv_b_proj_checkpoint_loads_as_the_absorbed_one(tmp_path: Path) -> None:
    absorbed = build_model(tmp_path / "absorbed", "deepseek_v3")
    _with_kv_b_proj(absorbed, tmp_path / "kv_b_proj")
    config = read_json(absorbed / "config.json")
    plan = plan_for_split(config, [0.5, 0.3, 0.2])
    for rank in [None, *plan.ranks]:
        want, _, _ = load_shard(absorbed, rank)
        got, _, _ = load_shard(tmp_path / "kv_b_proj", rank)
        a, b = dict(tree_flatten(want.parameters())), dict(tree_flatten(got.parameters()))
        assert a.keys() == b.keys()
        for name in a:
            assert mx.array_equal(a[name], b[name]).item(), (rank, name)
    assert "kv_b_proj" in json.dumps(
        list(mx.load(str(tmp_path / "kv_b_proj" / "model.safetensors")))
    )
