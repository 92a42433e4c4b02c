"""What crosses the job manager's boundary, as msgspec Structs: job records and results.

`InvocationResponse` is the reference wire format of a sync /invoke reply; a finished
job's `result` has exactly that shape, so one client parser serves both modes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from jobs.states import JobStatus
from runtimes.executor import RunStatus


class InvocationMetadata(msgspec.Struct, kw_only=True):
    deployment_id: str | None = None
    deployment_name: str | None = None
    snapshot_id: str | None = None
    snapshot_name: str | None = None
    pipeline_name: str
    run_id: str | None = None
    run_name: str | None = None
    parameters_used: Any = None


class InvocationResponse(msgspec.Struct, kw_only=True):
    success: bool
    outputs: dict[str, Any] | None
    execution_time: float
    metadata: InvocationMetadata
    error: str | None = None


class JobProgress(msgspec.Struct, kw_only=True):
    """Steps done out of the total, and the last `progress()` report."""

    steps_done: int = 0
    steps_total: int = 0
    fraction: float | None = None
    message: str | None = None
    step: str | None = None


class Job(msgspec.Struct, kw_only=True):
    """One async invocation. Timestamps are RFC 3339 UTC; durations are seconds.

    `run_status` is the run's own outcome once it produced a result (None before, and
    for jobs canceled or crashed without one): `failed` alone cannot tell a timeout,
    which the HTTP edge answers with 504, from a failing step.
    """

    job_id: str
    status: JobStatus
    pipeline_name: str
    parameters: Any
    run_id: str
    run_name: str | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    execution_time: float | None = None
    result: InvocationResponse | None = None
    error: str | None = None
    cancel_reason: str | None = None
    progress: JobProgress = msgspec.field(default_factory=JobProgress)
    idempotency_key: str | None = None
    run_status: RunStatus | None = None
