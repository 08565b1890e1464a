"""Section "methods": asymtp vs the equal split vs exo's asymmetric-TP ratio, on real pairs.

Three ways to place a tensor-parallel model on the same clusters, judged by the same memory
rule (weights + KV cache for 8k tokens + 1 GiB runtime overhead ≤ 90% of each node's memory):

* **asymtp** — `make_plan` with `sharding: asymmetric`;
* **equal split** — today's even split (MLX `shard_linear`, mlx-lm, exo), the planner's
  `planner.equal.equal_shares` laid out with `planner.layout.rank_plans`, so its per-node
  demand is shown even where it overflows;
* **exo ratio** — exo's open asymmetric-TP proposal (exo-explore/exo PR #1821,
  `find_valid_ratios` in `src/exo/worker/engines/mlx/asymmetric_parallel.py`): two nodes
  only, one ratio `r = n/d` (d ∈ {2, 4, 8, 16, 32}, 0.5 < r ≤ 0.95) for every sharded tensor,
  the one nearest the larger node's memory fraction among those that split the query heads,
  KV heads, hidden size, linear-attention heads and MoE intermediate size into whole
  numbers (multiples of 8 where the dimension exceeds the quantization group). With 2 KV
  heads no such r exists; with 4 only r = 3/4 does. Re-implemented here, not copied.

Then, for three model families grown in layers at fixed width, the largest model (GB of
weights) each method fits on each cluster, by binary search (≤ 12 plan calls).
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import Section, figure_file, write_section
from bench.cases import deploy_topology, gb, model_config, request
from bench.plotting import METHOD_COLORS, new_figure, save
from planner.calibration import read_ms
from planner.costs import UNITS, UnitCosts, unit_costs
from planner.equal import equal_shares
from planner.layout import rank_plans
from planner.plan import Cluster, make_plan
from planner.problem import budget_bytes
from protocol.config_reader import read_config
from protocol.connectivity import full_mesh
from protocol.model_spec import ModelSpec
from protocol.schema import PlanRequest

CONTEXT = 8192
HEADROOM = 0.1
PLAN_TIME_LIMIT_S = 2.0  # feasibility is found in the first (grouped) phase, well within this
MAX_SEARCH_CALLS = 12
LAYER_CAP = 1024  # the config reader refuses more layers than this

ASYM, EQUAL, EXO = "asymtp (asymmetric)", "equal split", "exo ratio (PR #1821)"
METHODS = (ASYM, EQUAL, EXO)


@dataclass(frozen=True)
class Testbed:
    key: str
    label: str
    short: str
    topology: dict[str, Any]
    model: str  # the model shown in the per-node memory figure
    model_file: str


def _three_node() -> dict[str, Any]:
    nodes = [
        {"id": "m1-ultra", "memory_gb": 192, "bandwidth_gbps": 800, "chip": "M1 Ultra"},
        {"id": "m5-max", "memory_gb": 128, "bandwidth_gbps": 614, "chip": "M5 Max"},
        {"id": "laptop-48", "memory_gb": 48, "bandwidth_gbps": 273, "chip": "M4 Pro"},
    ]
    ids = [n["id"] for n in nodes]
    links = full_mesh(ids)
    return {"nodes": nodes, "links": links}


def clusters() -> list[Testbed]:
    return [
        Testbed(
            "pair-128-48",
            "M5 Max 128 GB + 48 GB laptop (seed pair)",
            "128 + 48",
            deploy_topology("m5max-128-laptop-48.yaml"),
            "Qwen3-235B-A22B 4-bit",
            "qwen3-235b-a22b-4bit.json",
        ),
        Testbed(
            "pair-128-192",
            "M5 Max 128 GB + M1 Ultra 192 GB (seed pair)",
            "128 + 192",
            deploy_topology("m5max-128-m1ultra-192.yaml"),
            "Qwen3-235B-A22B 4-bit",
            "qwen3-235b-a22b-4bit.json",
        ),
        Testbed(
            "three-node",
            "3 nodes: M1 Ultra 192 + M5 Max 128 + 48 GB laptop, RDMA mesh",
            "192 + 128 + 48",
            _three_node(),
            "Llama-3.1-70B bf16",
            "llama-3.1-70b-bf16.json",
        ),
        Testbed(
            "four-node",
            "4 nodes: M2 Ultra 192 + M5 Max 128 + M4 Pro 64 + M3 Max 48 (deploy/examples/mixed-4-node.yaml)",
            "192 + 128 + 64 + 48",
            deploy_topology("mixed-4-node.yaml"),
            "Llama-3.1-70B bf16",
            "llama-3.1-70b-bf16.json",
        ),
    ]


REAL_MODELS = (
    ("Qwen3-235B-A22B 4-bit", "qwen3-235b-a22b-4bit.json"),
    ("Llama-3.1-70B bf16", "llama-3.1-70b-bf16.json"),
    ("Qwen3-Next-80B 8-bit", "qwen3-next-80b-a3b-8bit.json"),
)

# (label, base config, layers per step): grown in layers at the base model's width
FAMILIES = (
    ("dense, Llama-3.1-70B width, bf16", "llama-3.1-70b-bf16.json", 1),
    ("MoE, Qwen3-235B-A22B width, 4-bit", "qwen3-235b-a22b-4bit.json", 1),
    ("hybrid, Qwen3-Next-80B width (2 KV heads), 8-bit", "qwen3-next-80b-a3b-8bit.json", 4),
    # The models people build Mac clusters for (issue 12), at their published widths.
    ("MLA MoE, DeepSeek-V3.1 width, 4-bit", "deepseek-v3.1-4bit.json", 2),
    ("MLA MoE, Kimi-K2 width (64 heads), 4-bit", "kimi-k2-instruct-4bit.json", 2),
    ("MoE, GLM-4.6 width, 4-bit", "glm-4.6-4bit.json", 2),
    ("MoE, gpt-oss-120b width, MXFP4 experts", "gpt-oss-120b.json", 2),
    ("MoE, MiniMax-M2 width, 4-bit", "minimax-m2-4bit.json", 2),
)


# ---- exo's ratio rule ------------------------------------------------------------------


def exo_ratio(spec: ModelSpec, larger_fraction: float, nodes: int) -> tuple[float | None, str]:
    """The ratio exo's proposal gives the larger node, or None and why."""
    if nodes != 2:
        return None, f"exo's proposal handles 2 nodes only ({nodes} here)"
    dims = [spec.q_heads, spec.kv_heads, spec.hidden]
    if spec.lin_layers:
        dims += [spec.lin_v_heads, spec.lin_k_heads]
    if spec.experts and spec.moe_intermediate:
        dims.append(spec.moe_intermediate)
    group = spec.quant.group_size if spec.quant else 64
    best: tuple[float, float] | None = None  # (distance, ratio)
    for denom in (2, 4, 8, 16, 32):
        for numer in range(1, denom):
            r = numer / denom
            if r <= 0.5 or r > 0.95:
                continue
            ok = True
            for d in dims:
                if d * numer % denom:
                    ok = False
                    break
                a = d * numer // denom
                b = d - a
                if a <= 0 or b <= 0 or (d > group and (a % 8 or b % 8)):
                    ok = False
                    break
            if ok and (best is None or abs(r - larger_fraction) < best[0]):
                best = (abs(r - larger_fraction), r)
    if best is None:
        return None, (
            f"no ratio n/2^k in (0.5, 0.95] splits {spec.kv_heads} KV heads, "
            f"{spec.q_heads} query heads and the other dimensions into whole numbers"
        )
    return best[1], f"ratio {best[1]:g} (memory fraction {larger_fraction:.3f})"


