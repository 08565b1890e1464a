"""`asymtp check-parity`: a planner plan for the given shares, run on local ring processes and
compared with the unsharded model. The glue between planner and executor lives here, so
neither imports the other."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from executor.cli import EXIT_MISMATCH, EXIT_OK, bad_input


# ---- check-parity -------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", type=Path, required=True, help="model directory (mlx_lm.convert output)"
    )
    p.add_argument("--ranks", type=int, required=True, help="number of local ranks (2-8)")
    p.add_argument("--split", help="comma-separated shares, e.g. 0.5,0.3,0.2 (default: equal)")
    p.add_argument("--prompts", type=int, default=20, help="greedy prompts to compare")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument(
        "--rtol",
        type=float,
        help="allowed logit difference relative to the largest |logit| (default by dtype: "
        "1e-5 float32, 2e-2 float16, 5e-2 bfloat16)",
    )
    p.add_argument(
        "--atol", type=float, help="absolute floor added to it (default 1e-5 float32, else 1e-3)"
    )


def run(args: argparse.Namespace) -> int:
    if not 2 <= args.ranks <= 8:
        return bad_input("--ranks must be between 2 and 8")
    try:
        fractions = [float(x) for x in args.split.split(",")] if args.split else [1.0] * args.ranks
    except ValueError:
        return bad_input(f"--split must be comma-separated numbers, got {args.split!r}")
    if len(fractions) != args.ranks or any(f <= 0 for f in fractions):
        return bad_input(f"--split needs {args.ranks} positive numbers, got {args.split!r}")
    if not (args.model / "config.json").is_file():
        return bad_input(f"--model {args.model}: no config.json there")

    from executor.loader import LoadError, read_json
    from executor.parity import Tolerance, check
    from planner.splits import plan_for_split

    total = sum(fractions)
    try:
        plan = plan_for_split(read_json(args.model / "config.json"), [f / total for f in fractions])
        report = check(args.model, plan, n_greedy=args.prompts, max_tokens=args.max_tokens)
    except (LoadError, ValueError) as e:
        return bad_input(str(e))
    except RuntimeError as e:
        print(f"asymtp check-parity: the ring group failed: {e}", file=sys.stderr)
        return EXIT_MISMATCH
    for line in report.lines():
        print(line)
    default = report.tolerance
    tol = Tolerance(
        default.relative if args.rtol is None else args.rtol,
        default.absolute if args.atol is None else args.atol,
    )
    ok = report.passes(tol)
    print(
        f"parity: {'OK' if ok else 'MISMATCH'} (allowed {tol.bound(report.logit_scale):.3g} = "
        f"{tol.relative:g} × {report.logit_scale:.3g} + {tol.absolute:g}; {report.seconds:.1f}s)"
    )
    return EXIT_OK if ok else EXIT_MISMATCH
