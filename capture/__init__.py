"""Observability: `Capture` options, run records and previews, the publisher and its sinks.

`capture` sits at the bottom of the dependency graph: it imports nothing else from
this project, so every layer above can name a `Capture` without import cycles.
"""

from capture.config import Capture

__all__ = ["Capture"]
