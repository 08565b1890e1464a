"""Bearer-token comparison (constant time), shared by the route dependency and the middleware
that checks the token before a request body is read."""

from __future__ import annotations

import hmac

MISSING = "this endpoint needs `Authorization: Bearer <token>`"
WRONG = "wrong bearer token"


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def header_problem(authorization: str | None, token: str) -> str | None:
    """Why an `Authorization` header value does not carry `token` (None: it does)."""
    if not authorization:
        return MISSING
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return MISSING
    return None if token_matches(given.strip(), token) else WRONG
