"""The layouts section's figure: tokens/s of each layout, per cluster, one panel per model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import figure_file
from bench.plotting import new_figure, save

COLORS = ("#1f77b4", "#9ecae1", "#ff7f0e", "#2ca02c", "#d62728")


def plot(results_dir: Path, cases: list[dict[str, Any]], methods: list[str]) -> dict[str, str]:
    models = list(dict.fromkeys(c["model"] for c in cases))
    clusters = list(dict.fromkeys(c["cluster"] for c in cases))
    fig = new_figure(max(8.0, 1.3 * len(clusters)), 2.6 * len(models) + 0.6)
    axes = fig.subplots(len(models), 1, squeeze=False, sharex=True)[:, 0]
    width = 0.8 / len(methods)
    for ax, model in zip(axes, models):
        by_cluster = {c["cluster"]: c for c in cases if c["model"] == model}
        for j, method in enumerate(methods):
            xs: list[float] = []
            ys: list[float] = []
            missing: list[float] = []
            errors: list[float] = []
            for i, name in enumerate(clusters):
                x = i - 0.4 + width * (j + 0.5)
                r = by_cluster[name]["methods"][method] if name in by_cluster else None
                if r is not None and r["fits"]:
                    xs.append(x)
                    ys.append(r["tokens_per_s"])
                elif r is not None:
                    (errors if r.get("error") else missing).append(x)
            ax.bar(xs, ys, width, color=COLORS[j % len(COLORS)], label=method)
            ax.plot(missing, [0] * len(missing), "x", color=COLORS[j % len(COLORS)], ms=5)
            ax.plot(errors, [0] * len(errors), "*", color=COLORS[j % len(COLORS)], ms=8)
        ax.set_title(model, fontsize=9, loc="left")
        ax.set_ylabel("tokens/s (estimate)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(range(len(clusters)))
    axes[-1].set_xticklabels(clusters, rotation=25, ha="right", fontsize=8)
    axes[0].legend(fontsize=7, ncols=len(methods), loc="upper right")
    fig.suptitle(
        "Decode speed by layout (× on the axis: does not fit at 8k context; ✱ planner error)",
        fontsize=10,
    )
    path, rel = figure_file(results_dir, "layouts_decode.png")
    save(fig, path)
    return {
        "file": rel,
        "caption": "Decode estimate (tokens/s) of asymtp auto, tensor-only, an even pipeline, a "
        "memory-proportional pipeline and exo's equal tensor parallelism; × marks a layout "
        "that does not fit, ✱ one the planner failed to price (see the notes).",
    }
