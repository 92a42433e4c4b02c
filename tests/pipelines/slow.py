"""An async step that sleeps `seconds`; for timeout and graceful-shutdown tests.

When `marker` is a path, the step creates that file as it starts sleeping, so a test
knows the request is in flight without guessing with sleeps.
"""

import asyncio
from pathlib import Path
from typing import Annotated

from serving import pipeline, step


@step
async def nap(seconds: float, marker: str) -> Annotated[float, "slept"]:
    if marker:
        Path(marker).touch()
    await asyncio.sleep(seconds)
    return seconds


@pipeline
def slow(seconds: float = 0.0, marker: str = ""):
    return nap(seconds, marker)
