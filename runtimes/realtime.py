"""`RealtimeRuntime` (the serving default): the DAG executor plus capture and a step cache.

Per run it builds one `RunRecord` (steps, previews, logs, artifacts, as the pipeline's
`Capture` options ask) and hands it to the capture publisher with a non-blocking
`publish()`; the publisher writes it off the request path. Step durations go to a
Prometheus histogram. With `Capture(memory_only=True)` it captures nothing at all, and
with `SERVING_CAPTURE_SAMPLE` below 1 only that fraction of runs, drawn at random.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from typing import Any

import msgspec
import structlog

from capture import Capture
from capture.breaker import CircuitBreaker
from capture.lockfree_metrics import LoopHistogram
from capture.publisher import Publisher
from capture.records import CodeRecord, RunRecord, StepCode, StepRecord
from capture.redact import names_look_harmless, snapshot, snapshot_fields, snapshot_mapping, struct_is_flat
from capture.sinks import Sink, sink_from_url
from runtimes import logcapture
from runtimes.base import RuntimeOptions, register_runtime
from runtimes.cache import StepCache
from runtimes.cancel import RunControl
from runtimes.executor import DagExecutor, EventCallback, RunResult, RunStatus, default_run_name
from runtimes.graph import ParamRef, StepNode
from runtimes.ids import new_id
from runtimes.pipeline import Pipeline
from runtimes.progress import StepScope
from runtimes.visualize import Visualization

log = structlog.get_logger("runtimes.realtime")

step_duration = LoopHistogram(
    "serving_step_duration_seconds",
    "Duration of each step run",
    ["step"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
)


def pipeline_version(pipeline: Pipeline) -> str:
    """A hash of the pipeline's and its steps' sources: a new version when code changes."""
    digest = hashlib.sha256(pipeline.name.encode())
    for node in pipeline.nodes:
        digest.update(node.step.code_hash.encode())
    return digest.hexdigest()[:16]


# RunStatus -> plain str, without the two Python-level calls `.value` makes on an Enum.
_STATUS_TEXT = {status: status.value for status in RunStatus}


class _PipelineCapture:
    """What capture needs of one pipeline, worked out at its first run, and the observer
    of all its runs (`RunObserver`): the record of the run under way is the `run` each
    call is handed, so a run costs no observer object of its own.

    Runs on the event loop once per step of every captured run: it takes each preview's
    snapshot when the value is fresh (inputs before the step runs, the output when it
    returns; either may be changed in place later), fills the step's record, and leaves
    the rest to the publisher's writer thread (the secret scan of any snapshot left as
    JSON bytes, and the rows).
    """

    __slots__ = (
        "capture_artifacts",
        "capture_logs",
        "deployment",
        "labels",
        "max_bytes",
        "metadata",
        "metrics",
        "outputs_safe",
        "parameter_steps",
        "pipeline",
        "sample",
        "version",
    )

    def __init__(self, pipeline: Pipeline, capture: Capture, version: str, options: RuntimeOptions) -> None:
        self.pipeline = pipeline.name
        self.version = version
        self.deployment = options.deployment_name
        self.max_bytes = options.capture_max_bytes
        self.sample = options.capture_sample
        self.metadata = capture.metadata
        self.metrics = capture.metrics
        self.capture_logs = capture.logs
        self.capture_artifacts = capture.visualizations
        self.outputs_safe = names_look_harmless([o.key for o in pipeline.outputs])
        self.labels = {node.step.name: node.step.labels for node in pipeline.nodes}
        self.parameter_steps = _parameter_steps(pipeline)

    def step_started(
        self, run: RunRecord, node: StepNode, args: list[Any], kwargs: dict[str, Any]
    ) -> StepRecord:
        """The step's record, with its input snapshot taken before the step can change them."""
        started_at = time.time()
        inputs: Any = None  # a Snapshot: bytes until the writer finishes it (StepRecord)
        if self.metadata:
            if node.id in self.parameter_steps:
                inputs = run.parameters  # the same JSON, taken when the run started
            else:
                # By parameter name, so redaction sees `password` and the like.
                step = node.step
                names = step.positional_names
                if not kwargs and len(args) == len(names):
                    inputs = snapshot_fields(names, args, self.max_bytes)
                else:
                    inputs = snapshot(step.named_inputs(args, kwargs), self.max_bytes)
        return StepRecord(
            step_id=node.id,
            step_name=node.step.name,
            status="running",
            started_at=started_at,
            finished_at=started_at,
            duration=0.0,
            input_preview=inputs,
        )

    def step_completed(
        self, run: RunRecord, taken: StepRecord, scope: StepScope, value: Any, attempts: int, duration: float
    ) -> None:
        if self.metrics:
            step_duration.observe(self.labels[taken.step_name], duration)
        taken.status = "completed"
        taken.finished_at = taken.started_at + duration
        taken.duration = duration
        if attempts != 1:
            taken.attempts = attempts
        if self.metadata:
            taken.output_preview = snapshot(value, self.max_bytes)  # type: ignore[assignment]
        # Inline, the common case (nothing logged, no visualization) costs no call.
        artifacts = scope.artifacts
        if (
            scope.logs
            or scope.partial
            or artifacts
            or (artifacts is not None and isinstance(value, _MAY_HOLD_ARTIFACTS))
        ):
            _attach_logs_and_artifacts(taken, scope, value)
        run.steps += (taken,)  # type: ignore[operator]

    def step_ended(
        self,
        run: RunRecord,
        taken: StepRecord,
        scope: StepScope | None,
        *,
        status: str,
        value: Any,
        error: str | None,
        attempts: int,
        duration: float,
    ) -> None:
        if self.metrics and status == "failed":
            step_duration.observe(self.labels[taken.step_name], duration)
        taken.status = status
        taken.finished_at = taken.started_at + duration
        taken.duration = duration
        taken.attempts = attempts
        taken.error = error
        if self.metadata and status == "cached":
            taken.output_preview = snapshot(value, self.max_bytes)  # type: ignore[assignment]
        if scope is not None:
            _attach_logs_and_artifacts(taken, scope, value)
        run.steps += (taken,)  # type: ignore[operator]


