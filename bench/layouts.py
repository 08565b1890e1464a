"""Section "layouts": asymtp's choice of layout against the layouts other tools use (issue 13).

For each cluster of `bench.layout_clusters` (RDMA meshes of 2-4 uneven Macs, a Thunderbolt 4
TCP pair, Thunderbolt rings of 8/16/32, two RDMA islands joined by Ethernet, an Ethernet switch
with RDMA pairs) and three models, five layouts priced by the planner's one cost model:

* **auto**: `make_plan` with `constraints.parallelism: auto` (stages, nodes, layers and splits
  chosen by the planner);
* **tensor**: `make_plan` with `parallelism: tensor` (one stage over the nodes it picks);
* **even pipeline**: one node per stage, equal layers per node, in chain order;
* **memory pipeline**: one node per stage, layers in proportion to memory (llama.cpp
  `--tensor-split`, exo's pipeline);
* **exo equal TP**: one stage over every node, every dimension cut evenly (exo, mlx-lm).

The three baselines are priced through `planner.layouts.plan_for_layout`, with exactly the
planner's costs. Per layout: the decode estimate (ms per token) and the capacity: whether it
fits at 8k context, and the largest context the same plan holds (each rank's free budget over
its KV cache per token; capped at the model's `max_position_embeddings`). Target: auto is never
slower than any of them and fits every model any of them fits; a row where it is not is flagged.
Run alone: `python -m bench --only layouts [--quick]`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

from bench import Section, write_section
from bench.cases import model_config, request
from bench.layout_clusters import (
    CLUSTERS,
    MODELS,
    QUICK_CLUSTERS,
    QUICK_MODELS,
    Cluster,
    equal_tensor,
    even_pipeline,
    memory_pipeline,
)
from bench.layouts_plot import plot
from planner.layouts import StageLayout, plan_for_layout
from planner.plan import make_plan
from protocol.plan import Plan
from protocol.schema import PlanRequest

CONTEXT = 8192
HEADROOM = 0.1
TIME_LIMIT_S = 30.0
QUICK_TIME_LIMIT_S = 10.0
SLOWER_TOLERANCE = 1e-6  # relative: figures are rounded to the nanosecond


class Method(StrEnum):
    AUTO = "asymtp auto"
    TENSOR = "asymtp tensor"
    EVEN_PIPELINE = "even pipeline"
    MEMORY_PIPELINE = "memory pipeline"
    EQUAL_TENSOR = "exo equal TP"


BASELINES: dict[Method, Callable[[Cluster, int], list[StageLayout]]] = {
    Method.EVEN_PIPELINE: even_pipeline,
    Method.MEMORY_PIPELINE: memory_pipeline,
    Method.EQUAL_TENSOR: equal_tensor,
}


def context_held(plan: Plan, context: int, limit: int) -> int:
    """The largest context this plan's ranks hold: KV cache grows linearly with context, so
    each rank's free budget over its cache per token, the tightest rank deciding."""
    room = []
    for r in plan.ranks:
        per_token = r.memory_bytes.kv_cache / context
        if per_token > 0:
            free = r.budget_bytes - r.memory_bytes.total
            room.append(context + math.floor(free / per_token))
    return min([limit, *room])


def layout_text(plan: Plan) -> str:
    """ "one node", "tensor ×4", "pipeline 8 × 1 rank", "2 stages: 4+4 ranks, 47+47 layers"."""
    stages: dict[int, list[int]] = {}
    layers: dict[int, int] = {}
    for r in plan.ranks:
        stages.setdefault(r.stage, []).append(r.rank)
        layers[r.stage] = r.layers[1] - r.layers[0]
    if len(plan.ranks) == 1:
        return "one node"
    if len(stages) == 1:
        return f"tensor ×{len(plan.ranks)}"
    sizes = [len(v) for _, v in sorted(stages.items())]
    if set(sizes) == {1}:
        return f"pipeline {len(sizes)} × 1 rank"
    counts = [layers[s] for s in sorted(layers)]
    return (
        f"{len(sizes)} stages: {'+'.join(map(str, sizes))} ranks, "
        f"{'+'.join(map(str, counts))} layers"
    )


