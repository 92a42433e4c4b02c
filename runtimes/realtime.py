"""`RealtimeRuntime` (the serving default): the DAG executor plus capture and a step cache.

Per run it builds one `RunRecord` (steps, previews, logs, artifacts, as the pipeline's
`Capture` options ask) and hands it to the capture publisher with a non-blocking
`publish()`; the publisher writes it off the request path. Step durations go to a
Prometheus histogram. With `Capture(memory_only=True)` it captures nothing at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import msgspec
import structlog

from capture import Capture
from capture.breaker import CircuitBreaker
from capture.lockfree_metrics import LoopHistogram
from capture.publisher import Publisher
from capture.records import CodeRecord, RunRecord, StepCode, StepRecord
from capture.redact import Snapshot, names_look_harmless, snapshot, snapshot_fields, snapshot_mapping
from capture.sinks import Sink, sink_from_url
from runtimes import logcapture
from runtimes.base import RuntimeOptions, register_runtime
from runtimes.cache import StepCache
from runtimes.cancel import RunControl
from runtimes.executor import DagExecutor, EventCallback, RunResult, RunStatus, default_run_name
from runtimes.graph import StepNode
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
    """What capture needs of one pipeline, worked out at its first run: the effective
    Capture options, the version, and the names every record repeats."""

    __slots__ = (
        "capture_artifacts",
        "capture_logs",
        "deployment",
        "max_bytes",
        "metadata",
        "metrics",
        "outputs_safe",
        "pipeline",
        "version",
    )

    def __init__(self, pipeline: Pipeline, capture: Capture, version: str, options: RuntimeOptions) -> None:
        self.pipeline = pipeline.name
        self.version = version
        self.deployment = options.deployment_name
        self.max_bytes = options.capture_max_bytes
        self.metadata = capture.metadata
        self.metrics = capture.metrics
        self.capture_logs = capture.logs
        self.capture_artifacts = capture.visualizations
        self.outputs_safe = names_look_harmless([o.key for o in pipeline.outputs])


class _RunCapture(msgspec.Struct, kw_only=True, gc=False):
    """One captured run: who it is, and its step records as the executor reports them.

    Runs on the event loop once per step of every captured run: it takes each preview's
    snapshot when the value is fresh (inputs before the step runs, the output when it
    returns; either may be changed in place later), builds the record, and leaves the
    rest to the publisher's writer thread (the secret scan of any snapshot left as JSON
    bytes, and the rows). A Struct rather than a class with `__init__`: one is
    made per run, and msgspec's constructor, in C, costs half as many instructions.
    """

    state: _PipelineCapture
    run_id: str
    run_name: str
    started_at: float
    capture_logs: bool  # read by the executor for every step
    capture_artifacts: bool
    # A tuple grown by one per step, not a list turned into a tuple at the end: most
    # pipelines have one step or a few, and the record keeps this very tuple.
    steps: tuple[StepRecord, ...] = ()

    def step_inputs(self, node: StepNode, args: list[Any], kwargs: dict[str, Any]) -> Snapshot | None:
        """The input snapshot, taken before the step runs and can change its inputs."""
        state = self.state
        if not state.metadata:
            return None
        # By parameter name, so redaction sees `password` and the like.
        step = node.step
        names = step.positional_names
        if not kwargs and len(args) == len(names):
            return snapshot_fields(names, args, state.max_bytes)
        return snapshot(step.named_inputs(args, kwargs), state.max_bytes)

    def step_finished(
        self,
        node: StepNode,
        scope: StepScope | None,
        *,
        status: str,
        inputs: Any,  # Snapshot | None: bytes until the writer finishes it (StepRecord)
        value: Any,
        error: str | None,
        attempts: int,
        started_at: float,
        duration: float,
    ) -> None:
        step = node.step
        state = self.state
        if state.metrics and (status == "completed" or status == "failed"):
            step_duration.observe(step.labels, duration)
        output: Any = None  # a Snapshot, as `inputs`
        if state.metadata and (status == "completed" or status == "cached"):
            output = snapshot(value, state.max_bytes)
        record = StepRecord(
            step_id=node.id,
            step_name=step.name,
            status=status,
            started_at=started_at,
            finished_at=started_at + duration,
            duration=duration,
            attempts=attempts,
            input_preview=inputs,
            output_preview=output,
            error=error,
        )
        if scope is not None:
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
        self.steps += (record,)


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
        if state is None:
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
        observer = _RunCapture(
            state=state,
            run_id=run_id,
            run_name=run_name,
            started_at=time.time(),
            capture_logs=state.capture_logs,
            capture_artifacts=state.capture_artifacts,
        )
        try:
            result = await self.executor.run(
                pipeline,
                kwargs,
                run_id=run_id,
                run_name=run_name,
                timeout=timeout,
                on_event=on_event,
                observer=observer,
                control=control,
            )
        except asyncio.CancelledError:
            self._publish(observer, parameters, None)
            raise
        self._publish(observer, parameters, result)
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

    def _publish(self, run: _RunCapture, parameters: msgspec.Struct, result: RunResult | None) -> None:
        """The run's record, with its parameters and outputs previewed, into the queue.

        `result` is None for a run canceled by its caller (the executor then raises
        instead of returning). Each field is named once, here.
        """
        state = run.state
        finished_at = time.time()
        error: str | None
        if result is None:
            status = error = "canceled"
            duration = finished_at - run.started_at
            outputs = None
        else:
            status = _STATUS_TEXT[result.status]
            error = result.error
            duration = result.execution_time
            outputs = result.outputs
        params_preview: Any = None  # Snapshots, bytes until the writer finishes them
        output_preview: Any = None
        if state.metadata:
            params_preview = snapshot(parameters, state.max_bytes)
            if outputs is not None:  # the keys are the pipeline's outputs: the same every run
                output_preview = snapshot_mapping(outputs, state.outputs_safe, state.max_bytes)
        record = RunRecord(
            run_id=run.run_id,
            run_name=run.run_name,
            pipeline=state.pipeline,
            pipeline_version=state.version,
            status=status,
            started_at=run.started_at,
            finished_at=finished_at,
            duration=duration,
            parameters=params_preview,
            output_preview=output_preview,
            error=error,
            deployment=state.deployment,
            steps=run.steps,
        )
        self.publisher.publish(record)

    def status(self) -> dict[str, Any]:
        return {"capture": self.publisher.status(), "cache_entries": len(self.executor.cache or ())}


register_runtime(RealtimeRuntime.name, RealtimeRuntime)
