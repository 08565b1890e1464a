"""`asymtp check-parity`: a planner plan for the given shares (or pipeline stages), run on local
ring processes and compared with the unsharded model. The glue between planner and executor lives here, so
neither imports the other."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from executor.cli import EXIT_MISMATCH, EXIT_OK, bad_input


# ---- check-parity -------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", type=Path, required=True, help="model directory (mlx_lm.convert output)"
    )
    p.add_argument("--ranks", type=int, help="number of local ranks (2-8), tensor parallel")
    p.add_argument(
        "--split", help="with --ranks: comma-separated shares, e.g. 0.5,0.3,0.2 (default: equal)"
    )
    p.add_argument(
        "--stages",
        help="instead of --ranks: pipeline stages separated by '/', each LAYERS:SHARES — its "
        "layer count, then its ranks' shares of the stage's units. '5:0.6,0.4/3:1' runs layers "
        "0-4 tensor-parallel on ranks 0-1 (60/40) and layers 5-7 on rank 2; '4/4' is a plain "
        "2-stage pipeline. The layer counts must add up to the model's.",
    )
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


def _shares(args: argparse.Namespace) -> list[float] | str:
    """The tensor-parallel shares (normalised), or what is wrong with them."""
    if args.ranks is None or not 2 <= args.ranks <= 8:
        return "--ranks must be between 2 and 8"
    try:
        fractions = [float(x) for x in args.split.split(",")] if args.split else [1.0] * args.ranks
    except ValueError:
        return f"--split must be comma-separated numbers, got {args.split!r}"
    if len(fractions) != args.ranks or any(f <= 0 for f in fractions):
        return f"--split needs {args.ranks} positive numbers, got {args.split!r}"
    return [f / sum(fractions) for f in fractions]


def _plan(args: argparse.Namespace, config: dict[str, Any]) -> Any:
    from asymtp.stage_plans import LayoutError, parse_stages, plan_for_stages
    from planner.splits import plan_for_split

    if args.stages is not None:
        stages = parse_stages(args.stages)
        if not 2 <= sum(len(s.shares) for s in stages) <= 8:
            raise LayoutError("--stages: the stages need 2 to 8 ranks in all")
        return plan_for_stages(config, stages)
    shares = _shares(args)
    if isinstance(shares, str):
        raise LayoutError(shares)
    return plan_for_split(config, shares)


def run(args: argparse.Namespace) -> int:
    if (args.ranks is None) == (args.stages is None):
        return bad_input("give --ranks (tensor parallel) or --stages (pipeline), not both")
    if args.stages is not None and args.split is not None:
        return bad_input("--split goes with --ranks; with --stages the shares are in each stage")
    if not (args.model / "config.json").is_file():
        return bad_input(f"--model {args.model}: no config.json there")

    from executor.loader import LoadError, read_json
    from executor.parity import Tolerance, check

    try:
        plan = _plan(args, read_json(args.model / "config.json"))
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
