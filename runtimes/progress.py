"""`progress()`: report how far a step has come, from inside the step.

The executor puts a `StepScope` in a contextvar around each step when somebody listens
to the run's events; sync steps see it too because their worker thread runs in a copy
of the caller's context. Without listeners `progress()` costs one contextvar read.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import msgspec

from runtimes import events as ev


class StepScope(msgspec.Struct):
    """The running step as code inside it sees it: where its events, log lines and
    artifacts go, and how to reach the loop from a worker thread.

    A Struct: the executor makes one per step of every observed run, and msgspec's
    constructor runs in C. `loop_thread` is the loop's thread id, passed in once per run.
    """

    step_id: str
    run_id: str
    emit: Callable[..., None] | None
    loop: asyncio.AbstractEventLoop
    loop_thread: int
    logs: list[Any] | None = None  # None: log lines are not captured for this run
    artifacts: list[Any] | None = None
    partial: dict[str, str] | None = None  # unfinished printed line per stream, once printed
    attempt: int = 0  # the attempt under way (1, 2, ... with retries), for the step's record

    def send(self, cls: type[ev.RunEvent], **fields: Any) -> None:
        """Emit on the loop's thread: events keep their order and callbacks stay single-threaded."""
        emit = self.emit
        if emit is None:
            return
        if threading.get_ident() == self.loop_thread:
            emit(cls, **fields)
        else:
            self.loop.call_soon_threadsafe(lambda: emit(cls, **fields))


current_step: ContextVar[StepScope | None] = ContextVar("serving_current_step", default=None)


def progress(fraction: float | None = None, message: str | None = None) -> None:
    """Report progress of the current step: `fraction` in [0, 1] and/or a short message.

    Streamed to job subscribers as a `progress` event. Outside a run, or when nobody
    listens, it does nothing, so steps can call it unconditionally.
    """
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"progress fraction must be within [0, 1], got {fraction!r}")
    scope = current_step.get()
    if scope is None:
        return
    scope.send(ev.Progress, step=scope.step_id, fraction=fraction, message=message)