# ---- per-node memory of each method ------------------------------------------------------


def _cache_total(costs: UnitCosts) -> int:
    return sum(costs.cache[u] * costs.total_units[u] for u in UNITS)


def _sharded_read(costs: UnitCosts) -> float:
    return costs.sharded_read


def _node_row(node_id: str, budget: int, weights: int, kv: int, overhead: int) -> dict[str, Any]:
    total = weights + kv + overhead
    return {
        "node": node_id,
        "budget_gb": round(gb(budget), 2),
        "used_gb": round(gb(total), 2),
        "weights_gb": round(gb(weights), 2),
        "kv_gb": round(gb(kv), 2),
        "fits": total <= budget,
    }


def method_asym(req: PlanRequest) -> dict[str, Any]:
    plan = make_plan(req.model_copy(update={"constraints": _constraints(req, "asymmetric")}))
    budgets = {n.id: budget_bytes(n, HEADROOM) for n in req.topology.nodes}
    if not plan.feasible or plan.estimates is None:
        return {"exists": False, "fits": False, "why": "; ".join(plan.reasons[:2]), "nodes": []}
    by_node = {r.node_id: r for r in plan.ranks}
    rows = []
    for n in req.topology.nodes:
        r = by_node.get(n.id)
        if r is None:
            rows.append(_node_row(n.id, budgets[n.id], 0, 0, 0) | {"unused": True})
        else:
            m = r.memory_bytes
            rows.append(_node_row(n.id, budgets[n.id], m.weights, m.kv_cache, m.overhead))
    return {
        "exists": True,
        "fits": True,
        "why": f"status {plan.status}, {len(plan.ranks)} ranks",
        "decode_ms": plan.estimates.decode_ms_per_token,
        "nodes": rows,
    }


