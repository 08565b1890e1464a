"""Section "planner": solve time against node count, and plan quality against bounds.

Cases: 2, 4, 8, 16 and 32 nodes drawn from `bench.cases.MACS` (seeds 0-9 per size, 0-1 with
`--quick`), full RDMA mesh up to 8 nodes and an Ethernet switch plus a Thunderbolt ring
beyond; each of the three real model configs; 8k context, 10% headroom, `sharding: auto`,
the planner's default time limit.

Per case it records the solve time (`plan.solver.wall_ms` and the wall clock around
`make_plan`), the status, and the plan's bottleneck compute time against

* the plan's own fluid bound (`estimates.fluid_bound_ms`: the best k of *all* nodes),
* a fluid bound over the nodes the plan uses, `(sharded + k × replicated) ÷ Σ bandwidth`
  (or `estimates.fluid_bound_used_ms` when the planner provides it), and
* the equal split's decode time (`estimates.equal_split_decode_ms`).

"Memory allows" means: splitting the sharded bytes over the used nodes in proportion to
their bandwidth fits every node's budget, so the bound is reachable but for granularity.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import Section, figure_file, percentile, write_section
from bench.cases import MODELS, model_config, random_topology, request
from bench.plotting import MODEL_COLORS, new_figure, save
from planner.costs import UNITS, UnitCosts, unit_costs
from planner.plan import make_plan
from planner.problem import budget_bytes
from protocol.config_reader import read_config
from protocol.plan import Plan
from protocol.schema import PlanRequest

SIZES = (2, 4, 8, 16, 32)
SEEDS_FULL = 10
SEEDS_QUICK = 2
CONTEXT = 8192
HEADROOM = 0.1

SMALL_TARGET_MS = 100.0  # p95 up to 8 nodes
LARGE_TARGET_MS = 1000.0  # p95 at 32 nodes (issue 11)
GAP_TARGET_PCT = 3.0


def _sharded_read(costs: UnitCosts) -> float:
    return costs.sharded_read


def fluid_used_ms(costs: UnitCosts, bandwidths: list[float]) -> float:
    """Every used rank reads the replicated bytes; the rest spreads over their bandwidth."""
    k = len(bandwidths)
    return (_sharded_read(costs) + k * costs.replicated_read) / sum(bandwidths) / 1e6


def memory_allows(req: PlanRequest, costs: UnitCosts, used: list[str]) -> bool:
    """Does the bandwidth-proportional split over `used` fit every used node's budget?"""
    c = req.constraints
    nodes = {n.id: n for n in req.topology.nodes}
    total_bw = sum(nodes[u].bandwidth_gbps for u in used)
    sharded = costs.sharded_weight + sum(costs.cache[u] * costs.total_units[u] for u in UNITS)
    for u in used:
        node = nodes[u]
        need = costs.replicated_weight + c.overhead_bytes + sharded * node.bandwidth_gbps / total_bw
        if need > budget_bytes(node, c.headroom):
            return False
    return True


def _status(plan: Plan) -> str:
    if plan.solver.time_limited:
        return "time-limited"
    return plan.status


