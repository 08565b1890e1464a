"""HMAC-SHA256 signatures over an assignment's canonical JSON, and the secrets files they use.

The signing key is the service's own: generated on its first start and kept next to its
database (`<db>.signing-key`, mode 0600), or given by file; agents are given the same file.
It is never the bearer token (which travels in every request). A service without a token
(loopback only) signs with a public development key: that still catches corruption, but it
is no authentication, so an agent accepts it only from a planner on loopback.

An assignment names its deployment, node, revision and plan; `check_assignment` refuses one
for another deployment or node, or older than the newest revision the agent has run (replay).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from protocol.deployment import Assignment

DEVELOPMENT_KEY = "asymtp-development-key-loopback-only"
MIN_TOKEN_CHARS = 16
"""A token or key shorter than this is refused beyond loopback (guessable)."""
MAX_SECRET_FILE_BYTES = 4096


class SignatureError(ValueError):
    """An assignment without a signature, or whose signature does not match its content."""


class Replayed(SignatureError):
    """A validly signed assignment that is not for this agent now (other deployment or node,
    or an older revision than one it has run)."""


def is_loopback(host: str) -> bool:
    """True only for addresses other machines cannot reach (names other than localhost could
    resolve anywhere, so they count as non-loopback)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_is_loopback(url: str) -> bool:
    return is_loopback(urlsplit(url).hostname or "")


def read_secret_file(path: Path, what: str) -> str:
    """The first line of `path`, stripped: the one reader of token and key files. ValueError
    (one line naming the file) when it cannot be read, is not a regular file, or is empty."""
    try:
        if not path.exists():
            raise ValueError(f"{what} {path}: no such file")
        if not path.is_file():
            raise ValueError(f"{what} {path}: not a regular file")
        with path.open("rb") as f:
            raw = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{what} {path}: {e.strerror or e}") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"{what} {path}: larger than {MAX_SECRET_FILE_BYTES} bytes")
    lines = raw.decode("utf-8", "replace").splitlines()
    first = lines[0].strip() if lines else ""
    if not first:
        raise ValueError(f"{what} {path}: the file is empty")
    return first


def keep_key_file(path: Path) -> str:
    """The key in `path`, created (random, mode 0600) if the file does not exist yet. Safe when
    several workers start at once: one creates it, the others read it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret_file(path, "signing key file")
    except OSError as e:
        raise ValueError(f"signing key file {path}: {e.strerror or e}") from None
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def canonical(a: Assignment) -> bytes:
    body = a.model_dump(mode="json", exclude={"signature"})
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(a: Assignment, key: bytes) -> Assignment:
    digest = hmac.new(key, canonical(a), hashlib.sha256).hexdigest()
    return a.model_copy(update={"signature": digest})


def verify(a: Assignment, key: bytes) -> Assignment:
    if not a.signature:
        raise SignatureError(f"assignment for {a.node_id} of plan {a.plan_id[:12]} is unsigned")
    expected = hmac.new(key, canonical(a), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, a.signature):
        raise SignatureError(
            f"assignment for {a.node_id} of plan {a.plan_id[:12]} has a signature that does not "
            "match its content (altered, or signed with another key)"
        )
    return a


def check_assignment(a: Assignment, deployment: str, node_id: str, newest_run: int) -> None:
    """Refuse (`Replayed`) a verified assignment meant for another deployment or node, or
    older than revision `newest_run`, the newest this agent has run."""
    if a.deployment != deployment:
        raise Replayed(
            f"assignment is for deployment {a.deployment!r}; this agent follows {deployment!r}"
        )
    if a.node_id != node_id:
        raise Replayed(f"assignment is for node {a.node_id!r}; this agent is {node_id!r}")
    if a.revision < newest_run:
        raise Replayed(
            f"assignment revision {a.revision} is older than revision {newest_run} this agent "
            "has already run (a replay)"
        )


def agent_signing_key(key: str | None, planner_url: str) -> bytes:
    """The key an agent verifies assignments with: its given key, or the development key for
    a planner on loopback only; ValueError (naming why) for the development key elsewhere."""
    loopback = url_is_loopback(planner_url)
    if key is not None and key != DEVELOPMENT_KEY:
        return key.encode()
    if not loopback:
        raise ValueError(
            f"refusing the public development key: the planner {planner_url} is not on "
            "loopback, so anyone could sign plans with it; give the planner's key "
            "(--signing-key-file, the planner's <db>.signing-key)"
        )
    return DEVELOPMENT_KEY.encode()
