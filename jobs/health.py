"""Whether the job store answers: one error type for callers, one record of its state.

A networked store (Redis) can go away while the daemon serves. Callers must not see
the client library's exceptions (the HTTP edge turns `StoreUnavailable` into a 503, and
`jobs/` stays free of both HTTP and Redis types), and operators must see the outage in
`/status` and `/metrics` without a traceback per request in the log.
"""

from __future__ import annotations

import time

import structlog
from prometheus_client import Counter, Gauge

log = structlog.get_logger("jobs.store")

store_up = Gauge(
    "serving_job_store_up",
    "1 while the job store answers, 0 since its last call failed (memory: always 1)",
    multiprocess_mode="livemin",
)
store_errors_total = Counter(
    "serving_job_store_errors_total", "Job store calls that failed because the store was unreachable"
)


class StoreUnavailable(Exception):
    """The job store could not be reached; the call had no effect that is known.

    Raised by every call of a networked store in place of its client's connection and
    timeout errors. Retrying later is the right answer: nothing about the request was wrong.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(f"the job store is unavailable ({detail})")
        self.detail = detail


class StoreHealth:
    """The store's state as its last call found it: up or down, since when, how often it failed.

    Updated by the store on every call (an attribute write on success), so it is as
    fresh as the traffic; a transition is logged once, not per failed call.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.up = True
        self.errors = 0
        self.last_error: str | None = None
        self.since = time.time()
        store_up.set(1)

    def ok(self) -> None:
        if not self.up:
            self.up = True
            log.warning("job_store_back", store=self.kind, down_seconds=round(time.time() - self.since, 3))
            self.since = time.time()
            store_up.set(1)

    def failed(self, error: BaseException) -> StoreUnavailable:
        """Count the failure; returns the exception to raise in its place."""
        self.errors += 1
        store_errors_total.inc()
        self.last_error = f"{type(error).__name__}: {error}"
        if self.up:
            self.up = False
            self.since = time.time()
            store_up.set(0)
            log.error("job_store_lost", store=self.kind, error=self.last_error)
        return StoreUnavailable(self.last_error)

    def state(self) -> dict[str, object]:
        """For /status: what kind of store, whether it answers, and its failure count."""
        return {
            "kind": self.kind,
            "up": self.up,
            "since": round(self.since, 3),
            "errors": self.errors,
            "last_error": self.last_error,
        }