def outcome(plan: Plan, wall_s: float, limit: int) -> dict[str, Any]:
    e = plan.estimates
    fits = plan.feasible and e is not None
    return {
        "fits": fits,
        "decode_ms": e.decode_ms_per_token if fits and e else None,
        "tokens_per_s": e.tokens_per_s if fits and e else None,
        "context": context_held(plan, CONTEXT, limit) if fits else None,
        "layout": layout_text(plan) if fits else None,
        "ranks": len(plan.ranks),
        "time_limited": plan.solver.time_limited,
        "status": plan.status,
        "reason": None if fits else "; ".join(plan.reasons)[:300],
        "wall_s": round(wall_s, 3),
    }


def priced(fn: Callable[[], Plan], limit: int) -> dict[str, Any]:
    """The outcome of one planner call; a planner error is recorded (and flagged), not hidden
    and not allowed to stop the other rows."""
    started = time.perf_counter()
    try:
        plan = fn()
    except (RuntimeError, ValueError) as e:
        wall_s = round(time.perf_counter() - started, 3)
        error = f"{type(e).__name__}: {e}"
        return {"fits": False, "error": error, "time_limited": False, "wall_s": wall_s}
    return outcome(plan, time.perf_counter() - started, limit)


def run_case(
    cluster: Cluster, model: str, config: dict[str, Any], limit_s: float
) -> dict[str, Any]:
    def req(parallelism: str) -> PlanRequest:
        return request(
            cluster.topology(),
            config,
            context_tokens=CONTEXT,
            headroom=HEADROOM,
            parallelism=parallelism,
            time_limit_s=limit_s,
        )

    limit = int(config.get("max_position_embeddings") or 1 << 30)
    layers = int(config["num_hidden_layers"])
    results: dict[str, Any] = {}
    for method, mode in ((Method.AUTO, "auto"), (Method.TENSOR, "tensor")):
        results[method] = priced(partial(make_plan, req(mode)), limit)
    fixed = req("auto")
    for method, layout in BASELINES.items():
        stages = layout(cluster, layers)
        results[method] = priced(partial(plan_for_layout, fixed, stages), limit)
    return {
        "cluster": cluster.name,
        "family": cluster.family,
        "nodes": len(cluster.macs),
        "model": model,
        "context_limit": limit,
        "methods": results,
        "flags": flags(results),
    }


def flags(results: dict[str, Any]) -> list[str]:
    """Where auto misses the target: slower than, or not fitting where, another layout does."""
    auto = results[Method.AUTO]
    out = [f"{m}: planner error" for m, r in results.items() if r.get("error")]
    for method, r in results.items():
        if method == Method.AUTO or not r["fits"]:
            continue
        if not auto["fits"]:
            out.append(f"{method} fits, auto does not")
        elif auto["decode_ms"] > r["decode_ms"] * (1 + SLOWER_TOLERANCE):
            out.append(
                f"auto slower than {method} ({auto['decode_ms']:.3f} > {r['decode_ms']:.3f} ms)"
            )
    return out


def tokens(n: int) -> str:
    return f"{n / 1024:.0f}k" if n >= 1024 else str(n)


def cell(r: dict[str, Any], limit: int) -> str:
    if r.get("error"):
        return "planner error"
    if not r["fits"]:
        return "does not fit"
    held = "max" if r["context"] >= limit else tokens(r["context"])
    return f"{r['decode_ms']:.1f} ms · {held}"


def context_notes(results: dict[str, Any]) -> list[str]:
    """Layouts whose plan holds a longer context than auto's (auto plans for speed at the
    requested context; not a miss of the target, but worth knowing)."""
    auto = results[Method.AUTO]
    if not auto["fits"]:
        return []
    return [
        f"{method} holds {tokens(r['context'])} tokens, auto's plan {tokens(auto['context'])}"
        for method, r in results.items()
        if r["fits"] and r["context"] > auto["context"]
    ]


def check_text(flags: list[str], time_limited: bool) -> str:
    limit = ["auto stopped at its time limit"] if time_limited else []
    if not flags:
        return "ok (time limit)" if time_limited else "ok"
    return "**" + "; ".join([*flags, *limit]) + "**"


