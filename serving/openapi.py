"""The OpenAPI document, built once at start from the pipeline's own types.

Clients (and /docs) see exactly this pipeline's parameters and outputs on /invoke, not
a generic `object`, and every route with every reply it can give: the suite runs
schemathesis over the document against a real daemon, so a reply the document leaves
out is a failing test. A module that adds routes adds them here too, with
`ApiDocument.add` (see `core_paths` and `job_paths`); a test compares the app's routes
with the document.

OpenAPI 3.1: its schemas are JSON Schema 2020-12, which is what msgspec emits
(`type: "null"`, numeric `exclusiveMinimum`).

Swagger UI is served from the `swagger-ui-bundle` package, so the docs page works
without reaching any CDN. On a protected deployment the page itself is open, since it
holds nothing; the document and every call it makes need the bearer token, which the
page asks for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse

from jobs import InvocationMetadata, Job, JobStatus
from runtimes import Pipeline
from runtimes.pipeline import any_json_schema
from serving.invoke import request_type
from serving.jobs_api import MAX_PAGE, JobPage, JobSummary
from serving.problems import FieldError, InvokeProblem, Problem

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{name}"

_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - serving</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><form id="token" hidden style="font-family:sans-serif;margin:2em">
<label>This deployment needs its bearer token (SERVING_AUTH_KEY):
<input id="key" type="password" autocomplete="off" size="40"></label>
<button type="submit">Open the API</button></form>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>
const KEY = "serving-bearer";
function open(token) {{
  window.ui = SwaggerUIBundle({{
    url: "/openapi.json", dom_id: "#swagger-ui",
    requestInterceptor: (req) => {{
      if (token && !req.headers.Authorization) req.headers.Authorization = "Bearer " + token;
      return req;
    }},
    onComplete: () => {{ if (token) window.ui.preauthorizeApiKey("bearer", token); }},
  }});
}}
function ask() {{
  const form = document.getElementById("token");
  form.hidden = false;
  form.onsubmit = (e) => {{
    e.preventDefault();
    const token = document.getElementById("key").value;
    sessionStorage.setItem(KEY, token);
    form.hidden = true;
    start(token);
  }};
}}
function start(token) {{
  const headers = token ? {{Authorization: "Bearer " + token}} : {{}};
  fetch("/openapi.json", {{headers}}).then((r) => (r.status === 401 ? ask() : open(token)));
}}
start(sessionStorage.getItem(KEY));
</script>
</body></html>"""


def swagger_ui_path() -> str | None:
    try:
        from swagger_ui_bundle import swagger_ui_path as path
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    return str(path)


async def docs_page(request: Request) -> HTMLResponse:
    return HTMLResponse(_DOCS_HTML.format(title=request.app.state.pipeline.name))


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def problem_reply(description: str, invoke: bool = False, /, **headers: str) -> dict[str, Any]:
    """A problem+json reply; `invoke=True` is /invoke's shape (with `success`, `error`).
    `headers` maps a response header to its description (documented, not required)."""
    reply: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": ref("InvokeProblem" if invoke else "Problem")}},
    }
    if headers:
        reply["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
        }
    return reply


def json_reply(description: str, schema: dict[str, Any], **headers: str) -> dict[str, Any]:
    reply: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        reply["headers"] = {
            name: {"description": text, "required": True, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return reply


class ApiDocument:
    """The document under construction: routes add their operations, types their schemas.

    On a protected deployment (SERVING_AUTH_KEY set) every operation requires the bearer
    scheme and may answer 401, except the paths the auth middleware leaves open.
    """

    def __init__(
        self,
        *,
        title: str,
        version: str,
        description: str,
        protected: bool,
        is_open: Callable[[str], bool] = lambda path: False,
    ) -> None:
        self.info = {"title": title, "version": version, "description": description}
        self.protected = protected
        self.is_open = is_open
        self.paths: dict[str, dict[str, Any]] = {}
        self.types: list[Any] = []
        self._patches: list[Any] = []

    def add(self, path: str, method: str, operation: dict[str, Any]) -> None:
        """Document one operation (`method` lower case); the path may repeat for others."""
        ops = self.paths.setdefault(path, {})
        if method in ops:
            raise ValueError(f"{method.upper()} {path} is documented twice")
        ops[method] = operation

    def add_types(self, *types: Any) -> None:
        """Types (msgspec Structs) whose schemas go in `components`, referred to by name."""
        self.types.extend(t for t in types if t not in self.types)

    def patch_components(self, patch: Any) -> None:
        """`patch(components)` runs once the schemas are built (to adjust one in place)."""
        self._patches.append(patch)

    def build(self) -> dict[str, Any]:
        _, components = msgspec.json.schema_components(
            self.types, ref_template=REF, schema_hook=any_json_schema
        )
        for patch in self._patches:
            patch(components)
        paths: dict[str, dict[str, Any]] = {}
        for path, ops in self.paths.items():
            paths[path] = {}
            for method, op in ops.items():
                op = dict(op)
                if self.protected:
                    if self.is_open(path):
                        op["security"] = []
                    else:
                        invoke = path == "/invoke"
                        op["responses"] = {
                            **op["responses"],
                            "401": problem_reply(
                                "Missing or wrong bearer token",
                                invoke,
                                **{"WWW-Authenticate": "The scheme to use: Bearer"},
                            ),
                        }
                paths[path][method] = op
        doc: dict[str, Any] = {
            "openapi": OPENAPI_VERSION,
            "info": self.info,
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "SERVING_AUTH_KEY of the deployment",
                    }
                },
            },
        }
        if self.protected:
            doc["security"] = [{"bearer": []}]
        return doc


