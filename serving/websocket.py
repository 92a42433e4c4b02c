"""`WebSocket /stream`: start, follow and cancel jobs over one socket, JSON both ways.

Client messages:
    {"type": "invoke", "parameters": {...}, "run_name": ..., "timeout": ...}
    {"type": "subscribe", "job_id": "...", "after_seq": 0}
    {"type": "cancel", "job_id": "..."}
Server messages:
    {"type": "accepted", "job_id", "status", "location", "stream_url", "created_at"}
    {"type": "event", "job_id", "event": {...run event...}}
    {"type": "end", "job_id", "job": {...final record...}}
    {"type": "canceled", "job_id", "job": {...}}
    {"type": "error", "status", "error", "job_id"?, "errors"?}
A bad message gets an `error` reply and the socket stays open; so does a message the
job store was needed for while it is away (status 503), and a subscription the store's
loss cuts short (503, with the `job_id`: subscribe again after the last seq received). Several jobs can be
followed at once; each is forwarded by its own task and sends are serialised.

What a socket holds for a client that reads nothing is bounded like an SSE stream's:
each forwarder awaits its send (the server awaits the transport's drain), so it holds
one message at most, and a socket follows at most `MAX_SUBSCRIPTIONS` jobs at once
(beyond, an `error` with status 429 and the `job_id`); everything else stays in the
job's bounded event log, from which a reader that falls behind gets a `gap`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from jobs import IdempotencyConflict, JobFinished, JobManager, JobNotFound, QueueFull, StoreUnavailable
from runtimes.pipeline import split_validation_error
from serving.jobs_api import job_links
from serving.problems import FieldError

log = structlog.get_logger("serving.websocket")
MAX_SUBSCRIPTIONS = 100  # jobs one socket follows at once: bounds its pending sends
_encoder = msgspec.json.Encoder()


class Invoke(msgspec.Struct, tag="invoke", tag_field="type", forbid_unknown_fields=True):
    parameters: dict[str, Any] = {}
    run_name: str | None = None
    timeout: float | None = None


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="type", forbid_unknown_fields=True):
    job_id: str
    after_seq: Annotated[int, msgspec.Meta(ge=0)] = 0


class Cancel(msgspec.Struct, tag="cancel", tag_field="type", forbid_unknown_fields=True):
    job_id: str
    reason: str = "canceled by request"


Message = Invoke | Subscribe | Cancel
_decoder = msgspec.json.Decoder(Message)


class StreamSocket:
    """One connected client."""

    def __init__(self, ws: WebSocket, manager: JobManager, invoke_timeout: float | None) -> None:
        self.ws = ws
        self.manager = manager
        self.invoke_timeout = invoke_timeout
        self._send_lock = asyncio.Lock()
        self._forwarders: dict[str, asyncio.Task[None]] = {}

    async def send(self, message: Any) -> None:
        data = message if isinstance(message, bytes) else _encoder.encode(message)
        async with self._send_lock:
            await self.ws.send_text(data.decode())

    async def error(self, status: int, error: str, **extra: Any) -> None:
        await self.send({"type": "error", "status": status, "error": error, **extra})

    async def run(self) -> None:
        await self.ws.accept()
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                await self.handle(text if text is not None else (message.get("bytes") or b""))
        except WebSocketDisconnect:
            pass
        finally:
            for task in list(self._forwarders.values()):
                task.cancel("socket closed")

    async def handle(self, raw: str | bytes) -> None:
        try:
            message = _decoder.decode(raw)
        except msgspec.ValidationError as exc:
            loc, msg = split_validation_error(exc, prefix="")
            await self.error(422, "invalid message", errors=[FieldError(loc or "message", msg)])
            return
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            await self.error(400, f"message is not valid JSON: {exc}")
            return
        try:
            if isinstance(message, Invoke):
                await self.invoke(message)
            elif isinstance(message, Subscribe):
                await self.subscribe(message.job_id, message.after_seq)
            else:
                await self.cancel(message)
        except StoreUnavailable as exc:
            job_id = None if isinstance(message, Invoke) else message.job_id
            await self.error(503, str(exc), **({"job_id": job_id} if job_id else {}))

    async def invoke(self, message: Invoke) -> None:
        pipeline = self.manager.pipeline
        try:
            params = pipeline.parse_parameters(message.parameters)
            if pipeline.pydantic_params:
                pipeline.call_kwargs(params)
        except Exception as exc:
            pairs = getattr(exc, "errors", None) or [("", str(exc))]
            detail = [FieldError(f"parameters.{loc}" if loc else "parameters", msg) for loc, msg in pairs]
            await self.error(422, "request parameters are invalid", errors=detail)
            return
        timeout = self.invoke_timeout
        if message.timeout is not None:
            if not message.timeout > 0:  # also NaN
                await self.error(422, "invalid message", errors=[FieldError("timeout", "must be > 0")])
                return
            timeout = message.timeout if timeout is None else min(timeout, message.timeout)
        try:
            job, _ = await self.manager.submit(params, run_name=message.run_name, timeout=timeout)
        except QueueFull as exc:
            await self.error(429, str(exc), retry_after=exc.retry_after)
            return
        except IdempotencyConflict as exc:  # pragma: no cover - no key over WebSocket
            await self.error(422, str(exc))
            return
        summary = msgspec.structs.asdict(job_links(job))
        await self.send({"type": "accepted", **summary})
        await self.subscribe(job.job_id, 0)

    async def subscribe(self, job_id: str, after_seq: int) -> None:
        if job_id not in self._forwarders and len(self._forwarders) >= MAX_SUBSCRIPTIONS:
            await self.error(
                429,
                f"this socket already follows {MAX_SUBSCRIPTIONS} jobs; wait for one to end",
                job_id=job_id,
            )
            return
        try:
            entries = await self.manager.subscribe(job_id, after_seq)
        except JobNotFound as exc:
            await self.error(404, str(exc), job_id=job_id)
            return
        previous = self._forwarders.pop(job_id, None)
        if previous is not None:
            previous.cancel("re-subscribed")
        prefix = b'{"type":"event","job_id":' + _encoder.encode(job_id) + b',"event":'

        async def forward() -> None:
            reason = "ended"
            try:
                async for entry in entries:
                    await self.send(prefix + entry.data + b"}")
                job = await self.manager.get(job_id)
                await self.send({"type": "end", "job_id": job_id, "job": job})
            except (WebSocketDisconnect, RuntimeError, JobNotFound):
                reason = "gone"  # the client left, or the job expired meanwhile
            except StoreUnavailable as exc:
                reason = "store unavailable"
                with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                    await self.error(503, str(exc), job_id=job_id)
            except asyncio.CancelledError as exc:
                reason = str(exc.args[0]) if exc.args else "canceled"
                raise
            except Exception:
                reason = "failed"
                log.exception("websocket_forward_failed", job_id=job_id)
            finally:
                # A re-subscription replaces this task in the dict before its cancellation
                # lands here: removing the entry blindly would drop the replacement, which
                # the socket's close would then never cancel.
                if self._forwarders.get(job_id) is asyncio.current_task():
                    del self._forwarders[job_id]
                log.debug("websocket_forward_stopped", job_id=job_id, reason=reason)

        self._forwarders[job_id] = asyncio.create_task(forward(), name=f"ws:{job_id}")

    async def cancel(self, message: Cancel) -> None:
        try:
            job = await self.manager.cancel(message.job_id, message.reason)
        except JobNotFound as exc:
            await self.error(404, str(exc), job_id=message.job_id)
            return
        except JobFinished as exc:
            await self.error(409, str(exc), job_id=message.job_id)
            return
        await self.send({"type": "canceled", "job_id": job.job_id, "job": job})


def websocket_endpoint(
    manager: JobManager, invoke_timeout: float | None
) -> Callable[[WebSocket], Awaitable[None]]:
    async def endpoint(ws: WebSocket) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            await StreamSocket(ws, manager, invoke_timeout).run()

    return endpoint