def table_rows(cases: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for c in cases:
        m = c["methods"]
        auto = m[Method.AUTO]
        rows.append(
            [
                c["cluster"],
                c["model"],
                *(cell(m[method], c["context_limit"]) for method in Method),
                auto.get("layout") or "—",
                check_text(c["flags"], auto["time_limited"]),
                "; ".join(context_notes(m)) or "—",
            ]
        )
    return rows


def speedups(cases: list[dict[str, Any]]) -> dict[str, float | None]:
    """Geometric mean of (method's decode ms / auto's) over the rows where both fit."""
    out: dict[str, float | None] = {}
    for method in list(Method)[1:]:
        ratios = [
            c["methods"][method]["decode_ms"] / c["methods"][Method.AUTO]["decode_ms"]
            for c in cases
            if c["methods"][method]["fits"] and c["methods"][Method.AUTO]["fits"]
        ]
        out[method] = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
    return out


def run(results_dir: Path, quick: bool = False) -> Section:
    clusters = [c for c in CLUSTERS if not quick or c.name in QUICK_CLUSTERS]
    models = [m for m in MODELS if not quick or m[0] in QUICK_MODELS]
    limit_s = QUICK_TIME_LIMIT_S if quick else TIME_LIMIT_S
    cases = []
    for cluster in clusters:
        for name, file in models:
            case = run_case(cluster, name, model_config(file), limit_s)
            cases.append(case)
            walls = sum(r["wall_s"] for r in case["methods"].values())
            print(f"  {cluster.name}, {name}: {walls:.1f} s; {case['flags'] or 'ok'}", flush=True)
    flagged = [c for c in cases if c["flags"]]
    gains = speedups(cases)
    figure = plot(results_dir, cases, [str(m) for m in Method])
    result: Section = {
        "section": "layouts",
        "title": "Layouts: asymtp auto against tensor-only, pipelines and exo's equal split",
        "headline": [
            {
                "metric": "rows flagged: auto slower or fitting less, or a layout not priced",
                "value": len(flagged),
                "unit": "",
            },
            {
                "metric": "rows where auto stopped at its time limit (best plan found)",
                "value": sum(c["methods"][Method.AUTO]["time_limited"] for c in cases),
                "unit": "",
            },
            *(
                {"metric": f"{m} decode time / auto's (geomean)", "value": v, "unit": "×"}
                for m, v in gains.items()
                if v is not None
            ),
        ],
        "tables": [
            {
                "title": "Decode estimate (ms/token) · largest context the plan holds, per layout",
                "columns": [
                    "cluster",
                    "model",
                    *(str(m) for m in Method),
                    "auto's layout",
                    "check",
                    "longer context than auto",
                ],
                "rows": table_rows(cases),
            }
        ],
        "figures": [figure],
        "notes": notes(cases, limit_s),
        "data": {"context": CONTEXT, "headroom": HEADROOM, "cases": cases},
    }
    write_section(results_dir, result)
    return result


def notes(cases: list[dict[str, Any]], limit_s: float) -> list[str]:
    out = [
        f"Every figure is the planner's cost model (not a measurement): {CONTEXT // 1024}k "
        f"context, {HEADROOM:.0%} headroom, planner time limit {limit_s:g} s. A cell is the "
        "decode estimate and the largest context the same plan holds (each rank's free budget "
        "over its KV cache per token; *max*: the model's `max_position_embeddings`); "
        "re-planning for a longer context may hold more. *ok (time limit)*: auto stopped at "
        "its time limit with the best plan found, no slower than any baseline. Baselines: *even pipeline* = one node "
        "per stage, equal layers, in chain order (ring order; island after island; pair after "
        "pair); *memory pipeline* = the same with layers in proportion to memory (llama.cpp "
        "`--tensor-split`, exo's pipeline); *exo equal TP* = one stage over every node, every "
        "dimension cut evenly. Stage 0 holds the embeddings and the output head, so a pipeline "
        "of S stages pays S activation transfers per token (the contract of `protocol/plan.py`).",
        "Clusters (`bench/layout_clusters.py`): Macs with uneven memory and bandwidth. RDMA "
        "meshes, islands and the switch: M3 Ultra 192 GB 819 GB/s, M4 Max 128 GB 546 GB/s, M4 "
        "Pro 64 and 48 GB 273 GB/s (four per island, repeated); the TB4 pair: M1 Ultra 128 GB "
        "800 GB/s + M2 Max 96 GB 400 GB/s (no RDMA); the rings: M4 Max 128, M4 Pro 64, M2 Max "
        "96, M4 Pro 48, repeated. Links: `rdma` (Thunderbolt 5 RDMA), `thunderbolt` (TCP over "
        "Thunderbolt, 40 Gb/s default), `ethernet` (10 Gb/s default).",
    ]
    for c in cases:
        for f in c["flags"]:
            out.append(f"**Flagged**: {c['cluster']}, {c['model']}: {f}.")
        for method, r in c["methods"].items():
            if r.get("error"):
                out.append(f"Planner error, {c['cluster']}, {c['model']}, {method}: {r['error']}")
    return out
