"""The FastAPI application: `create_app(settings)`; `app_from_env()` for uvicorn workers.

    POST   /plan                                      PlanRequest    -> Plan (200 feasible or not)
    GET    /deployments                               -> [DeploymentSummary]
    PUT    /deployments/{name}                        DeploymentSpec -> Deployment (409: infeasible)
    GET    /deployments/{name}                        -> Deployment            ETag "<plan_id>"
    DELETE /deployments/{name}                        -> 204
    GET    /deployments/{name}/assignments/{node_id}  -> Assignment (signed)   ETag "<plan_id>:<rev>"
           If-None-Match -> 304; ?wait=N long-polls until it changes (404 once deleted)
    POST   /deployments/{name}/status/{node_id}       AgentStatus    -> AgentRecord
    GET    /deployments/{name}/topology[?format=yaml] -> TopologyDraft from the agents' facts
    GET    /healthz, GET /metrics (Prometheus), GET /docs (OpenAPI)
    GET    /                                          -> the topology page (page.py: static files)

Everything under /deployments needs the bearer token when one is configured. `GET /` serves
the web page (open; it reads deployments with the token typed into it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Annotated, Any, Literal, TypeVar

import anyio.to_thread
import yaml
from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from planner.plan import SOLVER_VERSION
from planner.topology_from_facts import build_topology
from protocol.deployment import (
    DEPLOYMENT_NAME_PATTERN,
    AgentRecord,
    AgentStatus,
    Assignment,
    Deployment,
    DeploymentSpec,
)
from protocol.schema import NODE_ID_PATTERN, Plan, PlanRequest
from protocol.signing import sign, signing_key
from protocol.version import __version__
from service import examples, page, responses
from service.assignments import UnknownNode, assignment_for
from service.auth import require_token
from service.doctor_routes import agent_facts, doctor_router
from service.metrics import Metrics
from service.plans import Busy, Planner
from service.settings import Settings
from service.store import Store, StoredDeployment, TooManyAgents
from service.watch import RevisionWatch

log = logging.getLogger("asymtp.service")
T = TypeVar("T")
R = TypeVar("R", bound=PlanRequest)
JSON = "application/json"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

Name = Annotated[
    str, Path(pattern=DEPLOYMENT_NAME_PATTERN, description="deployment name, `[a-z0-9-]{1,63}`")
]
NodeId = Annotated[str, Path(pattern=NODE_ID_PATTERN, description="a node id of the topology")]


# -- middleware ------------------------------------------------------------------------------
class BodyLimit:
    """Refuse a body over `limit` bytes (413) before anything parses it, declared or chunked."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _send_json(send, 400, {"detail": "Content-Length is not a number"})
                return
            if size > self.limit:
                await self._too_large(send)
                return
            if size == 0:
                await self.app(scope, receive, send)
                return
        elif b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body = message.get("body", b"")
            total += len(body)
            if total > self.limit:
                await self._too_large(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _send_json(
            send, 413, {"detail": f"request body larger than {self.limit} bytes"}, close=True
        )


async def _send_json(send: Send, status: int, body: Any, close: bool = False) -> None:
    raw = json.dumps(body).encode()
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(raw)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


class RequestMetrics:
    """Count and time every request by its route template (not its path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.request(scope["method"], path, status, time.perf_counter() - started)


# -- helpers ---------------------------------------------------------------------------------
def _validation_detail(errors: Any) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        loc = [p if isinstance(p, int | str) else str(p) for p in e.get("loc", ())]
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"loc": loc, "msg": msg, "type": str(e.get("type", "value_error"))})
    return out


def _invalid(loc: list[str | int], msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": "value_error"}])


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _etags(header: str | None) -> set[str]:
    """The entity tags of an If-None-Match header, weak or strong, quoted or not."""
    if not header:
        return set()
    tags = set()
    for part in header.split(","):
        tag = part.strip().removeprefix("W/").strip()
        if tag:
            tags.add(tag if tag == "*" or tag.startswith('"') else f'"{tag}"')
    return tags


def _capped(request: R, cap: float) -> R:
    """`request` with its solver time within `cap`: a longer explicit ask is refused (422);
    a default longer than the cap is lowered to it."""
    c = request.constraints
    if c.time_limit_s <= cap:
        return request
    if "time_limit_s" in c.model_fields_set:
        raise _invalid(
            ["body", "constraints", "time_limit_s"],
            f"this service solves for at most {cap:g} s; ask for {cap:g} or less",
        )
    capped = c.model_copy(update={"time_limit_s": cap})
    return request.model_copy(update={"constraints": capped})


# -- the application -------------------------------------------------------------------------
def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    planner = Planner(
        metrics, settings.plan_cache_size, settings.solver_threads, settings.max_pending_solves
    )
    store = Store(settings.db_path)
    watch = RevisionWatch(store.revisions, settings.poll_interval_s)
    key = signing_key(settings.signing_key_value, settings.token_value)
    authorized = [Depends(require_token(settings.token_value))]
    parsed: OrderedDict[tuple[str, int], tuple[DeploymentSpec, Plan]] = OrderedDict()

    async def db(fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args)

    def parse(stored: StoredDeployment) -> tuple[DeploymentSpec, Plan]:
        cache_key = (stored.name, stored.revision)
        hit = parsed.get(cache_key)
        if hit is None or hit[1].plan_id != stored.plan_id:
            hit = (
                DeploymentSpec.model_validate_json(stored.spec),
                Plan.model_validate_json(stored.plan),
            )
            parsed[cache_key] = hit
            while len(parsed) > 64:
                parsed.popitem(last=False)
        return hit

    async def deployment(stored: StoredDeployment) -> Deployment:
        spec, plan = parse(stored)
        records = await db(store.agents, stored.name)
        agents = {}
        for raw in records:
            r = AgentRecord.model_validate_json(raw)
            agents[r.node_id] = r
        return Deployment(
            name=stored.name,
            revision=stored.revision,
            created_at=stored.created_at,
            updated_at=stored.updated_at,
            spec=spec,
            plan=plan,
            agents=agents,
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watch.start()
        if settings.token is None:
            log.warning(
                "no token: deployment endpoints are open, assignments signed with the "
                "development key (loopback use only)"
            )
        try:
            yield
        finally:
            await watch.stop()

    app = FastAPI(
        title="asymtp planner",
        version=__version__,
        summary="Asymmetric tensor-parallel plans for Apple Silicon clusters, and deployments "
        "that executor agents poll.",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def _unprocessable(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's "error parsing the body" (bytes that are not JSON text): one 422 for
            # every kind of bad input.
            cause = type(exc.__cause__).__name__
            detail = [{"loc": ["body"], "msg": f"not JSON text ({cause})", "type": "json_invalid"}]
            return JSONResponse({"detail": detail}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(Busy)
    async def _busy(_: Request, exc: Busy) -> JSONResponse:
        return _error(429, str(exc), {"Retry-After": "1"})

    # -- planning -------------------------------------------------------------------------
    @app.get("/healthz", response_model=responses.Health, tags=["service"])
    async def healthz() -> responses.Health:
        return responses.Health(status="ok", version=__version__, solver=SOLVER_VERSION)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["service"],
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> PlainTextResponse:
        deployments, agents = await db(store.counts)
        metrics.long_polls = watch.waiting
        return PlainTextResponse(
            metrics.render(deployments, agents), media_type="text/plain; version=0.0.4"
        )

    @app.post(
        "/plan",
        tags=["planning"],
        response_class=Response,
        responses={
            200: {"model": Plan, "description": "The plan, feasible or not (`feasible` says)"},
            **responses.TOO_LARGE,
            **responses.BUSY,
        },
    )
    async def post_plan(
        request: Annotated[PlanRequest, Body(openapi_examples=examples.plan_request_examples())],
    ) -> Response:
        """Plan a request: exactly what `asymtp plan --json` prints for the same request."""
        _, body = await planner.plan(_capped(request, settings.max_solver_seconds))
        return Response(body, media_type=JSON)

    # -- deployments ----------------------------------------------------------------------
    @app.get(
        "/deployments",
        tags=["deployments"],
        dependencies=authorized,
        response_model=list[responses.DeploymentSummary],
        responses={**responses.UNAUTHORIZED},
    )
    async def list_deployments() -> list[responses.DeploymentSummary]:
        rows = await db(store.summaries)
        return [responses.DeploymentSummary(**vars(r)) for r in rows]

    @app.put(
        "/deployments/{name}",
        tags=["deployments"],
        dependencies=authorized,
        response_class=Response,
        responses={
            200: {"model": Deployment, "description": "Published: a new revision"},
            **responses.UNAUTHORIZED,
            **responses.INFEASIBLE,
            **responses.TOO_LARGE,
            **responses.BUSY,
        },
    )
    async def put_deployment(
        name: Name,
        spec: Annotated[DeploymentSpec, Body(openapi_examples=examples.deployment_spec_examples())],
    ) -> Response:
        """Plan `spec` and publish it (revision + 1, even for an unchanged plan). An infeasible
        plan is answered 409 with the plan and its reasons; nothing changes then."""
        spec = _capped(spec, settings.max_solver_seconds)
        plan, body = await planner.plan(spec.plan_request())
        if not plan.feasible:
            return Response(body, status_code=409, media_type=JSON)
        stored = await db(store.publish, name, spec.model_dump_json(), body, plan.plan_id)
        watch.poke()
        result = await deployment(stored)
        return Response(
            result.model_dump_json(), media_type=JSON, headers={"ETag": f'"{plan.plan_id}"'}
        )

    @app.get(
        "/deployments/{name}",
        tags=["deployments"],
        dependencies=authorized,
        response_class=Response,
        responses={
            200: {"model": Deployment, "description": "The deployment and its agents' reports"},
            **responses.UNAUTHORIZED,
            **responses.NOT_FOUND,
        },
    )
    async def get_deployment(name: Name) -> Response:
        stored = await db(store.get, name)
        if stored is None:
            return _error(404, f"no deployment named {name!r}")
        result = await deployment(stored)
        return Response(
            result.model_dump_json(), media_type=JSON, headers={"ETag": f'"{stored.plan_id}"'}
        )

    @app.delete(
        "/deployments/{name}",
        tags=["deployments"],
        dependencies=authorized,
        status_code=204,
        response_class=Response,
        responses={
            204: {"description": "Deleted (with its agents' records)"},
            **responses.UNAUTHORIZED,
            **responses.NOT_FOUND,
        },
    )
    async def delete_deployment(name: Name) -> Response:
        if not await db(store.delete, name):
            return _error(404, f"no deployment named {name!r}")
        watch.poke()
        return Response(status_code=204)

    @app.get(
        "/deployments/{name}/assignments/{node_id}",
        tags=["agents"],
        dependencies=authorized,
        response_class=Response,
        responses={
            200: {
                "model": Assignment,
                "description": "This node's signed assignment",
                "headers": responses.ETAG_HEADER,
            },
            304: {"description": "Unchanged (If-None-Match)", "headers": responses.ETAG_HEADER},
            **responses.UNAUTHORIZED,
            **responses.NOT_FOUND,
        },
    )
    async def get_assignment(
        name: Name,
        node_id: NodeId,
        wait: Annotated[
            float,
            Query(
                ge=0,
                le=3600,
                allow_inf_nan=False,
                description="long-poll: wait up to this many seconds (capped by the service) "
                "for an assignment whose ETag differs from If-None-Match",
            ),
        ] = 0,
        if_none_match: Annotated[str | None, Header(max_length=4096)] = None,
    ) -> Response:
        """What this node needs to start its rank (rank null: the plan leaves it out)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, settings.max_wait_s)
        seen = _etags(if_none_match)
        known_one = False
        while True:
            remaining = deadline - loop.time()
            stored = await db(store.get, name)
            if stored is None:
                # Waiting is for a first deployment; one the agent knew (If-None-Match), or that
                # went away while it waited, is news to tell at once.
                if remaining <= 0 or seen or known_one:
                    return _error(404, f"no deployment named {name!r}")
                await watch.wait(name, None, remaining)
                continue
            known_one = True
            etag = f'"{stored.plan_id}:{stored.revision}"'
            spec, plan = parse(stored)
            try:
                assignment = assignment_for(name, spec, plan, stored.revision, node_id)
            except UnknownNode as e:
                if remaining <= 0:
                    return _error(404, str(e))
                await watch.wait(name, stored.revision, remaining)
                continue
            if etag not in seen and "*" not in seen:
                signed = sign(assignment, key)
                return Response(signed.model_dump_json(), media_type=JSON, headers={"ETag": etag})
            if remaining <= 0:
                return Response(status_code=304, headers={"ETag": etag})
            await watch.wait(name, stored.revision, remaining)

    @app.post(
        "/deployments/{name}/status/{node_id}",
        tags=["agents"],
        dependencies=authorized,
        response_model=AgentRecord,
        responses={
            **responses.UNAUTHORIZED,
            **responses.TOO_MANY_AGENTS,
            **responses.TOO_LARGE,
        },
    )
    async def post_status(
        name: Name,
        node_id: NodeId,
        status: Annotated[AgentStatus, Body(openapi_examples=examples.agent_status_examples())],
    ) -> Response:
        """An agent's heartbeat or state change; accepted whether or not `name` is deployed
        (agents report their facts first, to build a topology from)."""
        if status.facts is not None and status.facts.node_id != node_id:
            raise _invalid(
                ["body", "facts", "node_id"],
                f"facts.node_id {status.facts.node_id!r} differs from the path's {node_id!r}",
            )
        record = AgentRecord.model_validate(
            {**status.model_dump(), "node_id": node_id, "seen_at": round(time.time(), 3)}
        )
        raw = record.model_dump_json()
        try:
            await db(
                store.put_agent,
                name,
                node_id,
                record.state,
                raw,
                record.seen_at,
                settings.max_agents,
            )
        except TooManyAgents as e:
            return _error(409, f"{e}; delete deployments or raise ASYMTP_MAX_AGENTS")
        return Response(raw, media_type=JSON)

    @app.get(
        "/deployments/{name}/topology",
        tags=["deployments"],
        dependencies=authorized,
        response_class=Response,
        responses={
            200: {
                "model": responses.TopologyDraft,
                "description": "A topology to check and edit (YAML with `?format=yaml`)",
                "content": {"application/yaml": {"schema": {"type": "string"}}},
            },
            **responses.UNAUTHORIZED,
            **responses.NOT_FOUND,
        },
    )
    async def get_topology(
        name: Name, format: Annotated[Literal["json", "yaml"], Query()] = "json"
    ) -> Response:
        """A topology built from the facts the agents of `name` reported."""
        facts = agent_facts(await db(store.agents, name))
        if not facts:
            return _error(404, f"no agent of {name!r} has reported its facts yet")
        topology, notes = build_topology(facts)
        if format == "yaml":
            head = "".join(f"# {n}\n" for n in notes)
            text = head + yaml.safe_dump({"topology": topology}, sort_keys=False)
            return Response(text, media_type="application/yaml")
        draft = responses.TopologyDraft(topology=topology, notes=notes)
        return Response(draft.model_dump_json(), media_type=JSON)

    app.include_router(doctor_router(store, authorized))  # peers, measure, doctor
    page.add_page(app)  # GET /: the topology page (service/static)

    # The last added is outermost: metrics see every answer, the 413s included.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """For `uvicorn --factory`: settings from the ASYMTP_* environment."""
    return create_app(Settings())
