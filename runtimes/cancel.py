"""`cancelled()`: lets a step see that its run is over, and the run see its leftover threads.

Python cannot stop a thread, so a sync step that is still running when its run times
out, is canceled or loses its client goes on in its worker thread. Two things keep
that honest. The step can cooperate: `cancelled()` turns True once the run has ended
that way, so a long loop can check it and return early (sync steps see it because
their thread runs in a copy of the run's context; async steps see it too). And the
run's `RunControl` counts the threads it left behind, so whoever holds the run's
concurrency slot keeps holding it until they return (`when_idle`), and admission sees
the capacity that is really left.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar


class RunControl:
    """One run as its steps and its slot holder see it; touched on the loop thread only."""

    __slots__ = ("_idle", "abandoned", "cancelled")

    def __init__(self) -> None:
        self.cancelled = False
        self.abandoned = 0  # this run's step calls still running in a thread after it ended
        self._idle: list[Callable[[], None]] = []

    def cancel(self) -> None:
        self.cancelled = True

    def thread_returned(self) -> None:
        """An abandoned call of this run has returned (called on the loop)."""
        self.abandoned -= 1
        if self.abandoned <= 0 and self._idle:
            callbacks, self._idle = self._idle, []
            for callback in callbacks:
                callback()

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call `callback` once no step call of this run is still running: now, or when
        the last abandoned thread returns."""
        if self.abandoned <= 0:
            callback()
        else:
            self._idle.append(callback)


current_run: ContextVar[RunControl | None] = ContextVar("serving_current_run", default=None)


def cancelled() -> bool:
    """True once the current run was canceled, timed out, failed or lost its client.

    Sync steps are not preempted: a step that runs for long should check this now and
    then and return (or raise) early. Outside a run it is always False.
    """
    control = current_run.get()
    return control is not None and control.cancelled
