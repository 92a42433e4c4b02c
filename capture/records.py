"""What capture writes: one `RunRecord` per run (with its steps), one `CodeRecord` per
pipeline version. Typed Structs so every sink encodes the same thing the same way.

A run is one record, not one per event, because the publisher sits beside the request
path: one append per request is the budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec


class LogLine(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One line a step printed or logged: (unix time, level, message)."""

    ts: float
    level: str
    message: str


class Artifact(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A visualization a step returned or attached: html, markdown, svg or png (base64)."""

    name: str
    kind: str
    content: str


class StepRecord(msgspec.Struct, kw_only=True, gc=False):
    """One step of a run, built on the event loop once per step.

    Keyword-only: four neighbouring fields are `str | None`, so a positional call that
    got the order wrong would store one preview as another without any error. msgspec
    matches keywords in C, a few hundred instructions per record (bench/README.md).
    """

    step_id: str
    step_name: str
    status: str  # completed | failed | canceled | cached
    started_at: float
    finished_at: float
    duration: float
    attempts: int = 1
    # From the event loop to the writer thread a preview may still be the value's JSON
    # as bytes (`capture.redact.snapshot`); the publisher
    # finishes every one before a sink sees the record. Typed as stored, for the
    # decoders that read records back (msgspec takes no `str | bytes` union).
    input_preview: str | None = None
    output_preview: str | None = None
    error: str | None = None
    # Sequences defaulting to (): a record waits in the publisher's queue for up to a
    # batch interval, and two fresh empty lists per step (msgspec copies a [] default)
    # were containers the garbage collector tracked, promoted and rescanned.
    logs: Sequence[LogLine] = ()
    artifacts: Sequence[Artifact] = ()


class RunRecord(msgspec.Struct, tag="run", kw_only=True, gc=False):
    """One run with its steps, built on the event loop once per run.

    Keyword-only for the same reason as `StepRecord`. The field order is still the
    order of the JSON-lines object; the SQLite sink names its columns itself.
    """

    run_id: str
    run_name: str
    pipeline: str
    pipeline_version: str
    status: str  # completed | failed | timed_out | canceled
    started_at: float
    finished_at: float
    duration: float
    parameters: str | None = None  # JSON preview, secrets redacted (bytes until finished, as above)
    output_preview: str | None = None
    error: str | None = None
    deployment: str | None = None
    steps: Sequence[StepRecord] = ()  # a tuple once published: untracked by the GC


class StepCode(msgspec.Struct, frozen=True, kw_only=True):
    step_name: str
    source: str | None
    docstring: str | None


class CodeRecord(msgspec.Struct, kw_only=True, tag="code"):
    """A pipeline's step code, stored once per version (the hash of all its sources)."""

    pipeline: str
    pipeline_version: str
    steps: list[StepCode]


Record = RunRecord | CodeRecord
