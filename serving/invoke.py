"""`POST /invoke`: decode and validate the request, run the pipeline, encode the reply.

The hot path is deliberately flat: one msgspec decode straight into the pipeline's own
request Struct, one runtime call, one encode. Explaining a bad request (every bad field,
with its path) happens only on the error path.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from runtimes import Pipeline, RunStatus, Runtime
from runtimes.errors import ParameterError
from runtimes.pipeline import split_validation_error
from serving.logs import request_id_var
from serving.problems import FieldError, InvocationMetadata, invoke_problem_response
from serving.settings import Settings

Timeout = Annotated[float, msgspec.Meta(gt=0)]


class InvocationResponse(msgspec.Struct, kw_only=True):
    success: bool
    outputs: dict[str, Any] | None
    execution_time: float
    metadata: InvocationMetadata
    error: str | None = None


def request_type(pipeline: Pipeline) -> type[msgspec.Struct]:
    """The /invoke body for this pipeline: `{"parameters": {...}, "run_name", "timeout"}`."""
    return msgspec.defstruct(
        "InvokeRequest",
        [
            ("parameters", pipeline.input_type, msgspec.field(default_factory=pipeline.input_type)),
            ("run_name", str | None, None),
            ("timeout", Timeout | None, None),
        ],
        kw_only=True,
        forbid_unknown_fields=True,
    )


class BodyTooLarge(Exception):
    pass


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing it as soon as it passes `limit` bytes (not after)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class InvokeEndpoint:
    """The /invoke handler bound to one pipeline, runtime and settings."""

    def __init__(self, pipeline: Pipeline, runtime: Runtime, settings: Settings) -> None:
        self.pipeline = pipeline
        self.runtime = runtime
        self.settings = settings
        self.request_type = request_type(pipeline)
        self.decoder = msgspec.json.Decoder(self.request_type)
        self.encoder = msgspec.json.Encoder()
        self.empty = self.request_type()
        self.param_fields = {f.name: f for f in msgspec.structs.fields(pipeline.input_type)}

    def _metadata(self, run_id: str | None, run_name: str | None, params: Any) -> InvocationMetadata:
        return InvocationMetadata(
            deployment_name=self.settings.deployment_name,
            pipeline_name=self.pipeline.name,
            run_id=run_id,
            run_name=run_name,
            parameters_used=params,
        )

    async def handle(self, request: Request) -> Response:
        ctype = request.headers.get("content-type")
        if ctype is not None and not _is_json(ctype):
            return self._fail(415, f"content type {ctype!r} is not supported; send application/json")
        try:
            body = await read_body(request, self.settings.max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening; nothing to run
        except BodyTooLarge:
            return self._fail(413, f"request body exceeds the limit of {self.settings.max_body_bytes} bytes")
        try:
            req: Any = self.decoder.decode(body) if body.strip() else self.empty
        except msgspec.ValidationError:
            return self._fail(422, "request parameters are invalid", errors=self.explain(body))
        except msgspec.DecodeError as exc:
            return self._fail(400, f"request body is not valid JSON: {exc}")

        timeout = self.settings.invoke_timeout
        if req.timeout is not None:
            timeout = req.timeout if timeout is None else min(timeout, req.timeout)
        try:
            result = await self.runtime.run(
                self.pipeline, req.parameters, run_name=req.run_name, timeout=timeout
            )
        except ParameterError as exc:
            errors = [FieldError(f"parameters.{loc}", msg) for loc, msg in exc.errors]
            return self._fail(422, "request parameters are invalid", errors=errors)
        metadata = self._metadata(result.run_id, result.run_name, req.parameters)
        if result.status is RunStatus.completed:
            body_out = InvocationResponse(
                success=True, outputs=result.outputs, execution_time=result.execution_time, metadata=metadata
            )
            try:
                return Response(self.encoder.encode(body_out), media_type="application/json")
            except (TypeError, ValueError, OverflowError) as exc:
                return self._fail(
                    500,
                    f"the pipeline's outputs cannot be encoded as JSON: {exc}",
                    metadata=metadata,
                    execution_time=result.execution_time,
                )
        status = 504 if result.status is RunStatus.timed_out else 500
        return self._fail(
            status, result.error or "run failed", metadata=metadata, execution_time=result.execution_time
        )

    def _fail(self, status: int, detail: str, **kw: Any) -> Response:
        return invoke_problem_response(status, detail, request_id=request_id_var.get(), **kw)

    def explain(self, body: bytes) -> list[FieldError]:
        """List every bad field of a body that failed validation (slow path only)."""
        try:
            raw = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return [FieldError("body", "not valid JSON")]
        if not isinstance(raw, dict):
            return [FieldError("body", f"Expected object, got {_json_type(raw)}")]
        errors: list[FieldError] = []
        for key in raw:
            if key not in ("parameters", "run_name", "timeout"):
                errors.append(FieldError(key, "unknown field (expected parameters, run_name, timeout)"))
        for key, tp in (("run_name", str | None), ("timeout", Timeout | None)):
            if key in raw:
                errors.extend(self._check(raw[key], tp, key))
        params = raw.get("parameters", {})
        if not isinstance(params, dict):
            errors.append(FieldError("parameters", f"Expected object, got {_json_type(params)}"))
            return errors
        known = ", ".join(self.param_fields) or "none"
        for name, value in params.items():
            field = self.param_fields.get(name)
            if field is None:
                errors.append(FieldError(f"parameters.{name}", f"unknown parameter (expected: {known})"))
            else:
                errors.extend(self._check(value, field.type, f"parameters.{name}"))
        return errors or [FieldError("body", "invalid request")]

    @staticmethod
    def _check(value: Any, tp: Any, loc: str) -> list[FieldError]:
        try:
            msgspec.json.decode(msgspec.json.encode(value), type=tp)
        except msgspec.ValidationError as exc:
            path, msg = split_validation_error(exc, prefix=loc)
            return [FieldError(path, msg)]
        return []


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "int" if isinstance(value, int) else ("float" if math.isfinite(value) else "number")
    return {str: "str", list: "array", dict: "object"}.get(type(value), type(value).__name__)
