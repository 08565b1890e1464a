"""`python -m bench [--quick] [--only SECTION ...]`: run the sections, then render the report."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import REPORT_PATH, RESULTS_DIR, SECTIONS, Section, machine_info, write_section
from bench.report import fmt, render


def _import(module: str) -> ModuleType | None:
    """The section module, or None when it does not exist (yet)."""
    name = f"bench.{module}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            return None
        raise


def _record(results_dir: Path, name: str, returned: Any, run: dict[str, Any]) -> Section:
    """Add `machine` and `run` to the section's JSON (the one it wrote, else what it returned)."""
    path = results_dir / f"{name}.json"
    data: Section | None = None
    if run["status"] == "ok":
        try:
            loaded = json.loads(path.read_text())
            data = loaded if isinstance(loaded, dict) else None
        except (OSError, json.JSONDecodeError):
            data = None
        if data is None and isinstance(returned, dict):
            data = dict(returned)
    if data is None:
        data = {
            "section": name,
            "title": name,
            "headline": [],
            "tables": [],
            "figures": [],
            "notes": [],
        }
        if isinstance(returned, dict):
            data["title"] = returned.get("title", name)
    data["section"] = name
    data["machine"] = machine_info()
    data["run"] = run
    write_section(results_dir, data)
    return data


def main(argv: list[str] | None = None) -> int:
    names = [n for n, _ in SECTIONS]
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer cases: well under a minute")
    ap.add_argument("--only", nargs="+", choices=names, metavar="SECTION", help=", ".join(names))
    ap.add_argument("--results", type=Path, default=RESULTS_DIR, help="where section JSON goes")
    ap.add_argument("--report", type=Path, default=REPORT_PATH, help="the Markdown report")
    args = ap.parse_args(argv)

    results_dir: Path = args.results
    results_dir.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    started_all = time.perf_counter()
    for name, module_name in SECTIONS:
        if args.only and name not in args.only:
            continue
        print(f"== {name} (bench/{module_name}.py){' --quick' if args.quick else ''}", flush=True)
        started = time.perf_counter()
        returned: Any = None
        try:
            module = _import(module_name)
            if module is None:
                print(
                    f"   {name}: not available (bench/{module_name}.py does not exist)", flush=True
                )
                _record(
                    results_dir,
                    name,
                    None,
                    {"status": "not available", "error": f"bench/{module_name}.py does not exist"},
                )
                continue
            returned = module.run(results_dir, quick=args.quick)
        except Exception as e:  # a failing section is reported, the others still run
            trace = traceback.format_exc()
            print(trace, file=sys.stderr, flush=True)
            print(f"   {name}: FAILED: {type(e).__name__}: {e}", flush=True)
            failed.append(name)
            _record(
                results_dir,
                name,
                returned,
                {
                    "status": "error",
                    "elapsed_s": round(time.perf_counter() - started, 2),
                    "error": trace[-4000:],
                },
            )
            continue
        elapsed = time.perf_counter() - started
        data = _record(
            results_dir, name, returned, {"status": "ok", "elapsed_s": round(elapsed, 2)}
        )
        print(f"   {name}: done in {elapsed:.1f}s", flush=True)
        for h in data.get("headline", []):
            print(
                f"   - {h.get('metric')}: {fmt(h.get('value'))} {h.get('unit', '')}".rstrip(),
                flush=True,
            )

    path = render(results_dir, args.report)
    print(f"== report: {path} ({time.perf_counter() - started_all:.1f}s in all)", flush=True)
    if failed:
        print(f"bench: {len(failed)} section(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
