"""The fleet's job queue: what a shared store offers so replicas share async work.

With a shared store, an accepted async job does not belong to the replica that accepted
it: it waits in one queue for the whole fleet, and whichever replica has a free running
slot takes it. A replica holds a lease on each job it runs and renews it; a job whose
lease runs out (its replica died) is failed by any surviving replica. `SharedQueue` is
the seam; `jobs.redis_queue.RedisQueue` the implementation.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Protocol

import msgspec

from jobs.records import Job

# Completions counted for the Retry-After estimate of a full fleet queue.
RATE_WINDOW = 60.0


class Outcome(enum.StrEnum):
    run = "run"  # this replica had a free slot and the queue was empty: run it here
    queued = "queued"  # in the fleet's queue
    full = "full"  # the queue is at SERVING_MAX_QUEUE; nothing was stored
    bound = "bound"  # the idempotency key names another job; nothing was stored


class Enqueued(msgspec.Struct, frozen=True, kw_only=True):
    outcome: Outcome
    depth: int = 0  # jobs waiting in the queue (when full: how many)
    recent: int = 0  # when full: jobs the fleet finished in the last RATE_WINDOW seconds
    binding: tuple[str, str] | None = None  # when bound: (job_id, fingerprint)


class Taken(msgspec.Struct, frozen=True, kw_only=True):
    """A job this replica took from the queue and now holds the lease of."""

    job: Job
    params: bytes  # the parameters as JSON: decoded with the pipeline's own type
    timeout: float | None


def fleet_retry_after(depth: int, recent: int, fallback: int) -> int:
    """Seconds until the queue has room, at the fleet's pace of the last minute.

    The fleet finished `recent` jobs in the last RATE_WINDOW seconds; the `depth + 1`
    jobs ahead of a retry drain at that rate. With no completion in the window there is
    no pace to go by, and `fallback` (this replica's own estimate) is used.
    """
    if recent <= 0:
        return fallback
    return max(1, min(3600, math.ceil((depth + 1) * RATE_WINDOW / recent)))


class SharedQueue(Protocol):
    replica: str  # this replica's name in leases and in "worker lost" errors
    lease: float  # seconds

    async def enqueue(
        self,
        job: Job,
        params: bytes,
        timeout: float | None,
        *,
        fingerprint: str,
        max_queue: int,
        run_here: bool,
    ) -> Enqueued:
        """Store the queued record and push it, or refuse, in one atomic step.

        `run_here`: this replica holds a free slot; if the queue is empty the job is
        leased to it at once instead of queued. With an idempotency key on `job`, a key
        already bound returns `bound` and nothing is written.
        """
        ...

    async def take(self, block: float) -> str | None:
        """Move the oldest queued job id to this replica's taken list, waiting up to
        `block` seconds for one (a blocking pop: an idle replica does not poll)."""
        ...

    async def start(self, job_id: str) -> Taken | None:
        """Lease a taken job to this replica; None if it was canceled meanwhile or
        given back (this replica was thought dead)."""
        ...

    async def untake(self, job_id: str) -> None:
        """Put a taken job back at the head of the queue."""
        ...

    async def give_back(self) -> int:
        """Put every job this replica took but has not started back in the queue."""
        ...

    async def cancel_queued(self, job_id: str, reason: str) -> bool:
        """Remove a queued job from the queue and record it canceled, with its terminal
        event; False if it is not queued any more (a replica leased it)."""
        ...

    async def renew(self, job_ids: Sequence[str]) -> list[str]:
        """Renew this replica's heartbeat and the leases of `job_ids`; returns those whose
        lease is gone (another replica declared them lost)."""
        ...

    async def reap(self) -> list[str]:
        """Requeue jobs taken by replicas that are gone, and fail the jobs whose lease ran
        out ("worker lost"), with their terminal event; returns the failed ids."""
        ...

    async def leave(self) -> None:
        """This replica stops: no heartbeat, nothing taken left behind."""
        ...
