"""Where job records live. `JobStore` is the seam; `MemoryJobStore` the default.

Records are msgspec Structs, so a shared store (Redis) can encode them as they are.
The store also owns retention, because only it sees every record: finished jobs expire
after `ttl` seconds, and past `max_jobs` the oldest finished go first. Queued and
running jobs are never evicted.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from jobs.events import EventLog, JobEventLog
from jobs.health import StoreHealth
from jobs.queue import SharedQueue
from jobs.records import Job
from jobs.states import JobStatus


class JobStore(Protocol):
    async def put(self, job: Job) -> None:
        """Insert or update a record (after every state change); an unfinished record
        never replaces a finished one."""

    async def get(self, job_id: str) -> Job | None: ...

    async def delete(self, job_id: str) -> None: ...

    async def list(
        self, status: JobStatus | None, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]:
        """Newest first; returns the page and the cursor of the next page (None at the end)."""
        ...

    async def claim_key(self, key: str, job_id: str, fingerprint: str) -> tuple[str, str] | None:
        """Bind an idempotency key to a job unless already bound; returns the existing
        (job_id, fingerprint) binding, or None when this call made the binding."""
        ...

    async def lookup_key(self, key: str) -> tuple[str, str] | None:
        """The (job_id, fingerprint) an idempotency key is bound to, if any."""
        ...

    async def evict(self, ttl: float, max_jobs: int) -> builtins.list[str]:
        """Drop expired and excess finished jobs; returns their ids."""
        ...

    async def count(self) -> int: ...

    async def count_by_status(self) -> dict[JobStatus, int]:
        """Kept records by status (statuses with none may be left out); for metrics."""
        ...


@runtime_checkable
class SharedJobStore(JobStore, Protocol):
    """A store several replicas share (Redis): besides records it carries each job's
    events and the cancel requests, so any replica answers for any job; and the fleet's
    queue of async jobs, with the leases of running ones.

    Being a network away, it can be unreachable: every call then raises
    `StoreUnavailable`, and `health` records the state for /status and /metrics."""

    queue: SharedQueue
    health: StoreHealth

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers within about a second."""
        ...

    def mirror(
        self, job_id: str, log: JobEventLog, after_flush: Callable[[], Awaitable[None]]
    ) -> asyncio.Task[None]:
        """Copy every entry `log` appends to the shared log, in order, from the returned
        task (which ends after the terminal entry); `after_flush` runs after each batch."""
        ...

    def events(self, job_id: str) -> EventLog:
        """The job's shared event log, readable from any replica."""
        ...

    async def wait_end(self, job_id: str, timeout: float) -> bool:
        """Wait until the job's terminal event is shared or `timeout` passes."""
        ...

    async def request_cancel(self, job_id: str, reason: str) -> None:
        """Ask whichever replica runs the job to cancel it."""
        ...

    async def listen_cancels(self, handle: Callable[[str, str], Awaitable[None]]) -> asyncio.Task[None]:
        """Call `handle(job_id, reason)` for every cancel request, from the returned task;
        returns once listening, so no later request is missed."""
        ...

    async def close(self) -> None: ...


class MemoryJobStore:
    """Records in a dict, in creation order; finished ones also in finish order."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._order: dict[str, int] = {}
        self._counter = 0
        self._finished: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._keys: dict[str, tuple[str, str]] = {}
        self._key_of: dict[str, str] = {}

    async def put(self, job: Job) -> None:
        old = self._jobs.get(job.job_id)
        if old is None:
            self._counter += 1
            self._order[job.job_id] = self._counter
        elif old.status.finished and not job.status.finished:
            return  # a late write never brings a finished job back
        self._jobs[job.job_id] = job
        if job.status.finished and job.job_id not in self._finished:
            self._finished[job.job_id] = time.monotonic()

    async def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def delete(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._order.pop(job_id, None)
        self._finished.pop(job_id, None)
        key = self._key_of.pop(job_id, None)
        if key is not None:
            self._keys.pop(key, None)

    async def list(
        self, status: JobStatus | None, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]:
        before = int(cursor) if cursor else None
        page: list[Job] = []
        for job in reversed(self._jobs.values()):
            n = self._order[job.job_id]
            if before is not None and n >= before:
                continue
            if status is not None and job.status is not status:
                continue
            if len(page) == limit:
                return page, str(self._order[page[-1].job_id])
            page.append(job)
        return page, None

    async def claim_key(self, key: str, job_id: str, fingerprint: str) -> tuple[str, str] | None:
        existing = self._keys.get(key)
        if existing is not None:
            return existing
        self._keys[key] = (job_id, fingerprint)
        self._key_of[job_id] = key
        return None

    async def lookup_key(self, key: str) -> tuple[str, str] | None:
        return self._keys.get(key)

    async def evict(self, ttl: float, max_jobs: int) -> builtins.list[str]:
        evicted: builtins.list[str] = []  # `list` is the method above, in this class
        deadline = time.monotonic() - ttl
        while self._finished:
            job_id, finished = next(iter(self._finished.items()))
            if finished > deadline and len(self._jobs) <= max_jobs:
                break
            evicted.append(job_id)
            await self.delete(job_id)
        return evicted

    async def count(self) -> int:
        return len(self._jobs)

    async def count_by_status(self) -> dict[JobStatus, int]:
        counts: dict[JobStatus, int] = {}
        for job in self._jobs.values():
            counts[job.status] = counts.get(job.status, 0) + 1
        return counts
