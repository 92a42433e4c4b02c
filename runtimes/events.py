"""Typed run events: the one seam through which jobs, streaming and capture see a run.

Each event is a msgspec Struct tagged by `type`, so `msgspec.json.encode(event)` is the
wire form and `msgspec.json.decode(data, type=Event)` reads any of them back. `seq`
increases by one per event within a run, which lets a subscriber resume without loss.
"""

from __future__ import annotations

from typing import Any

import msgspec


class RunEvent(msgspec.Struct, kw_only=True, tag_field="type", frozen=True):
    seq: int
    run_id: str
    ts: float  # Unix time, seconds


class RunStarted(RunEvent, tag="run_started", frozen=True):
    pipeline: str
    run_name: str
    steps_total: int


class StepStarted(RunEvent, tag="step_started", frozen=True):
    step: str
    attempt: int


class StepRetrying(RunEvent, tag="step_retrying", frozen=True):
    step: str
    attempt: int
    error: str
    delay: float


class StepCompleted(RunEvent, tag="step_completed", frozen=True):
    step: str
    duration: float
    attempts: int


class StepFailed(RunEvent, tag="step_failed", frozen=True):
    step: str
    error: str
    duration: float
    attempts: int


class Progress(RunEvent, tag="progress", frozen=True):
    """Reported from inside a step with `serving.progress(fraction, message)`."""

    step: str
    fraction: float | None = None
    message: str | None = None


class Chunk(RunEvent, tag="chunk", frozen=True):
    """One item yielded by a generator step, sent as it is produced (token streaming)."""

    step: str
    index: int
    data: Any


class RunCompleted(RunEvent, tag="run_completed", frozen=True):
    duration: float


class RunFailed(RunEvent, tag="run_failed", frozen=True):
    error: str
    duration: float


class RunCanceled(RunEvent, tag="run_canceled", frozen=True):
    reason: str
    duration: float


Event = (
    RunStarted
    | StepStarted
    | StepRetrying
    | StepCompleted
    | StepFailed
    | Progress
    | Chunk
    | RunCompleted
    | RunFailed
    | RunCanceled
)
TERMINAL = (RunCompleted, RunFailed, RunCanceled)
