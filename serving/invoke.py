"""`POST /invoke`: decode and validate the request, run the pipeline, encode the reply.

The hot path is deliberately flat: one msgspec decode straight into the pipeline's own
request Struct, one runtime call, one encode. Explaining a bad request (every bad field,
with its path) happens only on the error path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from typing import Annotated, Any

import msgspec
import structlog
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from jobs import (
    IdempotencyConflict,
    InvocationMetadata,
    InvocationResponse,
    JobManager,
    JobStatus,
    QueueFull,
    StoreUnavailable,
)
from runtimes import Pipeline, RunResult, RunStatus
from runtimes.errors import ParameterError
from runtimes.pipeline import split_validation_error
from runtimes.types import convert_json
from serving.jobs_api import job_links
from serving.problems import RUN_FAILED, FieldError
from serving.responses import STORE_RETRY_AFTER, json_response, problem_response, store_unavailable
from serving.settings import Settings

log = structlog.get_logger("serving.invoke")

Timeout = Annotated[float, msgspec.Meta(gt=0)]


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


_JSON_CONTENT_TYPE = (b"content-type", b"application/json")
# On Python 3.11 every attribute read on an Enum class goes through EnumType.__getattr__'s
# slow hook (hundreds of instructions); the reply's check reads a member bound once.
_COMPLETED = RunStatus.completed

DISCONNECT_WATCH_AFTER = 0.05  # seconds; see InvokeEndpoint._run_watching_disconnect


GONE = "gone"  # the client disconnected
CUT = "cut"  # the server's graceful timeout ran out


class DisconnectWatch:
    """Notices sync /invoke clients that hang up, and cancels their runs.

    After the body is read, the next `receive()` returns only when the client
    disconnects, so a task awaiting it notices. Such a watcher task starts only for a
    run that has lasted `after` seconds: most finish sooner, and a task, or even a
    timer, per request would cost more than a small run. One periodic tick covers all
    in-flight runs; registering a run is a dict insert of a tuple, and the rare
    watchers and cancel reasons live in their own dicts.
    """

    def __init__(self, after: float, *, watch: bool = True) -> None:
        self.after = after
        self.watch = watch  # False (SERVING_CANCEL_ON_DISCONNECT off): only `cut` uses the runs
        self._runs: dict[asyncio.Task[Any], tuple[Receive, float]] = {}  # receive, started
        self._watchers: dict[asyncio.Task[Any], asyncio.Task[None]] = {}
        self._reasons: dict[asyncio.Task[Any], str] = {}  # GONE or CUT, for runs cancelled here
        self._timer: asyncio.TimerHandle | None = None

    def add(self, task: asyncio.Task[Any], receive: Receive) -> None:
        loop = asyncio.get_running_loop()
        self._runs[task] = (receive, loop.time())
        if self._timer is None and self.watch:
            self._timer = loop.call_later(self.after, self._tick)

    def reason(self, task: asyncio.Task[Any]) -> str | None:
        """Why this watch cancelled the run (GONE or CUT), or None if it did not."""
        return self._reasons.get(task)

    def cut(self) -> int:
        """Cancel every run still in flight (shutdown past its graceful timeout); returns
        how many. Each one's request then answers 503 instead of being cut off."""
        count = 0
        for task in self._runs:
            if task not in self._reasons and not task.done():
                self._reasons[task] = CUT
                task.cancel()
                count += 1
        return count

    def discard(self, task: asyncio.Task[Any]) -> None:
        del self._runs[task]
        if self._watchers and (watcher := self._watchers.pop(task, None)) is not None:
            watcher.cancel()
        if self._reasons:
            self._reasons.pop(task, None)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        now = loop.time()
        for task, (receive, started) in self._runs.items():
            if task not in self._watchers and now - started >= self.after:
                self._watchers[task] = loop.create_task(self._watch(task, receive))
        if self._runs:
            self._timer = loop.call_later(self.after / 2, self._tick)

    async def _watch(self, task: asyncio.Task[Any], receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if task not in self._reasons:
                    self._reasons[task] = GONE
                    task.cancel()
                return


class BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class _ShutDown(Exception):
    pass


SHUTTING_DOWN = "the server is shutting down; the run was canceled"


def parse_prefer(value: str | None) -> tuple[bool, float | None]:
    """Read RFC 7240 `Prefer`: (respond-async wanted, wait seconds or None)."""
    if not value:
        return False, None
    respond_async, wait = False, None
    for part in value.split(","):
        token = part.split(";", 1)[0].strip().lower()
        if token == "respond-async":
            respond_async = True
        elif token.startswith("wait="):
            with contextlib.suppress(ValueError):
                seconds = float(token[5:])
                if seconds >= 0:
                    wait = seconds
    return respond_async, wait


class RequestHeaders:
    """The few headers /invoke reads, looked up in a dict built from the raw ASGI list
    in one C call (a Starlette `Headers` lookup scans the whole list once per header).

    A header sent twice keeps its last value, except `Prefer`, whose values add up.
    The two every request has stay bytes: they are compared and parsed as bytes, and
    decoded only for an error message.
    """

    __slots__ = ("content_length", "content_type", "idempotency_key", "prefer")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        found = dict(raw)
        self.content_type: bytes | None = found.get(b"content-type")
        self.content_length: bytes | None = found.get(b"content-length")
        key = found.get(b"idempotency-key")
        self.idempotency_key = None if key is None else key.decode("latin-1")
        prefer = found.get(b"prefer")
        if prefer is not None and len(found) != len(raw):  # some header came twice: maybe Prefer
            prefer = b", ".join([value for name, value in raw if name == b"prefer"])
        self.prefer = None if prefer is None else prefer.decode("latin-1")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """Read the body, refusing it as soon as it passes `limit` bytes (not after).
    `declared` is the raw Content-Length (`bytes.isdigit` is ASCII digits only)."""
    if declared is not None and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise BodyTooLarge
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise BodyTooLarge
    if not message.get("more_body", False):
        return body  # the common case: the whole body in one message
    chunks = [body]
    size = len(body)
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
            return b"".join(chunks)


class InvokeEndpoint:
    """The /invoke handler bound to one pipeline, runtime and settings."""

    def __init__(self, pipeline: Pipeline, manager: JobManager, settings: Settings) -> None:
        self.pipeline = pipeline
        self.manager = manager
        self.settings = settings
        self.max_body_bytes = settings.max_body_bytes
        self.invoke_timeout = settings.invoke_timeout
        self.request_type = request_type(pipeline)
        self.decoder = msgspec.json.Decoder(self.request_type)
        self.encoder = msgspec.json.Encoder()
        self.empty = self.request_type()
        self.param_fields = {f.name: f for f in msgspec.structs.fields(pipeline.input_type)}
        self.disconnects = DisconnectWatch(DISCONNECT_WATCH_AFTER, watch=settings.cancel_on_disconnect)

    def cut_sync_runs(self) -> None:
        """The graceful timeout ran out: cancel the sync runs still going, so each of
        their clients gets a 503 saying why (one log line for all) rather than a cut
        connection or an empty 500 when the server gives up on them."""
        count = self.disconnects.cut()
        if count:
            log.warning("shutdown_canceled_sync_runs", count=count, reason=SHUTTING_DOWN)

    def _metadata(self, run_id: str | None, run_name: str | None, params: Any) -> InvocationMetadata:
        return msgspec.structs.replace(
            self.manager.metadata, run_id=run_id, run_name=run_name, parameters_used=params
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Raw ASGI entry: `ServingApp` routes `POST /invoke` here directly, skipping
        Starlette's router and exception layers on the hottest path. A completed sync
        run's reply is sent as two ASGI messages, without a Starlette `Response`."""
        reply = await self.answer(scope, receive)
        if isinstance(reply, bytes):
            headers = [_JSON_CONTENT_TYPE, (b"content-length", str(len(reply)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": reply})
        else:
            await reply(scope, receive, send)

    async def answer(self, scope: Scope, receive: Receive) -> Response | bytes:
        """The reply to one request: the encoded body of a completed sync run (status 200,
        JSON), or a `Response` for everything else."""
        headers = RequestHeaders(scope["headers"])
        if headers.content_type is not None and headers.content_type != b"application/json":
            ctype = headers.content_type.decode("latin-1")
            if not _is_json(ctype):
                return self._fail(415, f"content type {ctype!r} is not supported; send application/json")
        try:
            body = await read_body(receive, headers.content_length, self.max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening; nothing to run
        except BodyTooLarge:
            # Close the connection so the server stops reading the rest of the body.
            return self._fail(
                413,
                f"request body exceeds the limit of {self.max_body_bytes} bytes",
                headers={"Connection": "close"},
            )
        if not body.strip():
            if body:  # an empty body means "all defaults"; blanks alone are a broken one
                return self._fail(400, "request body is only whitespace; send a JSON object or nothing")
            req: Any = self.empty
        else:
            try:
                req = self.decoder.decode(body)
            except msgspec.ValidationError:
                try:  # `1.0` for an int is an integer to JSON Schema; explain only if not that
                    req = convert_json(msgspec.json.decode(body), self.request_type)
                except msgspec.ValidationError:
                    return self._fail(422, "request parameters are invalid", errors=self.explain(body))
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                return self._fail(400, f"request body is not valid JSON: {exc}")

        if self.pipeline.pydantic_params:
            try:  # validated here so an async job never fails for a bad parameter
                self.pipeline.call_kwargs(req.parameters)
            except ParameterError as exc:
                errors = [FieldError(f"parameters.{loc}", msg) for loc, msg in exc.errors]
                return self._fail(422, "request parameters are invalid", errors=errors)
        timeout = self.invoke_timeout
        if req.timeout is not None:
            timeout = req.timeout if timeout is None else min(timeout, req.timeout)

        prefer_async, prefer_wait = parse_prefer(headers.prefer) if headers.prefer else (False, None)
        respond_async = prefer_async
        if scope["query_string"]:
            mode = QueryParams(scope["query_string"]).get("mode", "sync")
            if mode not in ("sync", "async"):
                return self._fail(
                    422,
                    "invalid query parameters",
                    errors=[FieldError("query.mode", f"expected 'sync' or 'async', got {mode!r}")],
                )
            respond_async = respond_async or mode == "async"
        key = headers.idempotency_key
        if respond_async or key is not None or prefer_wait is not None:
            return await self._as_job(req, timeout, key, respond_async, prefer_async, prefer_wait)

        try:
            result = await self._run_watching_disconnect(receive, req, timeout)
        except QueueFull as exc:
            return self._busy(exc)
        except _ClientGone:
            return Response(status_code=499)  # nobody is listening; the run was cancelled
        except _ShutDown:
            return self._fail(503, SHUTTING_DOWN)
        return self._reply(
            result.status,
            result.outputs,
            result.error,
            result.execution_time,
            self._metadata(result.run_id, result.run_name, req.parameters),
        )

    async def _run_watching_disconnect(self, receive: Receive, req: Any, timeout: float | None) -> RunResult:
        """Run under the shared limits; a client that hangs up cancels its run (see
        `DisconnectWatch`), and so does a shutdown past its graceful timeout
        (`cut_sync_runs`)."""
        task = asyncio.current_task()
        assert task is not None
        self.disconnects.add(task, receive)
        try:
            return await self.manager.run_sync(req.parameters, run_name=req.run_name, timeout=timeout)
        except asyncio.CancelledError:
            reason = self.disconnects.reason(task)
            if reason is not None and task.uncancel() == 0:
                if reason == GONE:
                    log.info("client_disconnected_run_canceled", pipeline=self.pipeline.name)
                    raise _ClientGone from None
                raise _ShutDown from None
            raise
        finally:
            self.disconnects.discard(task)

    def _reply(
        self,
        status: RunStatus,
        outputs: dict[str, Any] | None,
        error: str | None,
        execution_time: float,
        metadata: InvocationMetadata,
        headers: dict[str, str] | None = None,
    ) -> Response | bytes:
        """A run's reply: its encoded JSON if it completed (status 200; the caller adds
        `headers`), else a problem carrying `headers`."""
        if status is _COMPLETED:
            body_out = InvocationResponse(
                success=True, outputs=outputs, execution_time=execution_time, metadata=metadata
            )
            try:
                return self.encoder.encode(body_out)
            except (TypeError, ValueError, OverflowError) as exc:
                return self._fail(
                    500,
                    f"the pipeline's outputs cannot be encoded as JSON: {exc}",
                    metadata=metadata,
                    execution_time=execution_time,
                    headers=headers,
                )
        code = 504 if status is RunStatus.timed_out else 500
        return self._fail(
            code,
            error or "run failed",
            title=RUN_FAILED if code == 500 else None,
            metadata=metadata,
            execution_time=execution_time,
            headers=headers,
        )

    def _busy(self, exc: QueueFull) -> Response:
        return self._fail(429, str(exc), headers={"Retry-After": str(exc.retry_after)})

    async def _as_job(
        self,
        req: Any,
        timeout: float | None,
        key: str | None,
        respond_async: bool,
        prefer_async: bool,
        prefer_wait: float | None,
    ) -> Response:
        """Async mode, `Prefer: wait=N` and idempotent calls all go through a job."""
        fingerprint = hashlib.sha256(self.encoder.encode(req)).hexdigest() if key is not None else ""
        try:
            job, created = await self.manager.submit(
                req.parameters,
                run_name=req.run_name,
                timeout=timeout,
                idempotency_key=key,
                fingerprint=fingerprint,
            )
        except QueueFull as exc:
            return self._busy(exc)
        except IdempotencyConflict as exc:
            return self._fail(
                422, str(exc), errors=[FieldError("Idempotency-Key", "reused with a different body")]
            )
        except StoreUnavailable as exc:
            return store_unavailable(exc, invoke=True)
        location = {"Location": f"/jobs/{job.job_id}"}
        if respond_async:
            applied = {"Preference-Applied": "respond-async"} if prefer_async else {}
            if created:
                return json_response(job_links(job), 202, {**location, **applied})
            return json_response(job, 200, {**location, **applied})
        wait = prefer_wait if prefer_wait is not None else (timeout or self.settings.max_wait)
        wait = min(wait, self.settings.max_wait) if prefer_wait is not None else wait
        try:
            job = await self.manager.wait(job.job_id, wait)
        except StoreUnavailable as exc:  # accepted, but its end cannot be read now: poll Location
            return problem_response(
                503, str(exc), invoke=True, headers={"Retry-After": str(STORE_RETRY_AFTER), **location}
            )
        applied = {"Preference-Applied": f"wait={prefer_wait:g}"} if prefer_wait is not None else {}
        if not job.status.finished:
            return json_response(job_links(job), 202, {**location, **applied})
        if job.result is None:  # canceled, or crashed before producing a result
            return self._fail(
                409 if job.status is JobStatus.canceled else 500,
                job.error or f"job {job.status.value}",
                headers={**location, **applied},
            )
        result = job.result
        status = (
            RunStatus.completed
            if result.success
            else (RunStatus.timed_out if job.run_status is RunStatus.timed_out else RunStatus.failed)
        )
        headers = {**location, **applied}
        reply = self._reply(
            status, result.outputs, result.error, result.execution_time, result.metadata, headers
        )
        if isinstance(reply, bytes):
            return Response(reply, headers=headers, media_type="application/json")
        return reply

    def _fail(self, status: int, detail: str, **kw: Any) -> Response:
        return problem_response(status, detail, invoke=True, **kw)

    def explain(self, body: bytes) -> list[FieldError]:
        """List every bad field of a body that failed validation (slow path only)."""
        try:
            raw = msgspec.json.decode(body)
        except msgspec.ValidationError:  # JSON, but a number beyond a float: 1e400
            try:  # the typed decoder names where it is (the untyped one says `[...]`)
                self.decoder.decode(body)
            except msgspec.ValidationError as exc:
                path, msg = split_validation_error(exc, prefix="")
            else:  # pragma: no cover - explain runs only for a body that failed
                path, msg = "", "invalid request"
            if msg == "Number out of range":
                msg = "number out of range: not a finite 64-bit float"
            return [FieldError(path or "body", msg)]
        except (msgspec.DecodeError, UnicodeDecodeError):
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
            convert_json(value, tp)
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
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


_JSON_TYPE_NAMES: dict[type, str] = {str: "str", list: "array", dict: "object"}
