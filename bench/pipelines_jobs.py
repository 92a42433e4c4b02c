"""A ~2 s job that reports progress: the workload for bench/jobs.py's SSE fan-out.

Twenty `progress` events 0.1 s apart give every subscriber a live stream to
follow, so fan-out measures delivery to open streams rather than history replay.
`lead_in` (seconds before the first tick, default 0) lets the harness attach
all its streams before events start to flow when it opens very many of them.

    SERVING_PIPELINE=bench.pipelines_jobs:ticker python -m serving   # from the repo root

The harness names it as a module. A file path (`bench/pipelines_jobs.py:ticker`)
works too since commit ac55e1a; before it, the daemon put bench/ first on sys.path
and bench/jobs.py shadowed its `jobs` package.
"""

import asyncio
from typing import Annotated

from serving import pipeline, progress, step

TICKS = 20
INTERVAL_S = 0.1


@step
async def tick(ticks: int, interval: float, lead_in: float) -> Annotated[int, "ticks"]:
    if lead_in > 0:
        await asyncio.sleep(lead_in)
    for i in range(ticks):
        progress(i / ticks, f"step {i}")
        await asyncio.sleep(interval)
    return ticks


@pipeline
def ticker(ticks: int = TICKS, interval: float = INTERVAL_S, lead_in: float = 0.0):
    return tick(ticks, interval, lead_in)
