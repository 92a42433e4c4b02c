"""The OpenAPI document, built once at start from the pipeline's own types.

Clients (and /docs) see exactly this pipeline's parameters and outputs on /invoke, not
a generic `object`. Swagger UI is served from the `swagger-ui-bundle` package, so the
docs page works without reaching any CDN.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse

from jobs import InvocationMetadata
from runtimes import Pipeline
from runtimes.pipeline import any_json_schema
from serving.invoke import request_type
from serving.problems import FieldError, InvokeProblem, Problem
from serving.runs_api import runs_openapi
from serving.stream_tokens import stream_token_openapi

REF = "#/components/schemas/{name}"

_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - serving</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui"}});</script>
</body></html>"""


def swagger_ui_path() -> str | None:
    try:
        from swagger_ui_bundle import swagger_ui_path as path
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    return str(path)


async def docs_page(request: Request) -> HTMLResponse:
    return HTMLResponse(_DOCS_HTML.format(title=request.app.state.pipeline.name))


def _problem(description: str, invoke: bool = False) -> dict[str, Any]:
    name = "InvokeProblem" if invoke else "Problem"
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": REF.format(name=name)}}},
    }


def build_openapi(pipeline: Pipeline, version: str) -> dict[str, Any]:
    typed_response = msgspec.defstruct(
        "InvocationResponse",
        [
            ("success", bool),
            ("outputs", pipeline.output_type | None),
            ("execution_time", float),
            ("metadata", InvocationMetadata),
            ("error", str | None, None),
        ],
        kw_only=True,
    )
    (req_schema, resp_schema, *_), components = msgspec.json.schema_components(
        [request_type(pipeline), typed_response, Problem, InvokeProblem, FieldError],
        ref_template=REF,
        schema_hook=any_json_schema,
    )
    pipeline.patch_input_schema(components["PipelineInput"], components, "#/components/schemas/{model}")
    components["InvokeRequest"]["additionalProperties"] = False
    runs_paths, runs_components = runs_openapi(REF)
    components.update(runs_components)
    ops_json = {"application/json": {"schema": {"type": "object"}}}
    probe = {"200": {"description": "OK", "content": ops_json}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{pipeline.name} (serving)",
            "version": version,
            "description": pipeline.fn.__doc__ or f"Pipeline '{pipeline.name}' served by serving.",
        },
        "paths": {
            "/invoke": {
                "post": {
                    "summary": f"Run pipeline '{pipeline.name}' and return its outputs",
                    "operationId": "invoke",
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": req_schema}},
                    },
                    "responses": {
                        "200": {
                            "description": "The run completed",
                            "content": {"application/json": {"schema": resp_schema}},
                        },
                        "400": _problem("Malformed JSON", True),
                        "401": _problem("Missing or wrong bearer token"),
                        "413": _problem("Body larger than SERVING_MAX_BODY_BYTES", True),
                        "415": _problem("Body is not JSON", True),
                        "422": _problem("Unknown or mistyped parameters; `errors` lists each", True),
                        "500": _problem("A step failed", True),
                        "504": _problem("The run exceeded its timeout", True),
                    },
                }
            },
            "/health": {"get": {"summary": "Liveness with uptime and pipeline name", "responses": probe}},
            "/livez": {"get": {"summary": "The process answers", "responses": probe}},
            "/readyz": {
                "get": {
                    "summary": "Ready to serve (503 while starting or draining)",
                    "responses": {**probe, "503": _problem("Not ready")},
                }
            },
            "/info": {"get": {"summary": "Pipeline, steps and JSON schemas", "responses": probe}},
            "/status": {"get": {"summary": "Effective settings (secrets redacted)", "responses": probe}},
            **runs_paths,
            **stream_token_openapi(REF),
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
