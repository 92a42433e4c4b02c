"""A run as the event loop hands it to capture: taken now, finished in the writer thread.

The loop keeps what cannot wait (each preview's JSON bytes, taken while the value is
fresh; timings; the step's log list) in one `RunSnapshot` per run and queues it.
Checking previews for secrets, cutting them and building the `RunRecord` the sinks
write happen in the publisher's writer thread, a batch at a time, where that code stays
warm instead of running cold between two requests (bench/README.md, "Capture at half
the cost").
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from capture.records import Artifact, LogLine, RunRecord, StepRecord
from capture.redact import Snapshot, finish


class PipelineInfo(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """What every record of one pipeline repeats, worked out once at its first run."""

    pipeline: str
    pipeline_version: str
    deployment: str | None
    max_bytes: int


class StepSnapshot(msgspec.Struct, kw_only=True, gc=False):
    """One step as its run saw it; `record()` makes its `StepRecord`."""

    step_id: str
    step_name: str
    status: str  # completed | failed | canceled | cached
    started_at: float
    duration: float
    attempts: int
    inputs: Snapshot | None
    output: Snapshot | None
    error: str | None
    logs: Sequence[LogLine] = ()
    artifacts: Sequence[Artifact] = ()

    def record(self, max_bytes: int) -> StepRecord:
        return StepRecord(
            step_id=self.step_id,
            step_name=self.step_name,
            status=self.status,
            started_at=self.started_at,
            finished_at=self.started_at + self.duration,
            duration=self.duration,
            attempts=self.attempts,
            input_preview=finish(self.inputs, max_bytes),
            output_preview=finish(self.output, max_bytes),
            error=self.error,
            logs=self.logs,
            artifacts=self.artifacts,
        )


class RunSnapshot(msgspec.Struct, kw_only=True, gc=False):
    """One run as the loop saw it; `record()` makes its `RunRecord` in the writer thread.

    Made when the run starts and completed in place when it ends (the Realtime
    runtime's observer is one), so a run costs the loop one object of its own.
    """

    info: PipelineInfo
    run_id: str
    run_name: str
    started_at: float
    steps: list[StepSnapshot] = msgspec.field(default_factory=list)
    status: str = "canceled"
    finished_at: float = 0.0
    duration: float = 0.0
    parameters: Snapshot | None = None
    outputs: Snapshot | None = None
    error: str | None = None

    def record(self) -> RunRecord:
        info = self.info
        max_bytes = info.max_bytes
        return RunRecord(
            run_id=self.run_id,
            run_name=self.run_name,
            pipeline=info.pipeline,
            pipeline_version=info.pipeline_version,
            status=self.status,
            started_at=self.started_at,
            finished_at=self.finished_at,
            duration=self.duration,
            parameters=finish(self.parameters, max_bytes),
            output_preview=finish(self.outputs, max_bytes),
            error=self.error,
            deployment=info.deployment,
            steps=tuple([step.record(max_bytes) for step in self.steps]),
        )
