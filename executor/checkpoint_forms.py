"""Checkpoints of multi-head latent attention that keep `kv_b_proj` on disk.

mlx-lm's DeepSeek-V3 class (also Kimi-K2's) holds `kv_b_proj` as its two absorbed halves,
`embed_q` and `unembed_out` (one matrix per head), and splits it in its `sanitize` when it
loads; conversions made before that change keep `kv_b_proj` on disk. The loader asks for the
absorbed names; these helpers say which `kv_b_proj` each comes from and build them with the
model's own `sanitize`, one layer at a time, before the rank's heads are cut out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

ABSORBED = ("embed_q", "unembed_out")
LEAVES = ("weight", "scales", "biases")
Reader = Callable[[list[str], dict[str, Path]], dict[str, mx.array]]


def absorbed_sources(files: dict[str, Path]) -> dict[str, str]:
    """Absorbed tensor name -> the `kv_b_proj` module it is made from."""
    out = {}
    for name in files:
        if not name.endswith(".kv_b_proj.weight"):
            continue
        base = name.removesuffix("kv_b_proj.weight")
        leaves = [leaf for leaf in LEAVES if f"{base}kv_b_proj.{leaf}" in files]
        for part in ABSORBED:
            for leaf in leaves:
                out[f"{base}{part}.{leaf}"] = f"{base}kv_b_proj"
    return out


def read_absorbed(
    model: nn.Module,
    wanted: list[str],
    sources: dict[str, str],
    files: dict[str, Path],
    read: Reader,
) -> dict[str, mx.array]:
    modules = sorted({sources[n] for n in wanted})
    raw = read([f"{m}.{leaf}" for m in modules for leaf in LEAVES if f"{m}.{leaf}" in files], files)
    made = model.sanitize(raw)
    return {n: made[n] for n in wanted}
