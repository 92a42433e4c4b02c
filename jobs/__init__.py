"""The job manager: job records, states, queue, limits, retention and event fan-out.

It sits between the HTTP edge (`serving`) and the runtimes and imports no Starlette.
"""

from jobs.events import Gap, JobEventLog, LogEntry
from jobs.health import StoreUnavailable
from jobs.limits import Limiter, QueueFull
from jobs.manager import (
    IdempotencyConflict,
    JobFinished,
    JobManager,
    JobNotFinished,
    JobNotFound,
    JobSettings,
)
from jobs.records import InvocationMetadata, InvocationResponse, Job, JobProgress
from jobs.states import JobStatus
from jobs.store import JobStore, MemoryJobStore

__all__ = [
    "Gap",
    "IdempotencyConflict",
    "InvocationMetadata",
    "InvocationResponse",
    "Job",
    "JobEventLog",
    "JobFinished",
    "JobManager",
    "JobNotFinished",
    "JobNotFound",
    "JobProgress",
    "JobSettings",
    "JobStatus",
    "JobStore",
    "Limiter",
    "LogEntry",
    "MemoryJobStore",
    "QueueFull",
    "StoreUnavailable",
]