def method_equal(req: PlanRequest, spec: ModelSpec, costs: UnitCosts) -> dict[str, Any]:
    c = req.constraints
    nodes = {n.id: n for n in req.topology.nodes}
    ids = sorted(nodes)
    shares, reasons = equal_shares(spec, costs, ids)
    if not shares:
        return {"exists": False, "fits": False, "why": "; ".join(reasons), "nodes": []}
    cluster = Cluster.of(req, spec)
    ring = cluster.ring(ids)
    by_id = {s.node_id: s for s in shares}
    ranks = rank_plans(spec, costs, [by_id[n] for n in ring], nodes, c.headroom, c.overhead_bytes)
    by_node = {r.node_id: r for r in ranks}
    rows = []
    for n in req.topology.nodes:
        m = by_node[n.id].memory_bytes
        rows.append(_node_row(n.id, by_node[n.id].budget_bytes, m.weights, m.kv_cache, m.overhead))
    fits = all(r["fits"] for r in rows)
    decode = max(r.decode_ms for r in ranks) + cluster.allreduce_ms(ring)
    over = [r for r in rows if not r["fits"]]
    why = (
        "fits"
        if fits
        else "; ".join(
            f"{r['node']} needs {r['used_gb']:.1f} of {r['budget_gb']:.1f} GB" for r in over
        )
    )
    return {
        "exists": True,
        "fits": fits,
        "why": why,
        "decode_ms": round(decode, 3) if fits else None,
        "nodes": rows,
    }


def method_exo(req: PlanRequest, spec: ModelSpec, costs: UnitCosts) -> dict[str, Any]:
    c = req.constraints
    nodes = list(req.topology.nodes)
    total = sum(n.usable_bytes for n in nodes)
    larger = max(nodes, key=lambda n: (n.usable_bytes, n.bandwidth_gbps))
    r, why = exo_ratio(spec, larger.usable_bytes / total, len(nodes))
    if r is None:
        return {"exists": False, "fits": False, "why": why, "nodes": [], "ratio": None}
    cache = _cache_total(costs)
    rows, compute = [], 0.0
    for n in nodes:
        share = r if n.id == larger.id else 1 - r
        weights = round(costs.replicated_weight + share * costs.sharded_weight)
        kv = round(share * cache) + costs.replicated_cache  # MLA's latent cache: whole
        rows.append(_node_row(n.id, budget_bytes(n, c.headroom), weights, kv, c.overhead_bytes))
        read = costs.replicated_read + share * _sharded_read(costs)
        compute = max(compute, read_ms(read, n.bandwidth_gbps))
    fits = all(x["fits"] for x in rows)
    cluster = Cluster.of(req, spec)
    decode = (
        compute + cluster.fixed_us / 1e3 + cluster.allreduce_ms(cluster.ring([n.id for n in nodes]))
    )
    if not fits:
        over = [x for x in rows if not x["fits"]]
        why += "; " + "; ".join(
            f"{x['node']} needs {x['used_gb']:.1f} of {x['budget_gb']:.1f} GB" for x in over
        )
    return {
        "exists": True,
        "fits": fits,
        "why": why,
        "decode_ms": round(decode, 3) if fits else None,
        "nodes": rows,
        "ratio": r,
    }


def _constraints(req: PlanRequest, sharding: str) -> Any:
    return req.constraints.model_copy(
        update={"sharding": sharding, "time_limit_s": PLAN_TIME_LIMIT_S}
    )


