"""Bearer-token check for the deployment endpoints (constant-time comparison)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <token>`; required when the service has a token.",
)


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def require_token(
    token: str | None,
) -> Callable[[HTTPAuthorizationCredentials | None], Awaitable[None]]:
    """A FastAPI dependency: passes everything when `token` is None."""

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> None:
        if token is None:
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "this endpoint needs `Authorization: Bearer <token>`",
                headers=challenge,
            )
        if not token_matches(credentials.credentials, token):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "wrong bearer token", headers=challenge
            )

    return check
