"""Benchmarks: `python -m bench [--quick] [--only SECTION ...]` (`make bench`).

Sections run in a fixed order — planner, planner-families, layouts, methods, service,
executor, realmodel, measured, reality, serving — each one a module of this package with::

    def run(results_dir: Path, quick: bool = False) -> dict

`run` measures, draws its PNGs into `bench/figures/`, writes `results_dir/<section>.json` and
returns the same object. `bench/report.py` then renders `bench/REPORT.md` from the JSON files
alone, so the report can be re-rendered (`python -m bench.report`) without re-running anything.

The section JSON, which every section follows so that the report can render any of them::

    {
      "section":  "planner",                      # the file's stem, <section>.json
      "title":    "Planner: solve time and plan quality",
      "headline": [{"metric": str, "value": number | str, "unit": str}],
      "tables":   [{"title": str, "columns": [str], "rows": [[number | str | None, ...]]}],
      "figures":  [{"file": "bench/figures/x.png", "caption": str}],
      "notes":    [str],                          # markdown, one paragraph each
      "data":     {...}                           # optional: raw measurements, any shape
    }

`python -m bench` adds `"machine"` (cpu count, platform, load, date, library versions) and
`"run"` (`{"status": "ok" | "error" | "not available", "elapsed_s": float, "error": str}`) to
each file it writes; a section whose module does not exist, or whose `run` raised, still gets
a file (with `run.status` saying so) so that the report shows it.

Figure paths are relative to the repository root (`bench/figures/…`); use `figure_file` to
get both the path to save to and the string to put in the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
FIGURES_DIR = BENCH_DIR / "figures"
REPORT_PATH = BENCH_DIR / "REPORT.md"

SECTIONS: tuple[tuple[str, str], ...] = (
    # (section name, module in this package), in the order they run and are reported
    ("planner", "planner_bench"),
    ("planner-families", "planner_families"),
    ("layouts", "layouts"),
    ("methods", "methods"),
    ("service", "service_load"),
    ("executor", "executor_speed"),
    ("pipeline-speed", "pipeline_speed"),
    ("realmodel", "real_model_speed"),
    ("measured", "measured_plans"),
    ("reality", "reality"),
    ("serving", "api_bench"),
)

Section = dict[str, Any]


def figures_dir(results_dir: Path) -> Path:
    """Figures sit beside the results directory (`bench/figures` for `bench/results`)."""
    return results_dir.resolve().parent / "figures"


def figure_file(results_dir: Path, name: str) -> tuple[Path, str]:
    """(where to save the PNG, the path to record in the section JSON)."""
    folder = figures_dir(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    try:
        return path, path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path, str(path)


def write_section(results_dir: Path, result: Section) -> Path:
    """Write `results_dir/<section>.json` (sorted keys, stable output)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{result['section']}.json"
    path.write_text(json.dumps(result, indent=1, sort_keys=False, default=_jsonable) + "\n")
    return path


def run_alone(module: str, run: Callable[[Path, bool], Section]) -> int:
    """`python -m bench.<module> [--quick]`: one section without the report, its headline
    printed (`python -m bench --only SECTION` runs it and renders the report too)."""
    p = argparse.ArgumentParser(prog=f"python -m {module}")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    result = run(RESULTS_DIR, args.quick)
    for h in result["headline"]:
        print(f"  {h['metric']}: {h['value']} {h['unit']}")
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]; NaN when empty."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on; timings on a shared machine are noisy."""
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_state(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_1_5_15": load,
        "python": sys.version.split()[0],
        "versions": {
            name: package_version(name)
            for name in ("ortools", "mlx", "mlx-lm", "matplotlib", "asymtp")
        },
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and which tracked files differed from it (others may be editing)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("diff", "--name-only", "HEAD", "--", "planner", "executor")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "uncommitted": [line for line in changed.splitlines() if line],
    }
