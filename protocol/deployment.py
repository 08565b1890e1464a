"""Deployments: what the planner service publishes and what executor agents read and report.

The service (`service`) and the agents (`executor.agent`) share these models; the
assignment an agent receives is signed (`protocol.signing`) over its canonical JSON.

    PUT  /deployments/{name}                         DeploymentSpec  -> Deployment
    GET  /deployments/{name}                         -> Deployment          (ETag: plan_id)
    GET  /deployments/{name}/assignments/{node_id}   -> Assignment          (ETag: plan_id:revision)
    POST /deployments/{name}/status/{node_id}        AgentStatus     -> AgentRecord
    GET  /deployments/{name}/peers                   -> MeasurePeers  (agents measure these only)
    POST /deployments/{name}/measure                 -> MeasurePeers  (every agent measures again)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from protocol.plan import Plan, RankPlan
from protocol.schema import (
    NODE_ID_PATTERN,
    NodeFacts,
    Number,
    PlanRequest,
    Range,
    StrictModel,
    Whole,
)

DEPLOYMENT_NAME_PATTERN = r"^[a-z0-9-]{1,63}$"
DEFAULT_RING_PORT = 52100
LIVENESS_OFFSET = 1000
"""Rank r also keeps `ring_port + LIVENESS_OFFSET + r` open, so peers can tell who is gone."""
MEASURE_OFFSET = 2000
"""Each agent's measurement responder (TCP echo and sink that peers measure latency and
bandwidth against) listens on `DEFAULT_RING_PORT + MEASURE_OFFSET` unless told otherwise
(`asymtp agent --measure-port`; 0 picks a free port, for several agents on one host). Agents
report the port in their facts, so only the deployment's own agents are ever measured."""
DEFAULT_MEASURE_PORT = DEFAULT_RING_PORT + MEASURE_OFFSET
DEFAULT_SERVE_PORT = 8000

Backend = Literal["ring", "jaccl"]
AgentState = Literal["idle", "loading", "joining", "ready", "failed"]


class DeploymentSpec(PlanRequest):
    """A plan request plus where the model lives on the nodes and which ports the group uses."""

    model_path: Annotated[str, Field(min_length=1, max_length=1024)]
    """The model directory, relative to each agent's `--models-dir` (no `..`, not absolute)."""
    ring_port: Annotated[int, Field(ge=1024, le=64000), Whole] = DEFAULT_RING_PORT
    """Rank r listens on `ring_port + r` for the MLX ring (distinct ports share one host) and
    on `ring_port + 1000 + r` for liveness probes: open both ranges between the nodes."""
    serve_port: Annotated[int, Field(ge=1024, le=65535), Whole] = DEFAULT_SERVE_PORT
    """Rank 0 serves the OpenAI-compatible API here."""

    @field_validator("model_path")
    @classmethod
    def _relative(cls, v: str) -> str:
        parts = v.replace("\\", "/").split("/")
        if v.startswith(("/", "~")) or ".." in parts or "\x00" in v:
            raise ValueError(
                "must be a path relative to the agents' models directory, without '..'"
            )
        return v

    def plan_request(self) -> PlanRequest:
        return PlanRequest(topology=self.topology, model=self.model, constraints=self.constraints)


class Peer(StrictModel):
    rank: int
    node_id: str
    host: str
    """The node's `address`, or 127.0.0.1 where the topology gives none (one-host tests)."""
    port: int
    layers: Range | None = None
    """The decoder layers this peer's rank runs (`RankPlan.layers`): ranks with the same
    layers form a pipeline stage. None (an older service): one stage."""


class Assignment(StrictModel):
    """Everything one node needs to start its rank. `rank` is None for a node the plan leaves
    out (it idles). `signature` is the HMAC-SHA256 (hex) of the other fields' canonical JSON."""

    deployment: str
    node_id: str
    revision: Annotated[int, Field(ge=1)]
    """Counts publications of the deployment: a re-published identical plan is a new revision."""
    plan_id: str
    rank: int | None
    world_size: int
    backend: Backend
    peers: list[Peer]
    """Ring order (rank 0 first)."""
    rank_plan: RankPlan | None
    model_path: str
    serve_port: int
    context_tokens: Annotated[int, Field(ge=1)] = 8192
    batch_size: Annotated[int, Field(ge=1)] = 1
    """The plan's KV budget (`Constraints`): rank 0 admits sequences within
    `context_tokens × batch_size` tokens, none longer than `context_tokens`."""
    signature: str = ""

    @property
    def etag(self) -> str:
        return f"{self.plan_id}:{self.revision}"


class AgentStatus(StrictModel):
    """An agent's report (heartbeat or state change)."""

    state: AgentState
    plan_id: Annotated[str | None, Field(max_length=128)] = None
    revision: Annotated[int | None, Field(ge=0), Whole] = None
    rank: Annotated[int | None, Field(ge=0, le=1024), Whole] = None
    progress: Annotated[float | None, Field(ge=0, le=1), Number] = None
    """Loading progress, layers done / total."""
    detail: Annotated[str | None, Field(max_length=1024)] = None
    reason: Annotated[str | None, Field(max_length=4096)] = None
    """Why the state is `failed`."""
    serving: Annotated[str | None, Field(max_length=512)] = None
    """Rank 0's OpenAI endpoint once ready."""
    restarts: Annotated[int, Field(ge=0), Whole] = 0
    """Times the rank failed and was restarted under the current plan."""
    last_failure: Annotated[str | None, Field(max_length=4096)] = None
    """Why it last failed under the current plan (kept while it restarts)."""
    facts: NodeFacts | None = None


class AgentRecord(AgentStatus):
    node_id: Annotated[str, Field(pattern=NODE_ID_PATTERN)]
    seen_at: float
    """Unix time of the last report."""


class MeasurePeers(StrictModel):
    """`GET /deployments/{name}/peers`: the agents an agent may measure, and the planner's
    measurement request number (a new number asks every agent to measure again)."""

    request: Annotated[int, Field(ge=0)] = 0
    agents: list[NodeFacts] = Field(default_factory=list)


class Deployment(StrictModel):
    name: Annotated[str, Field(pattern=DEPLOYMENT_NAME_PATTERN)]
    revision: int
    created_at: float
    updated_at: float
    spec: DeploymentSpec
    plan: Plan
    agents: dict[str, AgentRecord] = Field(default_factory=dict)