def compare(cl: Testbed, model_name: str, config: dict[str, Any]) -> dict[str, Any]:
    req = request(cl.topology, config, context_tokens=CONTEXT, headroom=HEADROOM)
    spec = read_config(config)
    costs = unit_costs(spec, CONTEXT)
    return {
        "cluster": cl.key,
        "model": model_name,
        "weights_gb": round(gb(costs.total_weight), 2),
        ASYM: method_asym(req),
        EQUAL: method_equal(req, spec, costs),
        EXO: method_exo(req, spec, costs),
    }


# ---- largest model that fits ---------------------------------------------------------------


def grown(config: dict[str, Any], layers: int) -> dict[str, Any]:
    out = copy.deepcopy(config)
    out["num_hidden_layers"] = layers
    kinds = out.get("layer_types")
    if isinstance(kinds, list):  # gpt-oss: keep its sliding/full pattern over the new depth
        out["layer_types"] = [kinds[i % len(kinds)] for i in range(layers)]
    return out


def _fits(method: str, cl: Testbed, config: dict[str, Any], flags: list[str]) -> bool:
    req = request(cl.topology, config, context_tokens=CONTEXT, headroom=HEADROOM)
    if method == EXO:
        spec = read_config(config)
        return bool(method_exo(req, spec, unit_costs(spec, CONTEXT))["fits"])
    sharding = "asymmetric" if method == ASYM else "equal"
    plan = make_plan(req.model_copy(update={"constraints": _constraints(req, sharding)}))
    if plan.solver.time_limited:
        flags.append(f"{config['num_hidden_layers']} layers: solver hit its time limit")
    return plan.feasible


def _fits_steps(
    method: str, cl: Testbed, base: dict[str, Any], step: int, flags: list[str], k: int
) -> bool:
    return _fits(method, cl, grown(base, k * step), flags)


def largest(
    fits: Callable[[int], bool], hi: int, max_calls: int = MAX_SEARCH_CALLS
) -> tuple[int, int]:
    """Largest m in [0, hi) with fits(m), assuming fits is monotone, fits(0) and not fits(hi).
    Returns (m, calls)."""
    lo, calls = 0, 0
    while hi - lo > 1 and calls < max_calls:
        mid = (lo + hi) // 2
        calls += 1
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, calls


