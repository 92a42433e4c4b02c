"""`MemoryOnlyRuntime`: run the DAG and nothing else; the fastest path."""

from __future__ import annotations

import msgspec

from runtimes.base import RuntimeOptions, register_runtime
from runtimes.cancel import RunControl
from runtimes.executor import DagExecutor, EventCallback, RunResult
from runtimes.pipeline import Pipeline


class MemoryOnlyRuntime:
    """Nothing is published or persisted: events go only to the caller's callback."""

    name = "memory"

    def __init__(self, options: RuntimeOptions | None = None) -> None:
        self.options = options or RuntimeOptions()
        self.executor = DagExecutor(self.options.max_threads)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.executor.shutdown()

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
        return await self.executor.run(
            pipeline,
            pipeline.call_kwargs(parameters),
            run_id=run_id,
            run_name=run_name,
            timeout=timeout,
            on_event=on_event,
            control=control,
        )


register_runtime(MemoryOnlyRuntime.name, MemoryOnlyRuntime)
