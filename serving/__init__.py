"""serving: serve a Python pipeline as a fast HTTP service.

The user API is re-exported here: `from serving import pipeline, step`.
"""

from capture import Capture
from runtimes import Pipeline, PipelineDefinitionError, Step, StepError, cancelled, pipeline, step
from runtimes.progress import progress
from runtimes.visualize import Visualization, visualize

__all__ = [
    "Capture",
    "Client",
    "Deployment",
    "Pipeline",
    "PipelineDefinitionError",
    "Step",
    "StepError",
    "Visualization",
    "cancelled",
    "invoke_deployment",
    "pipeline",
    "progress",
    "step",
    "visualize",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The SDK pulls in httpx and the registry: load it only when asked for.
    if name in ("Client", "Deployment", "invoke_deployment"):
        from serving.deploy import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
