"""The ASGI application: routes, middleware and the runtime's life cycle.

`create_app` wires one loaded pipeline to one runtime. Readiness is explicit state:
`/readyz` is 503 until the runtime has started and again once draining begins, so a
load balancer stops sending work before the server stops accepting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import msgspec
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

import serving
from jobs import InvocationMetadata, JobManager, JobSettings, StoreUnavailable
from runtimes import Pipeline, Runtime
from serving.cors import with_cors
from serving.invoke import InvokeEndpoint
from serving.jobs_api import JobsAPI
from serving.logs import AccessLog
from serving.metrics import (
    HttpMetrics,
    metrics_endpoint,
    register_jobs_collector,
    step_thread_stats,
    worker_gauges,
)
from serving.middleware import AuthMiddleware, RequestContextMiddleware
from serving.openapi import build_openapi, docs_page, swagger_ui_path
from serving.responses import json_response, problem_response, store_unavailable
from serving.runs_api import RunsAPI, runs_openapi
from serving.settings import Settings
from serving.stream_tokens import stream_token_endpoint, stream_token_openapi
from serving.ui import UIMiddleware, is_ui_path, ui_openapi
from serving.websocket import websocket_endpoint

log = structlog.get_logger("serving.app")
_encoder = msgspec.json.Encoder()


class AppState:
    """Process-wide facts the operational endpoints report."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.ready = False
        self.draining = False
        self.shutdown = anyio.Event()  # tells open SSE streams to wind down
        self.drain_started: float | None = None
        self.forced = False  # a second signal: no more waiting
        self.on_drain: list[Callable[[], None]] = []  # e.g. stop taking jobs from a shared queue
        # The graceful timeout ran out while requests still run: answer them now (e.g. a
        # sync /invoke gets 503), before the server cuts what is left.
        self.on_deadline: list[Callable[[], None]] = []
        self.deadline_reached = False
        # The server has stopped accepting: every response now says `Connection: close`.
        self.closing = False

    def begin_drain(self) -> None:
        self.draining = True
        self.drain_started = time.monotonic()
        self.shutdown.set()
        for hook in self.on_drain:
            hook()

    def reach_deadline(self) -> None:
        """Called by the server when SERVING_GRACEFUL_TIMEOUT is spent; idempotent."""
        if self.deadline_reached:
            return
        self.deadline_reached = True
        for hook in self.on_deadline:
            hook()

    def grace_left(self, graceful_timeout: float, drain_delay: float) -> float:
        """What is left of SERVING_GRACEFUL_TIMEOUT for jobs, after the server's own wait
        for in-flight requests: requests and jobs share one budget."""
        if self.forced:
            return 0.0
        if self.drain_started is None:
            return graceful_timeout
        spent = time.monotonic() - self.drain_started - drain_delay
        return max(0.0, graceful_timeout - max(0.0, spent))

    @property
    def uptime(self) -> float:
        return time.time() - self.started_at


def pipeline_info(pipeline: Pipeline, runtime: Runtime, identity: InvocationMetadata) -> dict[str, Any]:
    return {
        "pipeline": {
            "name": pipeline.name,
            "description": (pipeline.fn.__doc__ or "").strip() or None,
            "parameters": [p.name for p in pipeline.parameters],
            "outputs": [o.key for o in pipeline.outputs],
        },
        "steps": [
            {
                "id": n.id,
                "step": n.step.name,
                "upstream": list(n.upstream),
                "is_async": n.step.is_async,
                "retries": n.step.retries,
                "timeout": n.step.timeout,
            }
            for n in pipeline.nodes
        ],
        "input_schema": pipeline.input_schema(),
        "output_schema": pipeline.output_schema(),
        "deployment": {
            "name": identity.deployment_name,
            "id": identity.deployment_id,
            "snapshot_name": identity.snapshot_name,
            "snapshot_id": identity.snapshot_id,
        },
        "capture": msgspec.structs.asdict(pipeline.capture),
        "runtime": runtime.name,
        "version": serving.__version__,
    }


