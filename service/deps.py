"""FastAPI dependencies: the shared state, its parts, the bearer-token check, path parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from protocol.deployment import DEPLOYMENT_NAME_PATTERN
from protocol.schema import NODE_ID_PATTERN
from service.auth import MISSING, WRONG, token_matches
from service.plans import Planner
from service.settings import Settings
from service.state import ServiceState
from service.store import Store

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <token>`; required when the service has a token.",
)


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_store(state: StateDep) -> Store:
    return state.store


def get_planner(state: StateDep) -> Planner:
    return state.planner


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
PlannerDep = Annotated[Planner, Depends(get_planner)]


async def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Passes everything when the service has no token. (`service.middleware.Guard` checks
    the same before a body is read; this one puts the scheme in the OpenAPI document.)"""
    token = settings.token_value
    if token is None:
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, MISSING, headers=challenge)
    if not token_matches(credentials.credentials, token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, WRONG, headers=challenge)


AUTHORIZED = [Depends(require_token)]

Name = Annotated[
    str, Path(pattern=DEPLOYMENT_NAME_PATTERN, description="deployment name, `[a-z0-9-]{1,63}`")
]
NodeId = Annotated[str, Path(pattern=NODE_ID_PATTERN, description="a node id of the topology")]
