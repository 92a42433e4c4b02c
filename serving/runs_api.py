"""HTTP for the run history: `GET /runs` and `GET /runs/{run_id}` over the capture store.

The store is read through `capture.readers.RunReader`, the same reader `serving runs`
uses, so SQLite and PostgreSQL answer alike. A reader is opened per request in a worker
thread: sqlite3 connections belong to the thread that made them, queries block, and a
dashboard polls a few times a minute, so one short-lived connection per call is cheaper
than a pool to keep healthy. A store kind that cannot be read back (JSON lines) is a 404
that says so; an unreachable one is a 503.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from capture.readers import ReaderError, RunReader, StoredArtifact, StoredRun, reader_from_url, unreadable
from capture.readers import sqlite_path as _sqlite_path
from serving.jobs_api import small_uint
from serving.openapi import ApiDocument, json_reply, problem_reply, ref
from serving.problems import FieldError
from serving.responses import json_response, problem_response

MAX_PAGE = 200
DEFAULT_PAGE = 20
RUN_STATUSES = ("completed", "failed", "timed_out", "canceled")
T = TypeVar("T")


class RunSummary(msgspec.Struct, kw_only=True):
    """One captured run. Times are Unix seconds; `parameters` is the JSON object that
    was captured (secrets redacted), or its preview text when it was cut short."""

    run_id: str
    run_name: str
    pipeline: str
    pipeline_version: str
    status: str
    started_at: float
    finished_at: float
    duration: float
    parameters: Any = None
    output_preview: str | None = None
    error: str | None = None
    deployment: str | None = None


class RunsPage(msgspec.Struct, kw_only=True):
    """Newest first; pass `next_cursor` as `cursor` for the next page (null: no more)."""

    runs: list[RunSummary]
    next_cursor: str | None


class RunLogLine(msgspec.Struct, kw_only=True):
    ts: float
    level: str
    message: str


class RunStep(msgspec.Struct, kw_only=True):
    """One step of a captured run: timing, outcome, previews of its input and output."""

    step_id: str
    step_name: str
    status: str
    started_at: float
    finished_at: float
    duration: float
    attempts: int
    input_preview: str | None = None
    output_preview: str | None = None
    error: str | None = None
    logs: list[RunLogLine]


class RunArtifact(msgspec.Struct, kw_only=True):
    """A visualization a step produced, without its content."""

    step_id: str
    name: str
    kind: str
    size: int


class RunDetail(RunSummary, kw_only=True):
    steps: list[RunStep]
    artifacts: list[RunArtifact]


class _Unreadable(Exception):
    """The configured store is of a kind no reader reads back."""


def _summary(run: StoredRun) -> RunSummary:
    parameters: Any = run.parameters
    if parameters is not None:
        with contextlib.suppress(ValueError):
            parameters = json.loads(parameters)
    fields = msgspec.structs.asdict(run)
    fields["parameters"] = parameters
    return RunSummary(**fields)


def _artifact(a: StoredArtifact) -> RunArtifact:
    return RunArtifact(step_id=a.step_id, name=a.name, kind=a.kind, size=a.size)


# What `encode_cursor` writes (a start time in seconds since the epoch, then the run id),
# declared in the API document so generated clients send only cursors that can parse.
# An empty cursor is the first page.
CURSOR_PATTERN = r"^([0-9]{1,16}(\.[0-9]{1,17})?~[A-Za-z0-9]{1,64})?$"
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(run: StoredRun) -> str:
    return f"{run.started_at!r}~{run.run_id}"


def decode_cursor(raw: str) -> tuple[float, str] | None:
    if not raw.isascii() or _CURSOR.fullmatch(raw) is None:
        return None
    started, _, run_id = raw.partition("~")
    return float(started), run_id


class RunsAPI:
    def __init__(self, capture_url: str) -> None:
        self.url = capture_url

    async def _read(self, query: Callable[[RunReader], T], empty: T) -> T:
        """Run `query` on a fresh reader in a worker thread; `empty` when nothing has
        been captured yet (no SQLite file: the sink makes it with the first run)."""
        if (why := unreadable(self.url)) is not None:
            raise _Unreadable(why)

        def work() -> T:
            if (
                not self.url.startswith(("postgresql://", "postgres://"))
                and not _sqlite_path(self.url).exists()
            ):
                return empty
            reader = reader_from_url(self.url)
            try:
                return query(reader)
            finally:
                reader.close()

        return await anyio.to_thread.run_sync(work)

    async def list_runs(self, request: Request) -> Response:
        q = request.query_params
        errors: list[FieldError] = []
        status = q.get("status")
        if status is not None and status not in RUN_STATUSES:
            errors.append(
                FieldError("query.status", f"unknown status {status!r} (expected: {', '.join(RUN_STATUSES)})")
            )
        limit = DEFAULT_PAGE
        if (raw := q.get("limit")) is not None:
            n = small_uint(raw)
            if n is None or not 1 <= n <= MAX_PAGE:
                errors.append(FieldError("query.limit", f"expected an integer from 1 to {MAX_PAGE}"))
            else:
                limit = n
        before = None
        if (raw := q.get("cursor")) and (before := decode_cursor(raw)) is None:
            errors.append(FieldError("query.cursor", "not a cursor returned by this endpoint"))
        if errors:
            return problem_response(422, "invalid query parameters", errors=errors)
        pipeline = q.get("pipeline") or None

        def query(reader: RunReader) -> list[StoredRun]:
            # One more than asked tells whether there is a next page without a count.
            return reader.runs(status=status, pipeline=pipeline, limit=limit + 1, before=before)

        try:
            none: list[StoredRun] = []
            rows = await self._read(query, none)
        except _Unreadable as exc:
            return problem_response(404, str(exc))
        except ReaderError as exc:
            return problem_response(503, str(exc))
        more = len(rows) > limit
        rows = rows[:limit]
        page = RunsPage(
            runs=[_summary(r) for r in rows], next_cursor=encode_cursor(rows[-1]) if more else None
        )
        return json_response(page)

    async def get_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]

        def query(reader: RunReader) -> RunDetail | None:
            found = [r for r in reader.find(run_id, limit=1) if r.run_id == run_id]
            if not found:
                return None
            steps = [
                RunStep(
                    step_id=s.step_id,
                    step_name=s.step_name,
                    status=s.status,
                    started_at=s.started_at,
                    finished_at=s.finished_at,
                    duration=s.duration,
                    attempts=s.attempts,
                    input_preview=s.input_preview,
                    output_preview=s.output_preview,
                    error=s.error,
                    logs=[RunLogLine(ts=line.ts, level=line.level, message=line.message) for line in s.logs],
                )
                for s in reader.steps(run_id)
            ]
            artifacts = [_artifact(a) for a in reader.artifacts(run_id)]
            return RunDetail(**msgspec.structs.asdict(_summary(found[0])), steps=steps, artifacts=artifacts)

        try:
            detail = await self._read(query, None)
        except _Unreadable as exc:
            return problem_response(404, str(exc))
        except ReaderError as exc:
            return problem_response(503, str(exc))
        if detail is None:
            return problem_response(404, f"no run with id {run_id!r} in the capture store")
        return json_response(detail)


def runs_openapi(doc: ApiDocument) -> None:
    """Document `/runs` and `/runs/{run_id}` (the auth scheme and 401 come from `doc`)."""
    doc.add_types(RunsPage, RunDetail)
    missing = problem_reply("The capture store cannot be read back (e.g. JSON lines), or no such run")
    common = {"404": missing, "503": problem_reply("The capture store cannot be reached")}
    doc.add(
        "/runs",
        "get",
        {
            "summary": "Captured runs, newest first",
            "operationId": "list_runs",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
                },
                {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(RUN_STATUSES)}},
                {"name": "pipeline", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "cursor",
                    "in": "query",
                    "description": "`next_cursor` of the previous page (empty: the first page)",
                    "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                },
            ],
            "responses": {
                "200": json_reply("One page of runs", ref("RunsPage")),
                "422": problem_reply("A bad limit, status or cursor; `errors` lists each"),
                **common,
            },
        },
    )
    doc.add(
        "/runs/{run_id}",
        "get",
        {
            "summary": "One captured run with its steps, logs, previews and artifacts",
            "operationId": "get_run",
            "parameters": [{"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": json_reply("The run", ref("RunDetail")), **common},
        },
    )