def run_case(n: int, seed: int, model: str, config: dict[str, Any]) -> dict[str, Any]:
    req = request(random_topology(n, seed), config, context_tokens=CONTEXT, headroom=HEADROOM)
    started = time.perf_counter()
    plan = make_plan(req)
    wall_ms = (time.perf_counter() - started) * 1e3
    costs = unit_costs(read_config(config), CONTEXT)
    spec_kv = plan.model.kv_heads if plan.model else 0
    rec: dict[str, Any] = {
        "nodes": n,
        "seed": seed,
        "model": model,
        "chips": [f"{x.chip} {round(x.memory_bytes / 1e9)}GB" for x in req.topology.nodes],
        "status": plan.status,
        "time_limited": plan.solver.time_limited,
        "solver_wall_ms": plan.solver.wall_ms,
        "wall_ms": round(wall_ms, 3),
        "weights_gb": round(costs.total_weight / 1e9, 2),
    }
    if not plan.feasible or plan.estimates is None:
        rec["reasons"] = plan.reasons[:3]
        return rec
    e = plan.estimates
    used = [r.node_id for r in plan.ranks]
    bw = {x.id: x.bandwidth_gbps for x in req.topology.nodes}
    fluid_used = getattr(e, "fluid_bound_used_ms", None) or fluid_used_ms(
        costs, [bw[u] for u in used]
    )
    rec.update(
        {
            "sharding": plan.sharding,
            "used_nodes": len(used),
            "kv_replicated": len(used) > spec_kv,
            "compute_ms": e.compute_ms,
            "allreduce_ms": e.allreduce_ms,
            "decode_ms": e.decode_ms_per_token,
            "fluid_bound_ms": e.fluid_bound_ms,
            "fluid_used_ms": round(fluid_used, 6),
            # (+ 0.0 turns the -0.0 of a rounded-away difference into 0.0)
            "gap_all_pct": round(100 * (e.compute_ms / e.fluid_bound_ms - 1), 3) + 0.0,
            "gap_used_pct": round(100 * (e.compute_ms / fluid_used - 1), 3) + 0.0,
            "memory_allows": memory_allows(req, costs, used),
            "equal_decode_ms": e.equal_split_decode_ms,
            "speedup_vs_equal": (
                round(e.equal_split_decode_ms / e.decode_ms_per_token, 4)
                if e.equal_split_decode_ms
                else None
            ),
            "solver_objective_ms": plan.solver.objective,
            "solver_bound_ms": plan.solver.bound,
        }
    )
    return rec


def _chip_mix(chips: list[str]) -> str:
    counts = Counter(chips)
    return ", ".join(f"{n}× {chip}" for chip, n in sorted(counts.items(), key=lambda x: -x[1]))


def _fmt_ms(v: float) -> str:
    if math.isnan(v):
        return "—"
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def _target_for(n: int) -> float | None:
    if n <= 8:
        return SMALL_TARGET_MS
    if n >= 32:
        return LARGE_TARGET_MS
    return None


