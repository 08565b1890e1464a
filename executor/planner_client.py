"""The agent's side of the planner service: long-poll an assignment, report status.

Every assignment is verified against its HMAC signature before the agent acts on it; an
unsigned or altered one raises `SignatureError`, a validly signed one for another deployment
or node, or older than one already accepted, `Replayed` (the agent refuses both, saying why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from protocol.deployment import AgentStatus, Assignment
from protocol.signing import SignatureError, check_assignment, verify

POLL_SLACK_S = 10.0  # the HTTP timeout of a long poll beyond the wait the server may take

__all__ = ["Assignment", "PlannerClient", "PlannerUnavailable", "SignatureError", "Update"]


class PlannerUnavailable(RuntimeError):
    """The planner could not be reached or answered with a server error."""


@dataclass(frozen=True)
class Update:
    changed: bool
    assignment: Assignment | None
    """None when the deployment does not exist (deleted, or not created yet)."""
    detail: str = ""


class PlannerClient:
    def __init__(
        self,
        base_url: str,
        deployment: str,
        node_id: str,
        token: str | None,
        key: bytes,
    ) -> None:
        self.deployment = deployment
        self.node_id = node_id
        self.key = key
        self.newest_run = 0
        """The newest revision accepted: an older one is a replay."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=10.0)

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise PlannerUnavailable(f"{type(e).__name__}: {e}") from None
        if r.status_code >= 500:
            raise PlannerUnavailable(f"HTTP {r.status_code} from {path}")
        if r.status_code in (401, 403):
            raise PlannerUnavailable(f"the planner refused our token (HTTP {r.status_code})")
        return r

    def poll(self, current: Assignment | None, wait: float) -> Update:
        """Wait up to `wait` seconds for an assignment other than `current`."""
        path = f"/deployments/{self.deployment}/assignments/{self.node_id}"
        headers = {"If-None-Match": f'"{current.etag}"'} if current is not None else {}
        r = self._request(
            "GET", path, params={"wait": wait}, headers=headers, timeout=wait + POLL_SLACK_S
        )
        if r.status_code == 304:
            return Update(changed=False, assignment=current)
        if r.status_code == 404:
            return Update(changed=current is not None, assignment=None, detail=_detail(r))
        if r.status_code != 200:
            raise PlannerUnavailable(f"HTTP {r.status_code} from {path}: {_detail(r)}")
        try:
            fresh = Assignment.model_validate_json(r.content)
        except ValueError as e:
            raise SignatureError(f"the planner sent an unreadable assignment: {e}") from None
        verify(fresh, self.key)
        check_assignment(fresh, self.deployment, self.node_id, self.newest_run)
        self.newest_run = max(self.newest_run, fresh.revision)
        changed = current is None or fresh.etag != current.etag
        return Update(changed=changed, assignment=fresh)

    def post_status(self, status: AgentStatus) -> None:
        path = f"/deployments/{self.deployment}/status/{self.node_id}"
        r = self._request(
            "POST",
            path,
            content=status.model_dump_json(exclude_none=True),
            headers={"Content-Type": "application/json"},
        )
        if r.status_code >= 400:
            raise PlannerUnavailable(f"HTTP {r.status_code} from {path}: {_detail(r)}")


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
