"""HMAC-SHA256 signatures over an assignment's canonical JSON.

The key is the service's signing key, which defaults to its bearer token: both the planner
and its agents already hold that secret. Without either (a loopback-only service), plans are
signed with a fixed development key: that still catches corruption and tampering by anything
that does not know the source, but it is no authentication, and both sides say so in their logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from protocol.deployment import Assignment

DEVELOPMENT_KEY = "asymtp-development-key-loopback-only"


class SignatureError(ValueError):
    """An assignment without a signature, or whose signature does not match its content."""


def signing_key(key: str | None, token: str | None) -> bytes:
    return (key or token or DEVELOPMENT_KEY).encode()


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