class ServingApp:
    """The ASGI callable the server runs: `POST /invoke` through our middleware straight
    to its handler, everything else through the same middleware, the dashboard layer
    and the Starlette app.

    Starlette's router and exception layers cost several microseconds per request;
    on /invoke, the path that has to be fast, nothing is routed, so they are skipped,
    and so is the dashboard layer, which only serves `GET /` and `/ui` paths. The
    path is chosen once, here, so each chain is one straight line of calls.
    """

    def __init__(self, starlette: Starlette, invoke: InvokeEndpoint, settings: Settings) -> None:
        self.starlette = starlette
        self.state = starlette.state
        self.invoke = invoke
        fast: ASGIApp = invoke
        rest: ASGIApp = starlette
        if settings.auth_key:
            fast = AuthMiddleware(fast, key=settings.auth_key)
            rest = AuthMiddleware(rest, key=settings.auth_key)
        rest = UIMiddleware(rest, settings)  # before auth: see serving/cors.py
        # Access lines are info level: below the configured level they are not written.
        wanted = settings.access_log and settings.log_level in ("debug", "info")
        access_log = AccessLog(settings.log_format) if wanted else None
        metrics = HttpMetrics()
        self._invoke_chain, self._chain = (
            RequestContextMiddleware(
                with_cors(inner, settings),  # CORS before auth, too
                access_log=access_log,
                metrics=metrics,
                closing=self.state.serving,
            )
            for inner in (fast, rest)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.starlette(scope, receive, send)
            return
        if kind == "http" and scope["path"] == "/invoke" and scope["method"] == "POST":
            chain = self._invoke_chain
        else:
            chain = self._chain
        try:
            await chain(scope, receive, send)
        except asyncio.CancelledError:
            # Past the graceful timeout the server cancels what still runs (a stream to a
            # client that never reads). Raising on would have the server log it with a
            # traceback, as if it were a crash; it is the shutdown working as designed,
            # and the server logs one line for the connection it then closes.
            if not self.state.serving.draining:
                raise


def create_app(
    pipeline: Pipeline,
    runtime: Runtime,
    settings: Settings,
    identity: InvocationMetadata | None = None,
) -> ServingApp:
    """Wire one pipeline to one runtime. `identity` carries the deployment and snapshot
    ids and names when the daemon serves a registered deployment."""
    identity = identity or InvocationMetadata(
        deployment_name=settings.deployment_name, pipeline_name=pipeline.name
    )
    state = AppState()
    store = None
    if settings.job_store != "memory":
        from jobs.redis_store import RedisJobStore

        store = RedisJobStore.from_url(settings.job_store, ttl=settings.job_ttl, lease=settings.job_lease)
    manager = JobManager(
        pipeline,
        runtime,
        JobSettings(
            max_concurrency=settings.max_concurrency,
            max_queue=settings.max_queue,
            job_ttl=settings.job_ttl,
            max_jobs=settings.max_jobs,
            events_max=settings.job_events_max,
            events_max_bytes=settings.job_events_max_bytes,
            events_memory_max=settings.events_memory_max,
        ),
        metadata=identity,
        store=store,
    )
    state.on_drain.append(manager.drain)
    jobs_api = JobsAPI(manager, settings, state.shutdown, lambda: state.deadline_reached)
    register_jobs_collector(manager)
    invoke = InvokeEndpoint(pipeline, manager, settings)
    runs_api = RunsAPI(settings.effective_capture_url)
    state.on_deadline.append(invoke.cut_sync_runs)
    info = pipeline_info(pipeline, runtime, identity)
    api_doc = build_openapi(
        pipeline,
        serving.__version__,
        protected=bool(settings.auth_key),
        is_open=lambda path: AuthMiddleware.is_open(path) or is_ui_path(path),
    )
    # Routes added elsewhere document themselves here: api_doc.add(path, method, operation).
    runs_openapi(api_doc)
    stream_token_openapi(api_doc)
    ui_openapi(api_doc)
    api_document = api_doc.build()
    openapi = _encoder.encode(api_document)

    pid = os.getpid()

    async def health(request: Request) -> Response:
        return json_response(
            {
                "status": "draining" if state.draining else "healthy",
                "uptime_seconds": round(state.uptime, 3),
                "pipeline": pipeline.name,
                "pid": pid,  # which worker answered (SERVING_WORKERS > 1)
            }
        )

    async def livez(request: Request) -> Response:
        return json_response({"status": "alive"})

    async def readyz(request: Request) -> Response:
        # The job store is not consulted: with Redis away, sync /invoke still serves, and
        # failing every replica's probe at once would turn an async outage into a total one.
        if state.draining:
            return problem_response(503, "draining: shutting down")
        if not state.ready:
            return problem_response(503, "starting: not ready yet")
        return json_response({"status": "ready"})

    async def info_endpoint(request: Request) -> Response:
        return json_response(info)

    async def status(request: Request) -> Response:
        return json_response(
            {
                "pipeline": pipeline.name,
                "runtime": runtime.name,
                "jobs": manager.counts(),
                "job_events": {
                    "retained_bytes": manager.event_budget.retained,
                    "max_bytes": settings.events_memory_max,
                },
                "step_threads": step_thread_stats(runtime),
                "job_store": await manager.store_state(),
                **(runtime.status() if hasattr(runtime, "status") else {}),
                "ready": state.ready,
                "draining": state.draining,
                "uptime_seconds": round(state.uptime, 3),
                "settings": settings.redacted(),
            }
        )

    async def openapi_endpoint(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if exc.status_code != 404 else f"no route for {request.url.path}"
        return problem_response(exc.status_code, detail, headers=exc.headers)

    async def job_store_error(request: Request, exc: Exception) -> Response:
        return store_unavailable(exc)

    async def server_error(request: Request, exc: Exception) -> Response:
        # Starlette logs nothing here and re-raises; RequestContextMiddleware logs it.
        return problem_response(500, "internal error; see the server log")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        await manager.start()
        state.ready = True
        log.info("ready", pipeline=pipeline.name, runtime=runtime.name)
        try:
            async with worker_gauges(manager):
                yield
        finally:
            state.ready = False
            await manager.stop(grace=state.grace_left(settings.graceful_timeout, settings.drain_delay))
            if store is not None:
                await store.close()
            await runtime.stop()

    routes: list[BaseRoute] = [
        Route("/invoke", invoke, methods=["POST"]),  # reached only via ServingApp's fast path
        Route("/jobs", jobs_api.list_jobs, methods=["GET"]),
        Route("/jobs/{job_id}", jobs_api.job, methods=["GET", "DELETE"]),
        Route("/jobs/{job_id}/cancel", jobs_api.cancel_job, methods=["POST"]),
        Route(
            "/jobs/{job_id}/stream-token", stream_token_endpoint(manager, settings.auth_key), methods=["POST"]
        ),
        Route("/stream/{job_id}", jobs_api.stream, methods=["GET"]),
        Route("/runs", runs_api.list_runs, methods=["GET"]),
        Route("/runs/{run_id}", runs_api.get_run, methods=["GET"]),
        WebSocketRoute("/stream", websocket_endpoint(manager, settings.invoke_timeout)),
        Route("/health", health),
        Route("/livez", livez),
        Route("/readyz", readyz),
        Route("/info", info_endpoint),
        Route("/status", status),
        Route("/metrics", metrics_endpoint),
        Route("/openapi.json", openapi_endpoint),
        Route("/docs", docs_page),
    ]
    if (assets := swagger_ui_path()) is not None:
        routes.append(Mount("/docs/static", StaticFiles(directory=assets), name="docs-static"))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: http_error,
            StoreUnavailable: job_store_error,  # any /jobs or /stream call while Redis is away
            Exception: server_error,
        },
    )
    app.state.serving = state
    app.state.pipeline = pipeline
    app.state.runtime = runtime
    app.state.jobs = manager
    app.state.settings = settings
    app.state.api_document = api_document
    return ServingApp(app, invoke, settings)
