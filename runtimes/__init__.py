"""The pipeline model (`@step`, `@pipeline`) and how a run executes.

Usable on its own: a pipeline defined here runs in a plain script with no server.
"""

from runtimes import memory as _memory  # noqa: F401  (registers the built-in runtimes)
from runtimes import realtime as _realtime  # noqa: F401
from runtimes.base import Runtime, RuntimeOptions, available_runtimes, create_runtime, register_runtime
from runtimes.cancel import RunControl, cancelled
from runtimes.errors import PipelineDefinitionError, RunTimeoutError, StepError, StepTimeoutError
from runtimes.executor import DagExecutor, RunResult, RunStatus
from runtimes.outputs import OutputError
from runtimes.pipeline import Pipeline, pipeline
from runtimes.step import Step, step

__all__ = [
    "DagExecutor",
    "OutputError",
    "Pipeline",
    "PipelineDefinitionError",
    "RunControl",
    "RunResult",
    "RunStatus",
    "RunTimeoutError",
    "Runtime",
    "RuntimeOptions",
    "Step",
    "StepError",
    "StepTimeoutError",
    "available_runtimes",
    "cancelled",
    "create_runtime",
    "pipeline",
    "register_runtime",
    "step",
]
