"""A job's states and the only moves between them."""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.completed, JobStatus.failed, JobStatus.canceled})

_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.canceled}),
    JobStatus.running: frozenset({JobStatus.completed, JobStatus.failed, JobStatus.canceled}),
}


def can_move(current: JobStatus, new: JobStatus) -> bool:
    """A finished state is final: a late completion never overwrites `canceled`."""
    return new in _ALLOWED.get(current, frozenset())
