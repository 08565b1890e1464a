"""`asymtp plan FILE`: the planner as a dry run. Exit 0 feasible, 1 infeasible, 2 bad input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_INFEASIBLE, EXIT_BAD_INPUT = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("request", type=Path, help="plan request (JSON or YAML)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument(
        "--sharding", choices=["asymmetric", "equal", "auto"], help="override constraints.sharding"
    )
    p.add_argument(
        "--parallelism",
        choices=["tensor", "pipeline", "auto"],
        help="override constraints.parallelism",
    )
    p.add_argument(
        "--context", type=int, metavar="TOKENS", help="override constraints.context_tokens"
    )
    p.add_argument(
        "--show",
        action="store_true",
        help="the file is a saved plan (`--json`) or deployment (GET /deployments/NAME): "
        "print its table (and a deployment's agents) instead of planning",
    )


def run(args: argparse.Namespace) -> int:
    from planner.plan import make_plan
    from planner.request_io import RequestError, load_request
    from planner.table import render
    from protocol.plan import plan_json

    if args.show:
        return show(args.request)
    try:
        request = load_request(args.request)
        overrides = {}
        if args.sharding:
            overrides["sharding"] = args.sharding
        if args.parallelism:
            overrides["parallelism"] = args.parallelism
        if args.context is not None:
            overrides["context_tokens"] = args.context
        if overrides:
            from planner.request_io import parse_request

            data = request.model_dump(mode="json")
            data["constraints"].update(overrides)
            request = parse_request(data, args.request.parent)
    except RequestError as e:
        print(f"asymtp plan: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    plan = make_plan(request)
    print(plan_json(plan) if args.json else render(plan))
    return EXIT_OK if plan.feasible else EXIT_INFEASIBLE


def show(path: Path) -> int:
    """Print a saved plan's table; for a deployment, its plan's and its agents' tables."""
    from pydantic import ValidationError

    from planner.request_io import RequestError, describe, parse_text, read_bounded
    from planner.table import agents_table, render
    from protocol.deployment import Deployment
    from protocol.plan import Plan

    try:
        data = parse_text(read_bounded(path), path)
        is_deployment = isinstance(data, dict) and "spec" in data
        try:
            saved = (Deployment if is_deployment else Plan).model_validate(data)
        except ValidationError as e:
            what = "deployment" if is_deployment else "plan"
            raise RequestError(f"{path}: not a {what}: {describe(e)}") from None
    except RequestError as e:
        print(f"asymtp plan: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(saved, Deployment):
        print(render(saved.plan))
        print(agents_table(saved))
        return EXIT_OK if saved.plan.feasible else EXIT_INFEASIBLE
    print(render(saved))
    return EXIT_OK if saved.feasible else EXIT_INFEASIBLE