_MAY_HOLD_ARTIFACTS = (Visualization, tuple)  # a step's output that is, or holds, a visualization


def _attach_logs_and_artifacts(record: StepRecord, scope: StepScope, value: Any) -> None:
    """The step's log lines (its last unfinished printed line too) and its artifacts."""
    if scope.partial:
        logcapture.flush_partial(scope)
    if scope.logs:
        record.logs = scope.logs
    artifacts = scope.artifacts
    if artifacts is not None:
        if isinstance(value, Visualization):
            artifacts.append(value.artifact())
        elif isinstance(value, tuple):
            artifacts.extend(v.artifact() for v in value if isinstance(v, Visualization))
        if artifacts:
            record.artifacts = artifacts


def _parameter_steps(pipeline: Pipeline) -> frozenset[str]:
    """The steps whose input preview is the run's parameters preview, as it stands.

    A step that takes every parameter, positionally, in the order of the parameters
    Struct and under the same names, previews its inputs as the same JSON object. When
    every parameter is a scalar (immutable: no step can have changed it in place since
    the run began), that JSON is the run's own parameters snapshot, taken once.
    """
    fields = pipeline.input_type.__struct_fields__
    if pipeline.pydantic_params or not struct_is_flat(pipeline.input_type):
        return frozenset()
    found = []
    for node in pipeline.nodes:
        args = node.args
        if (
            not node.kwargs
            and node.step.positional_names == fields
            and len(args) == len(fields)
            and all(isinstance(a, ParamRef) and a.name == f for a, f in zip(args, fields, strict=True))
        ):
            found.append(node.id)
    return frozenset(found)