def summarise(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for n in sorted({c["nodes"] for c in cases}):
        cs = [c for c in cases if c["nodes"] == n]
        solve = [c["solver_wall_ms"] for c in cs]
        wall = [c["wall_ms"] for c in cs]
        statuses = Counter(_status_of(c) for c in cs)
        feas = [c for c in cs if "compute_ms" in c]
        mem_ok = [c for c in feas if c["memory_allows"]]
        within = [c for c in mem_ok if c["gap_used_pct"] <= GAP_TARGET_PCT]
        eq = [c for c in feas if c["speedup_vs_equal"] is not None]
        target = _target_for(n)
        p95 = percentile(solve, 95)
        out.append(
            {
                "nodes": n,
                "cases": len(cs),
                "solve_p50_ms": percentile(solve, 50),
                "solve_p95_ms": p95,
                "solve_max_ms": max(solve),
                "wall_p50_ms": percentile(wall, 50),
                "wall_p95_ms": percentile(wall, 95),
                "statuses": dict(statuses),
                "target_ms": target,
                "target_met": None if target is None else p95 <= target,
                "feasible": len(feas),
                "gap_used_median_pct": percentile([c["gap_used_pct"] for c in mem_ok], 50),
                "gap_used_max_pct": max((c["gap_used_pct"] for c in mem_ok), default=math.nan),
                "memory_allows": len(mem_ok),
                "within_3pct": len(within),
                "gap_all_median_pct": percentile([c["gap_all_pct"] for c in feas], 50),
                "equal_fits": len(eq),
                "only_asymtp_fits": len(feas) - len(eq),
                "speedup_vs_equal_median": percentile([c["speedup_vs_equal"] for c in eq], 50),
                "used_nodes_median": percentile([c["used_nodes"] for c in feas], 50),
            }
        )
    return out


def _status_of(c: dict[str, Any]) -> str:
    if c["time_limited"]:
        return "time-limited"
    return str(c["status"])


def _status_text(s: dict[str, int]) -> str:
    order = ("optimal", "feasible", "time-limited", "infeasible")
    return ", ".join(f"{s[k]} {k}" for k in order if s.get(k))


def _pct(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.2f}"


def _x(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.2f}×"


def plot_solve_time(cases: list[dict[str, Any]], path: Path) -> None:
    fig = new_figure(8.0, 5.0)
    ax = fig.add_subplot()
    sizes = sorted({c["nodes"] for c in cases})
    for i, (model, _) in enumerate(MODELS):
        color = MODEL_COLORS[i]
        shift = 2 ** ((i - 1) * 0.06)
        xs, p50, p95 = [], [], []
        for n in sizes:
            t = [c["solver_wall_ms"] for c in cases if c["nodes"] == n and c["model"] == model]
            if not t:
                continue
            ax.scatter(
                [n * shift] * len(t), t, s=10, color=color, alpha=0.25, linewidths=0, zorder=2
            )
            xs.append(n * shift)
            p50.append(percentile(t, 50))
            p95.append(percentile(t, 95))
        ax.fill_between(xs, p50, p95, color=color, alpha=0.15, linewidth=0)
        ax.plot(xs, p50, "o-", color=color, label=f"{model}: p50", zorder=3)
        ax.plot(xs, p95, "v--", color=color, label=f"{model}: p95", zorder=3)
    ax.hlines(SMALL_TARGET_MS, 1.8, 8.8, colors="black", linestyles=":", linewidth=1.5)
    ax.text(2.0, SMALL_TARGET_MS * 1.12, "target p95 ≤ 100 ms (≤ 8 nodes)", fontsize=8)
    ax.hlines(LARGE_TARGET_MS, 26, 38, colors="black", linestyles=":", linewidth=1.5)
    ax.text(17, LARGE_TARGET_MS * 1.12, "target p95 ≤ 1 s (32 nodes)", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_yscale("log")
    ax.set_xlabel("nodes in the cluster (mixed Apple Silicon)")
    ax.set_ylabel("make_plan solve time (ms, log scale)")
    ax.set_title("Planner solve time vs cluster size (1 CP-SAT worker; dots = cases)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    save(fig, path)


def plot_bounds(cases: list[dict[str, Any]], path: Path) -> None:
    fig = new_figure(11.0, 4.6)
    left, right = fig.subplots(1, 2)
    sizes = sorted({c["nodes"] for c in cases})
    for i, (model, _) in enumerate(MODELS):
        color = MODEL_COLORS[i]
        shift = 2 ** ((i - 1) * 0.07)
        feas = [c for c in cases if c["model"] == model and "compute_ms" in c]
        for ok, marker_fill in ((True, color), (False, "none")):
            sel = [c for c in feas if c["memory_allows"] is ok]
            label = f"{model}" + ("" if ok else " (memory-bound)")
            left.scatter(
                [c["nodes"] * shift for c in sel],
                [c["compute_ms"] / c["fluid_used_ms"] for c in sel],
                s=22,
                facecolors=marker_fill,
                edgecolors=color,
                label=label,
                zorder=3,
            )
        right.scatter(
            [c["nodes"] * shift for c in feas],
            [c["compute_ms"] / c["fluid_bound_ms"] for c in feas],
            s=22,
            color=color,
            alpha=0.7,
            label=model,
            zorder=3,
        )
    left.axhline(1 + GAP_TARGET_PCT / 100, color="black", linestyle=":", linewidth=1.2)
    left.text(2.0, 1 + GAP_TARGET_PCT / 100, " 3% target", fontsize=8, va="bottom")
    left.set_title("vs fluid bound over the nodes the plan uses")
    left.set_ylabel("bottleneck compute time ÷ fluid bound (×)")
    right.set_title("vs fluid bound over all nodes (ignores all-reduce cost)")
    right.set_ylabel("bottleneck compute time ÷ fluid bound (×, log scale)")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_xlabel("nodes in the cluster")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7, loc="upper left")
    right.legend(fontsize=7, loc="upper left")
    fig.suptitle("Plan's slowest-rank memory-read time per token against the fluid lower bound")
    save(fig, path)


def plot_equal(cases: list[dict[str, Any]], path: Path) -> None:
    fig = new_figure(6.2, 5.0)
    ax = fig.add_subplot()
    lo, hi = math.inf, 0.0
    for i, (model, _) in enumerate(MODELS):
        sel = [c for c in cases if c["model"] == model and c.get("equal_decode_ms")]
        xs = [c["equal_decode_ms"] for c in sel]
        ys = [c["decode_ms"] for c in sel]
        if xs:
            lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
        ax.scatter(xs, ys, s=18, color=MODEL_COLORS[i], alpha=0.75, label=model)
    if hi > 0:
        ax.plot([lo * 0.8, hi * 1.2], [lo * 0.8, hi * 1.2], color="grey", linestyle=":")
        ax.text(hi * 0.45, hi * 0.3, "same speed", fontsize=8, color="grey", rotation=35)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("equal split: decode time per token (ms, log scale)")
    ax.set_ylabel("asymtp plan: decode time per token (ms, log scale)")
    ax.set_title(
        "Estimated decode time where the equal split fits\n(below the line: asymtp faster)"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def run(results_dir: Path, quick: bool = False) -> Section:
    seeds = range(SEEDS_QUICK if quick else SEEDS_FULL)
    configs = [(name, model_config(file)) for name, file in MODELS]
    # Warm up imports, OR-Tools and caches so the first timed case is not an outlier.
    run_case(2, 0, configs[0][0], configs[0][1])
    cases: list[dict[str, Any]] = []
    for n in SIZES:
        started = time.perf_counter()
        for seed in seeds:
            for name, cfg in configs:
                cases.append(run_case(n, seed, name, cfg))
        done = [c for c in cases if c["nodes"] == n]
        t = [c["solver_wall_ms"] for c in done]
        print(
            f"  planner: {n:2d} nodes, {len(done)} cases in {time.perf_counter() - started:.1f}s: "
            f"solve p50 {_fmt_ms(percentile(t, 50))} ms, p95 {_fmt_ms(percentile(t, 95))} ms, "
            f"max {_fmt_ms(max(t))} ms",
            flush=True,
        )
    summary = summarise(cases)

    time_rows, quality_rows = [], []
    for s in summary:
        target = (
            "—"
            if s["target_ms"] is None
            else f"≤ {_fmt_ms(s['target_ms'])}: {'met' if s['target_met'] else 'MISSED'}"
        )
        by_model = [
            _fmt_ms(
                percentile(
                    [
                        c["solver_wall_ms"]
                        for c in cases
                        if c["nodes"] == s["nodes"] and c["model"] == name
                    ],
                    95,
                )
            )
            for name, _ in MODELS
        ]
        time_rows.append(
            [
                s["nodes"],
                s["cases"],
                _fmt_ms(s["solve_p50_ms"]),
                _fmt_ms(s["solve_p95_ms"]),
                _fmt_ms(s["solve_max_ms"]),
                _fmt_ms(s["wall_p50_ms"]),
                _fmt_ms(s["wall_p95_ms"]),
                *by_model,
                target,
                _status_text(s["statuses"]),
            ]
        )
        quality_rows.append(
            [
                s["nodes"],
                s["feasible"],
                f"{s['used_nodes_median']:.0f}" if s["feasible"] else "—",
                _pct(s["gap_used_median_pct"]),
                _pct(s["gap_used_max_pct"]),
                f"{s['within_3pct']}/{s['memory_allows']}",
                _pct(s["gap_all_median_pct"]),
                f"{s['only_asymtp_fits']}/{s['feasible']}",
                _x(s["speedup_vs_equal_median"]),
            ]
        )
    time_columns = [
        "nodes",
        "cases",
        "solve p50 (ms)",
        "solve p95 (ms)",
        "solve max (ms)",
        "wall clock p50 (ms)",
        "wall clock p95 (ms)",
        *[f"p95 {name} (ms)" for name, _ in MODELS],
        "p95 target (ms)",
        "status",
    ]
    quality_columns = [
        "nodes",
        "feasible plans",
        "nodes used, median",
        "gap vs used-node bound, median (%)",
        "… max (%)",
        "within 3% (where memory allows)",
        "gap vs all-node bound, median (%)",
        "equal split does not fit",
        "equal ÷ asymtp decode time, median",
    ]
    slow_rows = [
        [
            c["nodes"],
            c["seed"],
            c["model"],
            _status_of(c),
            _fmt_ms(c["solver_wall_ms"]),
            c.get("used_nodes", "—"),
            _chip_mix(c["chips"]),
        ]
        for c in sorted(cases, key=lambda c: -c["solver_wall_ms"])[:10]
    ]

    small = [s for s in summary if s["nodes"] <= 8]
    large = [s for s in summary if s["nodes"] == 32]
    mem_ok_all = [c for c in cases if c.get("memory_allows")]
    within_all = [c for c in mem_ok_all if c["gap_used_pct"] <= GAP_TARGET_PCT]
    worst_small = max(s["solve_p95_ms"] for s in small) if small else math.nan
    p95_32 = large[0]["solve_p95_ms"] if large else math.nan
    eq_cases = [c for c in cases if c.get("speedup_vs_equal") is not None]
    feas = [c for c in cases if "compute_ms" in c]
    targets = [
        [
            "solve p95 ≤ 100 ms, 2–8 nodes",
            f"worst p95 {_fmt_ms(worst_small)} ms",
            "met" if worst_small <= SMALL_TARGET_MS else "MISSED",
        ],
        [
            "solve p95 ≤ 2 s at 32 nodes",
            f"p95 {_fmt_ms(p95_32)} ms",
            "met" if p95_32 <= LARGE_TARGET_MS else "MISSED",
        ],
        [
            "compute within 3% of the fluid bound wherever memory allows",
            f"{len(within_all)}/{len(mem_ok_all)} cases",
            "met" if len(within_all) == len(mem_ok_all) else "MISSED",
        ],
    ]
    for t in targets:
        print(f"  planner target: {t[0]}: {t[1]} — {t[2]}", flush=True)

    solve_png, solve_rel = figure_file(results_dir, "planner_solve_time.png")
    bounds_png, bounds_rel = figure_file(results_dir, "planner_vs_fluid_bound.png")
    equal_png, equal_rel = figure_file(results_dir, "planner_vs_equal_split.png")
    plot_solve_time(cases, solve_png)
    plot_bounds(cases, bounds_png)
    plot_equal(cases, equal_png)

    misses = [c for c in mem_ok_all if c["gap_used_pct"] > GAP_TARGET_PCT]
    miss_rows = [
        [
            c["nodes"],
            c["seed"],
            c["model"],
            c["used_nodes"],
            "yes" if c["kv_replicated"] else "no",
            f"{c['compute_ms']:.2f}",
            f"{c['fluid_used_ms']:.2f}",
            _pct(c["gap_used_pct"]),
        ]
        for c in sorted(misses, key=lambda c: -c["gap_used_pct"])[:15]
    ]

    result: Section = {
        "section": "planner",
        "title": "Planner: solve time and plan quality on mixed clusters",
        "headline": [
            {
                "metric": "planner solve p95, 2–8 nodes (worst size)",
                "value": round(worst_small, 1),
                "unit": "ms",
            },
            {"metric": "planner solve p95, 32 nodes", "value": round(p95_32, 1), "unit": "ms"},
            {
                "metric": "plans within 3% of the fluid bound (used nodes, memory allows)",
                "value": f"{len(within_all)}/{len(mem_ok_all)}",
                "unit": "cases",
            },
            {
                "metric": "decode speed-up over the equal split where it fits (median)",
                "value": round(percentile([c["speedup_vs_equal"] for c in eq_cases], 50), 2),
                "unit": "×",
            },
            {
                "metric": "cases that only asymtp can place (equal split does not fit)",
                "value": f"{len(feas) - len(eq_cases)}/{len(feas)}",
                "unit": "cases",
            },
        ],
        "tables": [
            {
                "title": "Targets (issue 2)",
                "columns": ["target", "measured", "result"],
                "rows": targets,
            },
            {
                "title": "Solve time per cluster size (`plan.solver.wall_ms`; wall clock around `make_plan`)",
                "columns": time_columns,
                "rows": time_rows,
            },
            {
                "title": "Plan quality per cluster size (bottleneck compute time vs fluid bounds; vs the equal split)",
                "columns": quality_columns,
                "rows": quality_rows,
            },
            {
                "title": "Slowest solves",
                "columns": [
                    "nodes",
                    "seed",
                    "model",
                    "status",
                    "solve (ms)",
                    "nodes used",
                    "cluster",
                ],
                "rows": slow_rows,
            },
            {
                "title": "Cases beyond 3% of the used-node bound although memory allows",
                "columns": [
                    "nodes",
                    "seed",
                    "model",
                    "nodes used",
                    "KV heads copied",
                    "compute (ms)",
                    "bound (ms)",
                    "gap (%)",
                ],
                "rows": miss_rows,
            },
        ],
        "figures": [
            {
                "file": solve_rel,
                "caption": "Solve time of `make_plan` against node count, per model: p50 (solid), p95 (dashed), the band between them, every case as a dot; dotted lines are the targets.",
            },
            {
                "file": bounds_rel,
                "caption": "Slowest rank's memory-read time per token ÷ fluid lower bound, one point per feasible case. Left: bound over the nodes the plan uses (hollow: memory forces a less-than-proportional share on some node). Right: the plan's own bound over the best k of all nodes, which ignores the all-reduce that makes using fewer nodes faster overall.",
            },
            {
                "file": equal_rel,
                "caption": "Estimated decode time per token (compute + all-reduce) of the asymtp plan against the equal split, where the equal split fits.",
            },
        ],
        "notes": [
            f"{len(cases)} cases: {len(SIZES)} sizes × {len(seeds)} seeds × {len(MODELS)} models; "
            "nodes drawn with `random.Random(1000·n + seed)` from M1 Ultra 192 GB/800 GB/s, M2 Ultra "
            "192/800, M3 Ultra 512/819, M4 Max 128/546, M5 Max 128/614, M4 Pro 64/273, M3 Max 48/400, "
            "M4 Max 36/410. Up to 8 nodes a full Thunderbolt 5 RDMA mesh; 16 and 32 nodes an "
            "Ethernet switch (every pair `ethernet`) plus a Thunderbolt ring. 8k context, 10% "
            "headroom, `sharding: auto`, default 10 s time limit, one CP-SAT worker.",
            "Solve time is `plan.solver.wall_ms` (all of `make_plan`: config reading, byte model, "
            "equal split, CP-SAT, layout); the wall clock around the call is in `data` and differs "
            "by well under a millisecond. The machine is shared (see its load above): absolute "
            "times are noisy, ratios between sizes less so.",
            "*Status*: `time-limited` counts plans where CP-SAT stopped at its deterministic time "
            "budget (best plan found, optimality not proven); `infeasible` are clusters the model "
            "does not fit at all (e.g. 2 small Macs and a 141 GB bf16 model).",
            "*Gap vs used-node bound* = compute ÷ ((sharded bytes + k × replicated bytes) ÷ Σ "
            "bandwidth of the k used nodes) − 1: how well the plan balances the nodes it uses. "
            "It is the one the 3% target is checked on, over cases where a bandwidth-proportional "
            "split fits memory. Remaining gaps come from granularity (whole KV groups, whole "
            "experts, and KV heads copied when ranks outnumber them, which the bound ignores).",
            "*Gap vs all-node bound* uses the plan's `estimates.fluid_bound_ms`, the best k of all "
            "nodes with no network. On 16–32 node Ethernet clusters the planner deliberately uses "
            "one or two big nodes: every extra rank adds 2 all-reduces per layer over a 100 µs hop, "
            "so the all-node bound is far below anything reachable and that gap measures the "
            "network, not the split.",
            "*Equal ÷ asymtp decode* compares estimated decode time per token (slowest rank + "
            "all-reduce) with today's even split over all nodes, where it fits; with `sharding: "
            "auto` the planner returns the equal split itself when it is no slower (ratio 1.00). "
            "On the 16–32 node Ethernet clusters the equal split must use every node, so it pays "
            "a 16- or 32-rank all-reduce over 100 µs hops twice a layer: the large ratios there "
            "are mostly the network, which asymtp avoids by using fewer, bigger nodes.",
        ],
        "data": {"cases": cases, "summary": summary},
    }
    write_section(results_dir, result)
    return result
