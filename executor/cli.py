"""`asymtp make-test-model` and `asymtp check-parity`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from protocol.deployment import DEFAULT_MEASURE_PORT

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2


def bad_input(msg: str) -> int:
    print(f"asymtp: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


# ---- make-test-model ----------------------------------------------------------------------
def add_make_model_arguments(p: argparse.ArgumentParser) -> None:
    from executor.tiny_models import FAMILIES, QUANTIZATIONS

    p.add_argument("out", type=Path, help="directory to write the model to")
    p.add_argument("--family", choices=FAMILIES, default="qwen3")
    p.add_argument("--quant", choices=list(QUANTIZATIONS), default="none")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--seed", type=int, default=0)


def run_make_model(args: argparse.Namespace) -> int:
    from executor.tiny_models import build_model

    out = build_model(args.out, args.family, args.quant, args.dtype, args.seed)
    print(f"wrote a {args.family} test model ({args.quant}, {args.dtype}) to {out}")
    return EXIT_OK


# ---- agent -----------------------------------------------------------------------------------
def add_agent_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--planner", required=True, help="planner URL, e.g. http://10.0.0.1:8420")
    p.add_argument("--deployment", required=True, help="deployment name to follow")
    p.add_argument("--node-id", required=True, help="this node's id in the topology")
    p.add_argument("--models-dir", type=Path, required=True, help="models live under here only")
    _add_token_arguments(p)
    p.add_argument(
        "--signing-key-file",
        type=Path,
        default=os.environ.get("ASYMTP_SIGNING_KEY_FILE"),
        help="the planner's signing key file (its <db>.signing-key); without one, only a "
        "planner on loopback is followed (development key)",
    )
    p.add_argument("--memory-gb", type=float, help="simulate a machine of this size (demo/tests)")
    p.add_argument("--serve-host", help="rank 0's API address (default: this node's address)")
    p.add_argument(
        "--api-token",
        default=os.environ.get("ASYMTP_API_TOKEN"),
        help="bearer token for rank 0's API, required beyond loopback (default: $ASYMTP_API_TOKEN)",
    )
    p.add_argument("--jaccl-devices", type=Path, help="JACCL device matrix for RDMA plans")
    p.add_argument("--join-timeout", type=float, default=60.0, help="seconds to form the group")
    p.add_argument(
        "--hf-cache",
        action="store_true",
        help="also find ORG/NAME models in the Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub "
        "or ~/.cache/huggingface/hub); nothing is downloaded",
    )
    p.add_argument(
        "--measure-port",
        type=int,
        default=DEFAULT_MEASURE_PORT,
        help="port of the measurement responder peers measure against "
        f"(default {DEFAULT_MEASURE_PORT}; 0: a free port, for several agents on one host)",
    )
    p.add_argument("--no-measure", action="store_true", help="neither measure nor be measured")


def _add_token_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--token",
        default=os.environ.get("ASYMTP_TOKEN"),
        help="planner bearer token (default: $ASYMTP_TOKEN)",
    )
    p.add_argument("--token-file", type=Path, help="read the token from this (root-only) file")


def _token(args: argparse.Namespace) -> str | None:
    """The token from --token-file, else --token/$ASYMTP_TOKEN; ValueError if unreadable."""
    from protocol.signing import read_secret_file

    if args.token_file is None:
        token: str | None = args.token
        return token
    return read_secret_file(args.token_file, "--token-file")


def _signing_key(args: argparse.Namespace) -> bytes:
    from protocol.signing import agent_signing_key, read_secret_file

    key_file = Path(args.signing_key_file) if args.signing_key_file else None
    key = read_secret_file(key_file, "--signing-key-file") if key_file else None
    verifying = agent_signing_key(key, args.planner)
    if key is None:
        print(
            "asymtp agent: no --signing-key-file: accepting plans signed with the public "
            "development key, from this loopback planner only",
            file=sys.stderr,
        )
    return verifying


def run_agent(args: argparse.Namespace) -> int:
    import re

    from executor.agent import Agent, AgentConfig
    from protocol.deployment import DEPLOYMENT_NAME_PATTERN
    from protocol.schema import NODE_ID_PATTERN

    if not re.match(DEPLOYMENT_NAME_PATTERN, args.deployment):
        return bad_input(f"--deployment {args.deployment!r}: use 1-63 of a-z, 0-9 and '-'")
    if not re.match(NODE_ID_PATTERN, args.node_id):
        return bad_input(f"--node-id {args.node_id!r}: use letters, digits, '.', '_' or '-'")
    if not args.models_dir.is_dir():
        return bad_input(f"--models-dir {args.models_dir}: not a directory")
    if not args.planner.startswith(("http://", "https://")):
        return bad_input(f"--planner {args.planner!r}: give a URL such as http://127.0.0.1:8420")
    if args.memory_gb is not None and not args.memory_gb > 0:
        return bad_input("--memory-gb must be > 0")
    if not 0 <= args.measure_port <= 65535:
        return bad_input("--measure-port must be 0-65535")
    try:
        token = _token(args)
        key = _signing_key(args)
    except ValueError as e:
        return bad_input(str(e))
    cfg = AgentConfig(
        planner=args.planner,
        deployment=args.deployment,
        node_id=args.node_id,
        models_dir=args.models_dir,
        token=token,
        signing_key=key,
        memory_bytes=round(args.memory_gb * 1e9) if args.memory_gb else None,
        serve_host=args.serve_host,
        api_token=args.api_token,
        jaccl_devices=args.jaccl_devices,
        join_timeout_s=args.join_timeout,
        hf_cache=args.hf_cache,
        measure_port=None if args.no_measure else args.measure_port,
    )
    return Agent(cfg).run()


# ---- topology ------------------------------------------------------------------------------
def add_topology_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--planner", required=True, help="planner URL, e.g. http://10.0.0.1:8420")
    p.add_argument("--deployment", required=True, help="the deployment name the agents follow")
    p.add_argument("--json", action="store_true", help="JSON instead of YAML")
    _add_token_arguments(p)


def run_topology(args: argparse.Namespace) -> int:
    import httpx

    try:
        token = _token(args)
    except ValueError as e:
        return bad_input(str(e))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{args.planner.rstrip('/')}/deployments/{args.deployment}/topology"
    try:
        r = httpx.get(
            url, params={} if args.json else {"format": "yaml"}, headers=headers, timeout=30
        )
    except httpx.HTTPError as e:
        print(f"asymtp topology: cannot reach {args.planner}: {e}", file=sys.stderr)
        return EXIT_MISMATCH
    if r.status_code != 200:
        print(f"asymtp topology: HTTP {r.status_code}: {r.text[:300]}", file=sys.stderr)
        return EXIT_BAD_INPUT if r.status_code in (404, 422) else EXIT_MISMATCH
    print(r.text.rstrip())
    return EXIT_OK
