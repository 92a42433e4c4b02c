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
from capture.loopmetrics import LoopHistogram
from capture.publisher import Publisher
from capture.records import CodeRecord, RunRecord, StepCode, StepRecord
from capture.redact import preview
from capture.sinks import Sink, sink_from_url
from runtimes import logcapture
from runtimes.base import RuntimeOptions, register_runtime
from runtimes.cache import StepCache
from runtimes.executor import DagExecutor, EventCallback, RunResult, RunStatus, default_run_name, new_id
from runtimes.graph import StepNode
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


class _RunCapture:
    """Collects one run's step records as the executor reports them."""

    def __init__(self, capture: Capture, max_bytes: int) -> None:
        self.capture = capture
        self.max_bytes = max_bytes
        self.capture_logs = capture.logs
        self.capture_artifacts = capture.visualizations
        self.steps: list[StepRecord] = []

    def step_finished(
        self,
        node: StepNode,
        scope: StepScope | None,
        status: str,
        args: list[Any],
        kwargs: dict[str, Any],
        value: Any,
        error: str | None,
        attempts: int,
        started_at: float,
        duration: float,
    ) -> None:
        if self.capture.metrics and status in ("completed", "failed"):
            step_duration.observe((node.step.name,), duration)
        record = StepRecord(
            step_id=node.id,
            step_name=node.step.name,
            status=status,
            started_at=started_at,
            finished_at=started_at + duration,
            duration=duration,
            attempts=attempts,
            error=error,
        )
        if self.capture.metadata:
            # By parameter name, so redaction sees `password` and the like.
            inputs = node.step.named_inputs(args, kwargs)
            record.input_preview = preview(inputs, self.max_bytes)
            if status in ("completed", "cached"):
                record.output_preview = preview(value, self.max_bytes)
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
        self.steps.append(record)


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
                failure_threshold=o.capture_breaker_failures, cooldown=o.capture_breaker_cooldown
            ),
        )
        self._versions: dict[int, str] = {}

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

    def _version(self, pipeline: Pipeline, capture: Capture) -> str:
        version = self._versions.get(id(pipeline))
        if version is None:
            version = self._versions[id(pipeline)] = pipeline_version(pipeline)
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
        return version

    async def run(
        self,
        pipeline: Pipeline,
        parameters: msgspec.Struct,
        *,
        run_id: str | None = None,
        run_name: str | None = None,
        timeout: float | None = None,
        on_event: EventCallback | None = None,
    ) -> RunResult:
        kwargs = pipeline.call_kwargs(parameters)
        capture = self.effective_capture(pipeline)
        if capture.memory_only:
            return await self.executor.run(
                pipeline, kwargs, run_id=run_id, run_name=run_name, timeout=timeout, on_event=on_event
            )
        version = self._version(pipeline, capture)
        run_id = run_id or new_id()
        run_name = run_name or default_run_name(pipeline.name)
        observer = _RunCapture(capture, self.options.capture_max_bytes)
        started_at = time.time()
        run = (run_id, run_name, started_at)
        try:
            result = await self.executor.run(
                pipeline,
                kwargs,
                run_id=run_id,
                run_name=run_name,
                timeout=timeout,
                on_event=on_event,
                observer=observer,
            )
        except asyncio.CancelledError:
            self._publish(pipeline, version, capture, observer, run, parameters, None)
            raise
        self._publish(pipeline, version, capture, observer, run, parameters, result)
        return result

    def _publish(
        self,
        pipeline: Pipeline,
        version: str,
        capture: Capture,
        observer: _RunCapture,
        run: tuple[str, str, float],
        parameters: msgspec.Struct,
        result: RunResult | None,
    ) -> None:
        run_id, run_name, started_at = run
        finished_at = time.time()
        record = RunRecord(
            run_id=run_id,
            run_name=run_name,
            pipeline=pipeline.name,
            pipeline_version=version,
            status=result.status.value if result is not None else RunStatus.canceled.value,
            started_at=started_at,
            finished_at=finished_at,
            duration=result.execution_time if result is not None else finished_at - started_at,
            error=result.error if result is not None else "canceled",
            deployment=self.options.deployment_name,
            steps=observer.steps,
        )
        if capture.metadata:
            max_bytes = self.options.capture_max_bytes
            record.parameters = preview(parameters, max_bytes)
            if result is not None and result.outputs is not None:
                record.output_preview = preview(result.outputs, max_bytes)
        self.publisher.publish(record)

    def status(self) -> dict[str, Any]:
        return {"capture": self.publisher.status(), "cache_entries": len(self.executor.cache or ())}


register_runtime(RealtimeRuntime.name, RealtimeRuntime)