def _json_object(description: str) -> dict[str, Any]:
    return json_reply(description, {"type": "object"})


# OpenAPI before 3.2 has no `itemSchema`: an event stream's `schema` describes one event.
_SSE_EVENT = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The event's seq"},
        "event": {"type": "string", "description": "run_started, step_completed, progress, ..."},
        "data": {"type": "string", "description": "The event as JSON"},
    },
}
_NOT_FOUND = problem_reply("No job with this id (or it expired)")
_STORE_DOWN = problem_reply("The job store does not answer; retry later", **{"Retry-After": "Seconds"})
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def core_paths(doc: ApiDocument, pipeline: Pipeline) -> None:
    """/invoke, the probes, /info, /status, /metrics and the document itself."""
    typed_response = msgspec.defstruct(
        "InvokeResponse",
        [
            ("success", bool),
            ("outputs", pipeline.output_type | None),
            ("execution_time", float),
            ("metadata", InvocationMetadata),
            ("error", str | None, None),
        ],
        kw_only=True,
    )
    doc.add_types(request_type(pipeline), typed_response, InvokeProblem)

    def close_request(components: dict[str, Any]) -> None:
        pipeline.patch_input_schema(components["PipelineInput"], components, REF.replace("{name}", "{model}"))
        components["InvokeRequest"]["additionalProperties"] = False

    doc.patch_components(close_request)
    doc.add(
        "/invoke",
        "post",
        {
            "summary": f"Run pipeline '{pipeline.name}' and return its outputs",
            "description": (
                "Synchronous by default. `?mode=async` or `Prefer: respond-async` answers "
                "202 with the job's links at once; `Prefer: wait=N` waits up to N seconds "
                "for the result, then answers 202; an `Idempotency-Key` runs the body once "
                "per key."
            ),
            "operationId": "invoke",
            "parameters": [
                {
                    "name": "mode",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["sync", "async"], "default": "sync"},
                },
                {
                    "name": "Prefer",
                    "in": "header",
                    "description": "RFC 7240: `respond-async`, `wait=<seconds>`",
                    "schema": {"type": "string"},
                },
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "description": "The same key with the same body returns the same job",
                    "schema": {"type": "string"},
                },
            ],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": ref("InvokeRequest")}},
            },
            "responses": {
                "200": json_reply(
                    "The run completed (or, for a repeated Idempotency-Key in async mode, the job)",
                    {"anyOf": [ref("InvokeResponse"), ref("Job")]},
                ),
                "202": json_reply(
                    "Accepted as a job: poll `location`, stream `stream_url`",
                    ref("JobSummary"),
                    Location="The job: /jobs/{job_id}",
                ),
                "400": problem_reply("Malformed JSON (or a body of whitespace only)", True),
                "409": problem_reply("The job was canceled before it finished", True),
                "413": problem_reply("Body larger than SERVING_MAX_BODY_BYTES", True),
                "415": problem_reply("Body is not JSON", True),
                "422": problem_reply("Unknown or mistyped parameters; `errors` lists each", True),
                "429": problem_reply(
                    "Every slot is busy and the queue is full", True, **{"Retry-After": "Seconds to wait"}
                ),
                "500": problem_reply("A step failed, or an output broke its declared type", True),
                "503": problem_reply(
                    "The job store does not answer, or the server is shutting down",
                    True,
                    **{"Retry-After": "Seconds to wait"},
                ),
                "504": problem_reply("The run exceeded its timeout", True),
            },
        },
    )
    probe = _json_object("OK")
    doc.add(
        "/health", "get", {"summary": "Liveness with uptime and pipeline name", "responses": {"200": probe}}
    )
    doc.add("/livez", "get", {"summary": "The process answers", "responses": {"200": probe}})
    doc.add(
        "/readyz",
        "get",
        {
            "summary": "Ready to serve (503 while starting or draining)",
            "responses": {"200": probe, "503": problem_reply("Not ready")},
        },
    )
    doc.add("/info", "get", {"summary": "Pipeline, steps and JSON schemas", "responses": {"200": probe}})
    doc.add(
        "/status", "get", {"summary": "Effective settings (secrets redacted)", "responses": {"200": probe}}
    )
    text = {"schema": {"type": "string"}}
    doc.add(
        "/metrics",
        "get",
        {
            "summary": "Prometheus metrics (OpenMetrics when the scraper asks for it)",
            "responses": {
                "200": {
                    "description": "The metrics",
                    "content": {"text/plain": text, "application/openmetrics-text": text},
                }
            },
        },
    )
    doc.add(
        "/openapi.json",
        "get",
        {"summary": "This document", "responses": {"200": _json_object("OpenAPI 3.1")}},
    )
    doc.add(
        "/docs",
        "get",
        {
            "summary": "Swagger UI for this document",
            "responses": {"200": {"description": "The page", "content": {"text/html": text}}},
        },
    )
    if (assets := swagger_ui_path()) is not None:
        files = sorted(f for f in os.listdir(assets) if not f.endswith((".map", ".j2")))
        doc.add(
            "/docs/static/{file}",
            "get",
            {
                "summary": "Swagger UI's own files, served locally",
                "parameters": [
                    {
                        "name": "file",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": files},
                    }
                ],
                "responses": {
                    "200": {"description": "The file", "content": {"*/*": text}},
                    "404": problem_reply("No such file"),
                },
            },
        )


