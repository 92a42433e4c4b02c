"""HTTP for async jobs: `/jobs`, `/jobs/{job_id}`, cancel, delete, and `/stream/{job_id}` (SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

import anyio
import msgspec
import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from jobs import Job, JobFinished, JobManager, JobNotFinished, JobNotFound, JobStatus, StoreUnavailable
from serving.problems import FieldError
from serving.responses import json_response, problem_response
from serving.settings import Settings

MAX_PAGE = 1000
Seconds = Annotated[float, msgspec.Meta(ge=0)]
log = structlog.get_logger("serving.jobs")


class JobSummary(msgspec.Struct, kw_only=True):
    """The 202 reply to an async submission: where to poll and where to stream."""

    job_id: str
    status: str
    created_at: str
    location: str
    stream_url: str


class JobPage(msgspec.Struct, kw_only=True):
    """One page of `GET /jobs`; `next_cursor` asks for the next (None: no more)."""

    jobs: list[Job]
    next_cursor: str | None


def small_uint(raw: str) -> int | None:
    """A non-negative integer written in ASCII digits, or None.

    `str.isdigit` accepts digits `int()` refuses (`²`) and `int()` refuses more than
    4300 digits; both once turned a bad query or header into a 500.
    """
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


def job_links(job: Job) -> JobSummary:
    return JobSummary(
        job_id=job.job_id,
        status=job.status.value,
        created_at=job.created_at,
        location=f"/jobs/{job.job_id}",
        stream_url=f"/stream/{job.job_id}",
    )


class JobsAPI:
    def __init__(
        self,
        manager: JobManager,
        settings: Settings,
        shutdown: anyio.Event,
        past_deadline: Callable[[], bool] = lambda: False,
    ) -> None:
        self.manager = manager
        self.settings = settings
        self.shutdown = shutdown
        # True once shutdown's graceful timeout is spent: streams stop at the next event.
        # Without this, a stream whose client was cut would go on encoding every event
        # left in the log into a closed connection (whose sends no longer wait).
        self.past_deadline = past_deadline

    async def list_jobs(self, request: Request) -> Response:
        q = request.query_params
        errors: list[FieldError] = []
        status = None
        if (raw := q.get("status")) is not None:
            try:
                status = JobStatus(raw)
            except ValueError:
                allowed = ", ".join(s.value for s in JobStatus)
                errors.append(FieldError("query.status", f"unknown status {raw!r} (expected: {allowed})"))
        limit = 100
        if (raw := q.get("limit")) is not None:
            n = small_uint(raw)
            if n is None or not 1 <= n <= MAX_PAGE:
                errors.append(FieldError("query.limit", f"expected an integer from 1 to {MAX_PAGE}"))
            else:
                limit = n
        cursor = q.get("cursor")
        if cursor is not None and small_uint(cursor) is None:
            errors.append(FieldError("query.cursor", "not a cursor returned by this endpoint"))
        if errors:
            return problem_response(422, "invalid query parameters", errors=errors)
        jobs, next_cursor = await self.manager.list(status, limit, cursor)
        return json_response(JobPage(jobs=jobs, next_cursor=next_cursor))

    async def job(self, request: Request) -> Response:
        """GET and DELETE share one route, so a 405 there lists both in `Allow`."""
        if request.method == "DELETE":
            return await self.delete_job(request)
        return await self.get_job(request)

    async def get_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        raw_wait = request.query_params.get("wait")
        try:
            if raw_wait is None:
                job = await self.manager.get(job_id)
            else:
                try:  # a JSON number: float() would also take "inf", "nan" and "1_0"
                    wait = msgspec.json.decode(raw_wait.encode(), type=Seconds)
                except msgspec.DecodeError:
                    return problem_response(
                        422,
                        "invalid query parameters",
                        errors=[FieldError("query.wait", "expected a number of seconds >= 0")],
                    )
                job = await self.manager.wait(job_id, min(wait, self.settings.max_wait))
        except JobNotFound as exc:
            return problem_response(404, str(exc))
        return json_response(job)

    async def cancel_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            job = await self.manager.cancel(job_id, "canceled by request")
        except JobNotFound as exc:
            return problem_response(404, str(exc))
        except JobFinished as exc:
            return problem_response(409, str(exc))
        # 200: it is canceled now; 202: cancellation was requested and is under way.
        return json_response(job, 200 if job.status.finished else 202)

    async def delete_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            await self.manager.delete(job_id)
        except JobNotFound as exc:
            return problem_response(404, str(exc))
        except JobNotFinished as exc:
            return problem_response(409, str(exc))
        return Response(status_code=204)

    async def stream(self, request: Request) -> Response:
        """SSE: `id:` is the event's seq, `event:` its type, `data:` its JSON.

        Resumes after `Last-Event-ID` (header) or `?after_seq=`; ends after the terminal
        event. Idle streams get ping comments every SERVING_SSE_PING seconds. A job
        store that goes away mid-stream ends it early (the status is sent already); the
        client resumes with `Last-Event-ID`, and gets 503 until the store is back.
        """
        job_id = request.path_params["job_id"]
        # Both are checked when both are sent (the header wins): a bad one is never
        # silently ignored. Empty means "from the start", as EventSource sends it.
        points: list[int] = []
        for loc, raw in (
            ("Last-Event-ID", request.headers.get("last-event-id")),
            ("query.after_seq", request.query_params.get("after_seq")),
        ):
            if raw:
                if (point := small_uint(raw)) is None:
                    return problem_response(
                        422,
                        "invalid resume point",
                        errors=[FieldError(loc, "expected the integer id of the last event received")],
                    )
                points.append(point)
        after = points[0] if points else 0
        try:
            entries = await self.manager.subscribe(job_id, after)
        except JobNotFound as exc:
            return problem_response(404, str(exc))

        past_deadline = self.past_deadline

        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                async for entry in entries:
                    if past_deadline():
                        return
                    yield ServerSentEvent(data=entry.data.decode(), event=entry.type, id=str(entry.seq))
            except StoreUnavailable as exc:
                log.warning("stream_cut", job_id=job_id, error=str(exc))

        return EventSourceResponse(
            events(),
            ping=self.settings.sse_ping,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            shutdown_event=self.shutdown,
            shutdown_grace_period=self.settings.graceful_timeout,
        )
