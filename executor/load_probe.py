"""How much memory loading one rank takes, against what the rank keeps.

    python -m executor.load_probe --model DIR --plan PLAN.json --rank R

Prints one JSON object: the bytes the rank holds after loading (`shard_bytes`), the largest
decoder layer of the full model (`largest_layer_bytes`), MLX's peak allocation while loading
(`mlx_peak_bytes`) and the growth of the process's peak resident set (`rss_growth_bytes`).
Run it in a fresh process: peaks are per process.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections import defaultdict
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from executor.families import split_layer_name
from executor.loader import load_shard, read_header, weight_files
from executor.stage_links import links_for
from executor.stages import StageLayout
from protocol.plan import Plan


def _peak_rss_bytes() -> int:
    status = Path("/proc/self/status")
    if status.exists():
        # VmHWM belongs to this process image; Linux's ru_maxrss survives exec and would report
        # the parent's peak (e.g. a test runner's) instead.
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes


def largest_layer_bytes(model_dir: Path) -> int:
    """Bytes of the biggest decoder layer of the unsharded checkpoint (from headers only)."""
    headers = {path: read_header(path) for path in set(weight_files(model_dir).values())}
    per_layer: dict[int, int] = defaultdict(int)
    for header in headers.values():
        for name, entry in header.items():
            index, _, _ = split_layer_name(name)
            if index is not None:
                start, end = entry["data_offsets"]
                per_layer[index] += end - start
    return max(per_layer.values(), default=0)


def probe(model_dir: Path, plan: Plan, rank: int) -> dict[str, int]:
    rank_plan = next(r for r in plan.ranks if r.rank == rank)
    links = links_for(StageLayout.of_plan(plan), rank)
    largest = largest_layer_bytes(model_dir)
    rss_before = _peak_rss_bytes()
    mx.reset_peak_memory()
    model, _, _ = load_shard(model_dir, rank_plan, links=links)
    params: list[tuple[str, mx.array]] = tree_flatten(model.parameters())  # type: ignore[assignment]
    held = sum(v.nbytes for _, v in params)
    return {
        "shard_bytes": held,
        "largest_layer_bytes": largest,
        "mlx_peak_bytes": mx.get_peak_memory(),
        "rss_growth_bytes": _peak_rss_bytes() - rss_before,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m executor.load_probe")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--plan", type=Path, required=True)
    p.add_argument("--rank", type=int, required=True)
    args = p.parse_args(argv)
    plan = Plan.model_validate_json(args.plan.read_text())
    print(json.dumps(probe(args.model, plan, args.rank)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
