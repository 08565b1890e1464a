"""What every route shares: settings, store, planner, long-poll watch, signing key and metrics,
built once per application and reached through FastAPI dependencies (`service.deps`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio.to_thread

from protocol.deployment import AgentRecord, Deployment, DeploymentSpec
from protocol.plan import Plan
from service.metrics import Metrics
from service.plans import Planner
from service.settings import Settings
from service.store import Store, StoredDeployment
from service.watch import RevisionWatch

T = TypeVar("T")
PARSED_CACHE_SIZE = 64


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    planner: Planner
    store: Store
    watch: RevisionWatch
    key: bytes
    _parsed: OrderedDict[tuple[str, int], tuple[DeploymentSpec, Plan]] = field(
        default_factory=OrderedDict
    )

    @classmethod
    def build(cls, settings: Settings) -> ServiceState:
        metrics = Metrics()
        planner = Planner(
            metrics, settings.plan_cache_size, settings.solver_threads, settings.max_pending_solves
        )
        store = Store(settings.db_path)
        watch = RevisionWatch(store.revisions, settings.poll_interval_s)
        return cls(settings, metrics, planner, store, watch, settings.signing_key())

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """A store call off the event loop (SQLite blocks)."""
        return await anyio.to_thread.run_sync(fn, *args)

    def parse(self, stored: StoredDeployment) -> tuple[DeploymentSpec, Plan]:
        """The stored spec and plan as models, parsed once per revision."""
        cache_key = (stored.name, stored.revision)
        hit = self._parsed.get(cache_key)
        if hit is None or hit[1].plan_id != stored.plan_id:
            hit = (
                DeploymentSpec.model_validate_json(stored.spec),
                Plan.model_validate_json(stored.plan),
            )
            self._parsed[cache_key] = hit
            while len(self._parsed) > PARSED_CACHE_SIZE:
                self._parsed.popitem(last=False)
        return hit

    async def deployment(self, stored: StoredDeployment) -> Deployment:
        spec, plan = self.parse(stored)
        records = [
            AgentRecord.model_validate_json(r)
            for r in await self.db(self.store.agents, stored.name)
        ]
        return Deployment(
            name=stored.name,
            revision=stored.revision,
            created_at=stored.created_at,
            updated_at=stored.updated_at,
            spec=spec,
            plan=plan,
            agents={r.node_id: r for r in records},
        )