class RealtimeRuntime:
    name = "realtime"

    def __init__(self, options: RuntimeOptions | None = None, sink: Sink | None = None) -> None:
        self.options = options or RuntimeOptions()
        o = self.options
        self.executor = DagExecutor(o.max_threads, cache=StepCache(o.cache_ttl, o.cache_size))
        self.publisher = Publisher(
            sink or sink_from_url(o.capture_url),
            max_queue=o.capture_queue_size,
            batch_size=o.capture_batch_size,
            batch_interval=o.capture_batch_interval,
            breaker=CircuitBreaker(
                failure_threshold=o.capture_breaker_failures,
                cooldown=o.capture_breaker_cooldown,
                write_deadline=o.capture_write_deadline,
            ),
            preview_max_bytes=o.capture_max_bytes,
        )
        # Per pipeline (by id, with the object kept so an id is never reused under us).
        self._states: dict[int, tuple[Pipeline, _PipelineCapture | None]] = {}

    async def start(self) -> None:
        logcapture.install()
        await self.publisher.start()

    async def stop(self) -> None:
        await self.publisher.stop()
        self.executor.shutdown()

    def effective_capture(self, pipeline: Pipeline) -> Capture:
        """The pipeline's Capture with the deployment's SERVING_CAPTURE_* overrides applied."""
        overrides = self.options.capture_overrides
        return msgspec.structs.replace(pipeline.capture, **overrides) if overrides else pipeline.capture

    def _prepare(self, pipeline: Pipeline) -> _PipelineCapture | None:
        """First run of a pipeline: its options and version, and its code, published once.

        None when the pipeline is memory_only (nothing to capture).
        """
        capture = self.effective_capture(pipeline)
        state = None
        if not capture.memory_only:
            version = pipeline_version(pipeline)
            state = _PipelineCapture(pipeline, capture, version, self.options)
            if capture.code:
                steps = {n.step.name: n.step for n in pipeline.nodes}
                self.publisher.publish(
                    CodeRecord(
                        pipeline=pipeline.name,
                        pipeline_version=version,
                        steps=[
                            StepCode(step_name=name, source=s.source, docstring=s.fn.__doc__)
                            for name, s in steps.items()
                        ],
                    )
                )
        self._states[id(pipeline)] = (pipeline, state)
        return state

    async def run(
        self,
        pipeline: Pipeline,
        parameters: msgspec.Struct,
        *,
        run_id: str | None = None,
        run_name: str | None = None,
        timeout: float | None = None,
        on_event: EventCallback | None = None,
        control: RunControl | None = None,
    ) -> RunResult:
        kwargs = pipeline.call_kwargs(parameters)
        known = self._states.get(id(pipeline))
        state = known[1] if known is not None and known[0] is pipeline else self._prepare(pipeline)
        if state is None or (state.sample < 1.0 and random.random() >= state.sample):
            # Memory-only, or not drawn (SERVING_CAPTURE_SAMPLE): run as MemoryOnly would.
            return await self.executor.run(
                pipeline,
                kwargs,
                run_id=run_id,
                run_name=run_name,
                timeout=timeout,
                on_event=on_event,
                control=control,
            )
        run_id = run_id or new_id()
        run_name = run_name or default_run_name(pipeline.name)
        started_at = time.time()
        record = RunRecord(
            run_id=run_id,
            run_name=run_name,
            pipeline=state.pipeline,
            pipeline_version=state.version,
            status="running",
            started_at=started_at,
            finished_at=started_at,
            duration=0.0,
            # Taken before any step runs: the parameters as the request gave them.
            parameters=snapshot(parameters, state.max_bytes) if state.metadata else None,  # type: ignore[arg-type]
            deployment=state.deployment,
        )
        try:
            result = await self.executor.run(
                pipeline,
                kwargs,
                run_id=run_id,
                run_name=run_name,
                timeout=timeout,
                on_event=on_event,
                observer=state,
                observed=record,
                control=control,
            )
        except asyncio.CancelledError:
            self._publish(state, record, None)
            raise
        self._publish(state, record, result)
        return result

    def record_not_run(
        self, pipeline: Pipeline, parameters: msgspec.Struct, *, run_id: str, run_name: str | None, error: str
    ) -> None:
        """Capture a run that was accepted but never started (a queued job canceled at
        shutdown): without a record it would leave no trace in the run store."""
        known = self._states.get(id(pipeline))
        state = known[1] if known is not None and known[0] is pipeline else self._prepare(pipeline)
        if state is None:
            return
        now = time.time()
        params_preview: Any = (
            snapshot(parameters, state.max_bytes) if state.metadata else None
        )  # see _publish
        self.publisher.publish(
            RunRecord(
                run_id=run_id,
                run_name=run_name or default_run_name(pipeline.name),
                pipeline=state.pipeline,
                pipeline_version=state.version,
                status="canceled",  # as `_publish` writes a run canceled by its caller
                started_at=now,
                finished_at=now,
                duration=0.0,
                parameters=params_preview,
                error=error,
                deployment=state.deployment,
            )
        )

    def _publish(self, state: _PipelineCapture, record: RunRecord, result: RunResult | None) -> None:
        """The run's record, finished with its outcome and outputs preview, into the queue.

        `result` is None for a run canceled by its caller (the executor then raises
        instead of returning).
        """
        finished_at = time.time()
        record.finished_at = finished_at
        if result is None:
            record.status = record.error = "canceled"
            record.duration = finished_at - record.started_at
        else:
            record.status = _STATUS_TEXT[result.status]
            record.error = result.error
            record.duration = result.execution_time
            outputs = result.outputs
            if outputs is not None and state.metadata:  # keys: the pipeline's outputs, the same every run
                record.output_preview = snapshot_mapping(outputs, state.outputs_safe, state.max_bytes)  # type: ignore[assignment]
        self.publisher.publish(record)

    def status(self) -> dict[str, Any]:
        return {"capture": self.publisher.status(), "cache_entries": len(self.executor.cache or ())}


register_runtime(RealtimeRuntime.name, RealtimeRuntime)
