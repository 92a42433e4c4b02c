"""A circuit breaker around the capture sink.

Closed: batches are written. After `failure_threshold` consecutive failures, or an
error rate of `error_rate` over the last `window` attempts (once `min_calls` were
made), it opens: batches are dropped and counted, neither retried nor written inline,
so a dead observability backend costs requests nothing. After `cooldown` seconds one
probe batch is let through (half-open): success closes the breaker, failure re-opens
it for another cooldown. Unlike the reference's breaker, it always closes again.

A write still running after `write_deadline` seconds trips it at once (`trip`): a
stalled sink (a SQLite file another process holds locked waits out its 5 s busy
timeout per batch) fails too slowly for a failure count to notice, and with the one
writer thread stuck, every record behind it would be dropped as `queue_full` instead.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable


class BreakerState(enum.StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        error_rate: float = 0.5,
        window: int = 20,
        min_calls: int = 10,
        cooldown: float = 10.0,
        write_deadline: float = 2.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.write_deadline = write_deadline
        self.error_rate = error_rate
        self.min_calls = min_calls
        self.cooldown = cooldown
        self.clock = clock
        self.state = BreakerState.closed
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.times_opened = 0
        self.last_error: str | None = None
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=window)

    def allow(self) -> bool:
        """May a batch be written now? In half-open state exactly one probe is allowed."""
        if self.state is BreakerState.closed:
            return True
        cooled = self.opened_at is not None and self.clock() - self.opened_at >= self.cooldown
        if self.state is BreakerState.open and cooled:
            self.state = BreakerState.half_open
            return True
        return False

    def success(self) -> None:
        self.consecutive_failures = 0
        self._outcomes.append(True)
        if self.state is not BreakerState.closed:
            self.state = BreakerState.closed
            self.opened_at = None
            self._outcomes.clear()

    def failure(self, error: str) -> None:
        self.last_error = error
        self.consecutive_failures += 1
        self._outcomes.append(False)
        if self.state is BreakerState.half_open:
            self._open()
            return
        failures = self._outcomes.count(False)
        too_many = self.consecutive_failures >= self.failure_threshold
        rate = len(self._outcomes) >= self.min_calls and failures / len(self._outcomes) >= self.error_rate
        if self.state is BreakerState.closed and (too_many or rate):
            self._open()

    def trip(self, error: str) -> None:
        """A failure that opens the breaker now, whatever the counts (a stalled sink)."""
        self.last_error = error
        self.consecutive_failures += 1
        self._outcomes.append(False)
        if self.state is not BreakerState.open:
            self._open()

    def _open(self) -> None:
        self.state = BreakerState.open
        self.opened_at = self.clock()
        self.times_opened += 1

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive_failures,
            "times_opened": self.times_opened,
            "last_error": self.last_error,
            "cooldown_seconds": self.cooldown,
        }
