"""A step that reports `count` progress events of `size` bytes each, then waits.

For shutdown tests with subscribers that never read: the events fill their socket
buffers. After the events it touches `emitted` (when given), then waits for the file
`release` (when given) so the job is still running when the test signals the daemon;
it gives up after `LIMIT` seconds so a failed test never leaves a step behind.
"""

import asyncio
import time
from pathlib import Path
from typing import Annotated

from serving import pipeline, progress, step

LIMIT = 60.0


@step
async def talk(count: int, size: int, emitted: str, release: str) -> Annotated[int, "sent"]:
    message = "x" * size
    for i in range(count):
        progress(None, message)
        if i % 500 == 0:
            await asyncio.sleep(0)  # let the event fan-out run
    if emitted:
        Path(emitted).touch()
    deadline = time.monotonic() + LIMIT
    while release and not Path(release).exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return count


@pipeline
def chatty(count: int = 20_000, size: int = 1024, emitted: str = "", release: str = ""):
    return talk(count, size, emitted, release)