def job_paths(doc: ApiDocument) -> None:
    """/jobs, /jobs/{job_id}, cancel, and /stream/{job_id} (SSE)."""
    doc.add_types(Job, JobSummary, JobPage, Problem, FieldError)
    doc.add(
        "/jobs",
        "get",
        {
            "summary": "Jobs, newest first, a page at a time",
            "operationId": "list_jobs",
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"type": "string", "enum": [s.value for s in JobStatus]},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100},
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "description": "`next_cursor` of the previous page",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                },
            ],
            "responses": {
                "200": json_reply("One page of jobs", ref("JobPage")),
                "422": problem_reply("A bad query parameter; `errors` names it"),
                "503": _STORE_DOWN,
            },
        },
    )
    doc.add(
        "/jobs/{job_id}",
        "get",
        {
            "summary": "One job, its progress and (once finished) its result",
            "operationId": "get_job",
            "parameters": [
                _JOB_ID,
                {
                    "name": "wait",
                    "in": "query",
                    "description": "Long-poll: seconds to wait for the end (at most SERVING_MAX_WAIT)",
                    "schema": {"type": "number", "minimum": 0},
                },
            ],
            "responses": {
                "200": json_reply("The job", ref("Job")),
                "404": _NOT_FOUND,
                "422": problem_reply("`wait` is not a number of seconds"),
                "503": _STORE_DOWN,
            },
        },
    )
    doc.add(
        "/jobs/{job_id}",
        "delete",
        {
            "summary": "Forget a finished job",
            "operationId": "delete_job",
            "parameters": [_JOB_ID],
            "responses": {
                "204": {"description": "Deleted"},
                "404": _NOT_FOUND,
                "409": problem_reply("The job has not finished; cancel it first"),
                "503": _STORE_DOWN,
            },
        },
    )
    doc.add(
        "/jobs/{job_id}/cancel",
        "post",
        {
            "summary": "Cancel a queued or running job",
            "operationId": "cancel_job",
            "parameters": [_JOB_ID],
            "responses": {
                "200": json_reply("Canceled", ref("Job")),
                "202": json_reply("Cancellation requested and under way", ref("Job")),
                "404": _NOT_FOUND,
                "409": problem_reply("The job has already finished"),
                "503": _STORE_DOWN,
            },
        },
    )
    doc.add(
        "/stream/{job_id}",
        "get",
        {
            "summary": "A job's events as Server-Sent Events (`id:` seq, `event:` type, `data:` JSON)",
            "description": (
                "Resumes after `Last-Event-ID` or `after_seq`; ends after the terminal event. "
                "The same events are on `WebSocket /stream` (not expressible in OpenAPI)."
            ),
            "operationId": "stream_job",
            "parameters": [
                _JOB_ID,
                {
                    "name": "after_seq",
                    "in": "query",
                    "description": "Resume after this event id (empty: from the start)",
                    "schema": {"type": "string", "pattern": "^[0-9]{0,18}$"},
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "description": "As `after_seq`; wins when both are sent",
                    "schema": {"type": "string", "pattern": "^[0-9]{0,18}$"},
                },
            ],
            "responses": {
                "200": {
                    "description": "The event stream",
                    "content": {"text/event-stream": {"schema": _SSE_EVENT}},
                },
                "404": _NOT_FOUND,
                "422": problem_reply("The resume point is not an event id"),
                "503": _STORE_DOWN,
            },
        },
    )


def build_openapi(
    pipeline: Pipeline,
    version: str,
    *,
    protected: bool = False,
    is_open: Callable[[str], bool] = lambda path: False,
) -> ApiDocument:
    """The document of the routes every daemon has; add others before `build()`."""
    doc = ApiDocument(
        title=f"{pipeline.name} (serving)",
        version=version,
        description=pipeline.fn.__doc__ or f"Pipeline '{pipeline.name}' served by serving.",
        protected=protected,
        is_open=is_open,
    )
    core_paths(doc, pipeline)
    job_paths(doc)
    return doc
