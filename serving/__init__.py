"""serving: serve a Python pipeline as a fast HTTP service.

The user API is re-exported here: `from serving import pipeline, step`.
"""

from capture import Capture
from runtimes import Pipeline, PipelineDefinitionError, Step, StepError, pipeline, step
from runtimes.progress import progress
from runtimes.visualize import Visualization, visualize

__all__ = [
    "Capture",
    "Pipeline",
    "PipelineDefinitionError",
    "Step",
    "StepError",
    "Visualization",
    "pipeline",
    "progress",
    "step",
    "visualize",
]
__version__ = "0.1.0"
