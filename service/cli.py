"""`asymtp serve`: run the planner service (uvicorn). Exit 2 on a bad setting, e.g. a
non-loopback `--host` without a token."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; ASYMTP_HOST)")
    p.add_argument("--port", type=int, help="port (default 8420; ASYMTP_PORT)")
    p.add_argument("--workers", type=int, help="worker processes (default 1; ASYMTP_WORKERS)")
    p.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help="SQLite file (default ./asymtp.sqlite; ASYMTP_DB_PATH)",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="read the bearer token from this file (or set ASYMTP_TOKEN)",
    )
    p.add_argument(
        "--signing-key-file",
        type=Path,
        metavar="PATH",
        help="the assignments' HMAC key (default: <db>.signing-key, created on first start; "
        "ASYMTP_SIGNING_KEY_FILE); give the agents the same file",
    )
    p.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level (default info; ASYMTP_LOG_LEVEL)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    given = {
        "HOST": args.host,
        "PORT": args.port,
        "WORKERS": args.workers,
        "DB_PATH": args.db,
        "TOKEN_FILE": args.token_file,
        "SIGNING_KEY_FILE": args.signing_key_file,
        "LOG_LEVEL": args.log_level,
    }
    return {f"ASYMTP_{k}": str(v) for k, v in given.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from planner.request_io import describe
    from protocol.signing import MIN_TOKEN_CHARS, is_loopback
    from service.settings import Settings
    from service.store import Store, StoreError

    def fail(message: str) -> int:
        print(f"asymtp serve: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT

    # Flags win over the environment; the workers read the same environment.
    os.environ.update(_overrides(args))
    try:
        settings = Settings()
    except ValidationError as e:
        return fail(describe(e).removeprefix("request: "))
    if settings.token is None and not is_loopback(settings.host):
        return fail(
            f"refusing to listen on {settings.host or 'every address'} without a token: set "
            "ASYMTP_TOKEN or --token-file (or listen on 127.0.0.1)"
        )
    token = settings.token_value
    if (
        token is not None
        and len(token.strip()) < MIN_TOKEN_CHARS
        and not is_loopback(settings.host)
    ):
        return fail(
            f"refusing to listen on {settings.host or 'every address'} with a token of fewer "
            f"than {MIN_TOKEN_CHARS} characters: use a longer one (e.g. `openssl rand -hex 24`)"
        )
    if settings.db_path != settings.db_path.absolute():
        # Workers may start elsewhere: pin the file the operator meant.
        os.environ["ASYMTP_DB_PATH"] = str(settings.db_path.absolute())
    try:
        Store(settings.db_path)
        settings.signing_key()  # created now, once, before the workers start
    except (StoreError, ValueError) as e:
        return fail(str(e))
    if settings.signing_key_file is None and settings.token is not None:
        os.environ["ASYMTP_SIGNING_KEY_FILE"] = str(settings.key_path.absolute())

    import uvicorn

    uvicorn.run(
        "service.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.graceful_shutdown_s),
        server_header=False,
        proxy_headers=False,
    )
    return 0