def largest_for(cl: Testbed, family: tuple[str, str, int]) -> dict[str, Any]:
    label, file, step = family
    base = model_config(file)
    budgets = sum(
        budget_bytes(n, HEADROOM)
        for n in request(cl.topology, base, context_tokens=CONTEXT).topology.nodes
    )
    one = unit_costs(read_config(grown(base, step)), CONTEXT)
    two = unit_costs(read_config(grown(base, 2 * step)), CONTEXT)
    per_step = (two.total_weight + _cache_total(two)) - (one.total_weight + _cache_total(one))
    # Beyond this many steps even the per-step bytes exceed every budget together.
    hi = min(math.ceil(budgets / per_step) + 1, LAYER_CAP // step)
    out: dict[str, Any] = {
        "cluster": cl.key,
        "family": label,
        "budget_total_gb": round(gb(budgets), 1),
    }
    for method in METHODS:
        flags: list[str] = []
        started = time.perf_counter()
        m, calls = largest(functools.partial(_fits_steps, method, cl, base, step, flags), hi)
        layers = m * step
        weights = unit_costs(read_config(grown(base, layers)), CONTEXT).total_weight if m else 0
        why = ""
        if m == 0:
            req = request(cl.topology, grown(base, step), context_tokens=CONTEXT)
            spec = read_config(req.model)
            costs = unit_costs(spec, CONTEXT)
            if method == EXO:
                why = method_exo(req, spec, costs)["why"]
            elif method == EQUAL:
                why = method_equal(req, spec, costs)["why"]
        out[method] = {
            "layers": layers,
            "weights_gb": round(gb(weights), 1),
            "calls": calls,
            "seconds": round(time.perf_counter() - started, 2),
            "flags": flags,
            "why_none": why,
        }
    return out


# ---- plots ---------------------------------------------------------------------------------


def plot_memory(comparisons: list[dict[str, Any]], cls: list[Testbed], path: Path) -> None:
    fig = new_figure(13.0, 9.0)
    axes = fig.subplots(2, 2).flatten()
    for ax, cl in zip(axes, cls):
        comp = next(c for c in comparisons if c["cluster"] == cl.key and c["model"] == cl.model)
        node_ids = [n["id"] for n in cl.topology["nodes"]]
        width = 0.26
        missing = []
        for j, method in enumerate(METHODS):
            res = comp[method]
            if not res["nodes"]:
                missing.append(f"{method}: none — {_short_why(res['why'])}")
                continue
            rows = {r["node"]: r for r in res["nodes"]}
            xs = [i + (j - 1) * width for i in range(len(node_ids))]
            heights = [rows[n]["used_gb"] for n in node_ids]
            bars = ax.bar(
                xs,
                heights,
                width * 0.95,
                color=METHOD_COLORS[method],
                label=method + ("" if res["fits"] else " — does not fit"),
                edgecolor=["red" if not rows[n]["fits"] else "none" for n in node_ids],
                linewidth=1.5,
                hatch=None if res["fits"] else "//",
            )
            for b, h in zip(bars, heights):
                ax.text(
                    b.get_x() + b.get_width() / 2,
                    h,
                    f"{h:.0f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        budget = {r["node"]: r["budget_gb"] for r in comp[EQUAL]["nodes"] or comp[ASYM]["nodes"]}
        for i, n in enumerate(node_ids):
            ax.hlines(
                budget[n],
                i - 1.5 * width,
                i + 1.5 * width,
                colors="black",
                linewidth=2,
                label="budget (90% of memory)" if i == 0 else None,
            )
        labels = [
            f"{n['id']}\n{n['memory_gb']} GB, {n['bandwidth_gbps']:g} GB/s"
            for n in cl.topology["nodes"]
        ]
        ax.set_xticks(range(len(node_ids)), labels, fontsize=8)
        ax.set_ylabel("memory per node (GB): weights + KV cache + overhead")
        ax.set_title(f"{cl.short} GB — {cl.model} ({comp['weights_gb']:.0f} GB)", fontsize=10)
        top = max([r["used_gb"] for m in METHODS for r in comp[m]["nodes"]] + list(budget.values()))
        ax.set_ylim(0, top * (1.3 + 0.12 * len(missing)))
        if missing:
            ax.text(
                0.01,
                0.98,
                "\n".join(_wrap(t, 62) for t in missing),
                transform=ax.transAxes,
                fontsize=7,
                va="top",
                color="dimgray",
            )
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(
        "Per-node memory for the same model: asymtp vs equal split vs exo's ratio (8k context)"
    )
    save(fig, path)


def _short_why(why: str) -> str:
    first = why.split("; ")[0].removeprefix("equal split: ")
    return first


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines)


def plot_largest(results: list[dict[str, Any]], cls: list[Testbed], path: Path) -> None:
    labels = list(dict.fromkeys(r["family"] for r in results))
    fig = new_figure(5.0 * len(labels) + 0.5, 5.8)
    axes = fig.subplots(1, len(labels), sharey=True, squeeze=False)[0]
    width = 0.26
    for ax, label in zip(axes, labels):
        rows = [
            next(r for r in results if r["cluster"] == cl.key and r["family"] == label)
            for cl in cls
        ]
        for j, method in enumerate(METHODS):
            xs = [i + (j - 1) * width for i in range(len(cls))]
            hs = [r[method]["weights_gb"] for r in rows]
            bars = ax.bar(xs, hs, width * 0.95, color=METHOD_COLORS[method], label=method)
            for b, h in zip(bars, hs):
                ax.text(
                    b.get_x() + b.get_width() / 2,
                    h,
                    f"{h:.0f}" if h else "none",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=0 if h else 90,
                )
        ax.scatter(
            range(len(cls)),
            [r["budget_total_gb"] for r in rows],
            marker="_",
            s=900,
            color="black",
            label="Σ budgets (90% of memory)",
            zorder=3,
        )
        ax.set_xticks(range(len(cls)), [f"{cl.short}\nGB" for cl in cls], fontsize=8)
        ax.set_xlabel("cluster (memory per node, GB)")
        ax.set_title(label, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        top = max(r["budget_total_gb"] for r in rows)
        ax.set_ylim(0, top * 1.12)
    axes[0].set_ylabel("largest model that fits (GB of weights)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, names, loc="outside lower center", ncol=4 if len(labels) > 1 else 2, fontsize=8
    )
    fig.suptitle("Largest model each method fits\n(grown in layers at fixed width; 8k context)")
    save(fig, path)


# ---- the section ---------------------------------------------------------------------------


def _fmt_gb(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def run(results_dir: Path, quick: bool = False) -> Section:
    cls = clusters()
    comparisons = []
    for cl in cls:
        for name, file in REAL_MODELS:
            comparisons.append(compare(cl, name, model_config(file)))
    print(f"  methods: {len(comparisons)} placements compared", flush=True)

    families = FAMILIES[:1] if quick else FAMILIES
    largest_rows = []
    for fam in families:
        for cl in cls:
            row = largest_for(cl, fam)
            largest_rows.append(row)
            print(
                f"  methods: largest {fam[0]} on {cl.short}: "
                + ", ".join(f"{m} {row[m]['weights_gb']:.0f} GB" for m in METHODS),
                flush=True,
            )

    mem_rows = []
    for comp in comparisons:
        cl = next(c for c in cls if c.key == comp["cluster"])
        for method in METHODS:
            res = comp[method]
            per_node = " / ".join(
                f"{r['used_gb']:.1f}{'' if r['fits'] else '!'} of {r['budget_gb']:.0f}"
                for r in res["nodes"]
            )
            mem_rows.append(
                [
                    cl.short,
                    comp["model"],
                    method,
                    "yes" if res["fits"] else "no",
                    per_node or "—",
                    _fmt_gb(res.get("decode_ms")),
                    res["why"]
                    if not res["fits"]
                    else (f"ratio {res['ratio']:g}" if res.get("ratio") else ""),
                ]
            )

    largest_table = []
    for row in largest_rows:
        cl = next(c for c in cls if c.key == row["cluster"])
        cells: list[Any] = [cl.short, row["family"], f"{row['budget_total_gb']:.0f}"]
        for method in METHODS:
            r = row[method]
            cells.append(f"{r['weights_gb']:.1f} ({r['layers']} layers)" if r["layers"] else "none")
        notes = [row[m]["why_none"] for m in METHODS if row[m]["why_none"]]
        cells.append(_wrap("; ".join(dict.fromkeys(notes)), 10_000) if notes else "")
        largest_table.append(cells)

    mem_png, mem_rel = figure_file(results_dir, "methods_memory_per_node.png")
    big_png, big_rel = figure_file(results_dir, "methods_largest_model.png")
    plot_memory(comparisons, cls, mem_png)
    plot_largest(largest_rows, cls, big_png)

    def largest_of(cluster: str, family: str) -> str:
        row = next(r for r in largest_rows if r["cluster"] == cluster and r["family"] == family)
        return " / ".join(
            f"{row[m]['weights_gb']:.0f}" if row[m]["layers"] else "none" for m in METHODS
        )

    dense = FAMILIES[0][0]
    headline = [
        {
            "metric": f"largest dense bf16 model on {cl.short} GB: asymtp / equal / exo ratio",
            "value": largest_of(cl.key, dense),
            "unit": "GB",
        }
        for cl in cls
    ]
    hybrid = FAMILIES[2][0]
    if any(r["family"] == hybrid for r in largest_rows):
        headline += [
            {
                "metric": f"largest 2-KV-head hybrid (Qwen3-Next width, 8-bit) on {cl.short} GB: "
                "asymtp / equal / exo ratio",
                "value": largest_of(cl.key, hybrid),
                "unit": "GB",
            }
            for cl in cls[:2]
        ]
    seed = next(
        c
        for c in comparisons
        if c["cluster"] == "pair-128-48" and c["model"] == "Qwen3-235B-A22B 4-bit"
    )
    headline.insert(
        0,
        {
            "metric": "Qwen3-235B-A22B 4-bit on 128 + 48 GB fits: asymtp / equal / exo ratio",
            "value": " / ".join("yes" if seed[m]["fits"] else "no" for m in METHODS),
            "unit": "",
        },
    )

    result: Section = {
        "section": "methods",
        "title": "Methods: asymtp vs equal split vs exo's asymmetric-TP ratio",
        "headline": headline,
        "tables": [
            {
                "title": "Per-node memory of the real models (GB used of budget per node, `!` = over budget)",
                "columns": [
                    "cluster (GB)",
                    "model",
                    "method",
                    "fits",
                    "per node: used of budget (GB)",
                    "est. decode (ms/token)",
                    "note",
                ],
                "rows": mem_rows,
            },
            {
                "title": "Largest model each method fits (GB of weights; layers of the grown model)",
                "columns": ["cluster (GB)", "family", "Σ budgets (GB)", *METHODS, "why none"],
                "rows": largest_table,
            },
        ],
        "figures": [
            {
                "file": mem_rel,
                "caption": "Memory per node (weights + KV cache for 8k tokens + 1 GiB overhead) for each method on each cluster, against each node's budget (black bar, 90% of memory). Hatched bars with red edges do not fit; a method with no bars has no valid split there (reason in the panel).",
            },
            {
                "file": big_rel,
                "caption": "Largest model each method fits, found by binary search over the layer count of each family at fixed width; the black dash is the sum of the nodes' budgets.",
            },
        ],
        "notes": [
            "Clusters: the seed's pairs as in `deploy/examples/m5max-128-laptop-48.yaml` (M5 Max "
            "128 GB 614 GB/s + M4 Pro 48 GB 273 GB/s, Thunderbolt) and "
            "`deploy/examples/m5max-128-m1ultra-192.yaml` (+ M1 Ultra 192 GB 800 GB/s, RDMA); a 3-node "
            "mix of those three machines on an RDMA mesh; `deploy/examples/mixed-4-node.yaml`. All at "
            "8k context and 10% headroom (the M1 Ultra example file asks for 32k; 8k here so every "
            "cluster is judged alike).",
            "**exo's ratio, as implemented here.** Source: exo's open asymmetric-TP pull request, "
            'exo-explore/exo #1821 ("feat: asymmetric tensor parallelism for heterogeneous '
            'clusters": "a ratio solver that finds valid split points where all dimensions … '
            'divide cleanly"), whose solver is `find_valid_ratios` in '
            "`src/exo/worker/engines/mlx/asymmetric_parallel.py` (read at exo-explore/exo revision "
            "201ade31; the related PR #2064 adds the same module for Qwen3.5 pairs). The rule: 2 nodes only; candidate ratios n/d for d in 2, 4, 8, 16, 32 with "
            "0.5 < r ≤ 0.95; a candidate is valid when, for each of query heads, KV heads, hidden "
            "size, linear-attention value and key heads (hybrid models) and MoE intermediate size "
            "(MoE models), d·r is a whole number that leaves both sides > 0, and both sides are "
            "multiples of 8 when the dimension exceeds the quantization group size (64 when "
            "unquantized); the valid ratio nearest the first node's memory fraction wins. The "
            "larger node is taken as that first node (the PR's 128 + 48 GB example gives it 75%). "
            "Every sharded tensor — attention, KV heads, dense FFN, every expert's intermediate "
            "dimension — is split by that one ratio, so the node holds r × sharded weights and r × "
            "the KV cache, plus the replicated embeddings/norms/routers and the same 1 GiB overhead. "
            "Another stored revision of that file (41fe2c31) leaves KV heads out of the check and "
            "replicates `k_proj`/`v_proj` on both nodes; the one used here puts KV heads in the "
            "check, which is why 2-KV-head models (Qwen3-Next) get no ratio at all and 4-KV-head "
            "models (Qwen3-235B) only 3/4, as `../shared/README.md` describes the proposal. exo's "
            "module only shards Qwen3.5/Qwen3-Next layers; the rule is applied here to every model "
            "as if it sharded them all the same way.",
            "Fit is judged by the same rule for every method (weights + KV cache + overhead ≤ 90% "
            "of memory per node). exo itself checks only that the cluster's total free memory "
            "covers the model and uses the equal split whenever that fits, so in exo a 'fits' here "
            "could still fail at load time, and a 'does not fit' could be attempted.",
            "*Largest model*: each family keeps its base model's width (heads, hidden size, FFN / "
            "experts, quantization) and grows in layers (Qwen3-Next in steps of 4, keeping its 3:1 "
            "linear/full attention pattern). Binary search over the layer count, at most "
            f"{MAX_SEARCH_CALLS} calls per method and cluster; asymtp and the equal split are "
            f"judged by `make_plan` (`sharding: asymmetric` / `equal`, time limit "
            f"{PLAN_TIME_LIMIT_S:g} s), exo's ratio by the rule above. Sizes are weight bytes as MLX "
            "holds them (decimal GB).",
            "Estimated decode time per token is the planner's cost model for all three (slowest "
            "rank's bytes ÷ its memory bandwidth + ring all-reduce), not a measurement.",
        ],
        "data": {"comparisons": comparisons, "largest": largest_rows},
    }
    write_section(results_dir, result)
    return result
