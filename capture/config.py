"""The `Capture` options a pipeline declares with `@pipeline(capture=Capture(...))`."""

from __future__ import annotations

import msgspec


class Capture(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What observability a pipeline's runs produce.

    The options only ever change what is recorded, never what a run computes, so a
    deployment may tune them freely. `memory_only=True` selects the fastest path:
    nothing is published or persisted, and the serving daemon uses the MemoryOnly
    runtime for the pipeline.
    """

    code: bool = True
    logs: bool = True
    metadata: bool = True
    visualizations: bool = True
    metrics: bool = True
    memory_only: bool = False
