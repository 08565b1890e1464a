"""`asymtp doctor`: what a working RDMA mesh needs, one line per finding with its fix.

Asks a planner about a deployment's agents (`--planner URL --deployment NAME`, which also prices
the TCP ring against RDMA for the deployed model), or checks facts offline: NodeFacts JSON files
(an agent's report, e.g. saved from `GET /deployments/NAME`) and, with `--local`, this machine.
Exit 0 when RDMA can work, 1 when it cannot (the plan uses the TCP ring), 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from executor.cli import EXIT_BAD_INPUT, EXIT_MISMATCH, EXIT_OK, _add_token_arguments, _token
from planner.doctor_cost import DoctorReport, doctor_report
from protocol.schema import NodeFacts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("facts", nargs="*", type=Path, help="NodeFacts JSON files (offline check)")
    p.add_argument("--local", action="store_true", help="add this machine's facts (offline)")
    p.add_argument("--planner", help="planner URL, e.g. http://10.0.0.1:8420")
    p.add_argument("--deployment", help="the deployment whose agents to check (with --planner)")
    _add_token_arguments(p)


def _fail(msg: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"asymtp doctor: {msg}", file=sys.stderr)
    return code


def _from_planner(args: argparse.Namespace) -> DoctorReport | str:
    import httpx

    token = _token(args)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{args.planner.rstrip('/')}/deployments/{args.deployment}/doctor"
    try:
        r = httpx.get(url, headers=headers, timeout=60)
    except httpx.HTTPError as e:
        return f"cannot reach {args.planner}: {e}"
    if r.status_code != 200:
        return f"HTTP {r.status_code} from {url}: {r.text[:300]}"
    return DoctorReport.model_validate_json(r.content)


def _offline(args: argparse.Namespace) -> DoctorReport | str:
    facts = []
    for path in args.facts:
        try:
            facts.append(NodeFacts.model_validate_json(path.read_bytes()))
        except OSError as e:
            return f"{path}: {e.strerror or e}"
        except ValidationError as e:
            return f"{path}: not NodeFacts JSON: {e.errors()[0]['msg']}"
    if args.local:
        from executor.node_facts import collect

        facts.append(collect("this-machine"))
    if not facts:
        return "give NodeFacts files, --local, or --planner URL --deployment NAME"
    return doctor_report(facts, None)


def run(args: argparse.Namespace) -> int:
    if args.planner and not args.deployment:
        return _fail("--planner needs --deployment NAME")
    if args.planner and (args.facts or args.local):
        return _fail("ask a planner or check facts offline, not both")
    try:
        report = _from_planner(args) if args.planner else _offline(args)
    except ValueError as e:
        return _fail(str(e))
    if isinstance(report, str):
        return _fail(report)
    for line in report.lines:
        print(line)
    return EXIT_OK if report.rdma_possible else EXIT_MISMATCH
