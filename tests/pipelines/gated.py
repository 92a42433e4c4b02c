"""Three steps whose middle one the test drives through marker files; for jobs tests.

`hold` touches `started` (if given) once it runs, reports progress, then waits until the
file `release` exists (if given). When cancelled it touches `cancelled`, and if `linger`
is given it waits for that file before letting the cancellation through, so a test can
see a cancellation that is under way. On normal completion it touches `done`.
Every wait gives up after `LIMIT` seconds so a failed test never leaves a step behind.
"""

import asyncio
import time
from pathlib import Path
from typing import Annotated

from serving import pipeline, progress, step

LIMIT = 20.0


async def _wait_for(path: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        await asyncio.sleep(0.005)


@step
def prepare(tag: str) -> Annotated[str, "prepared"]:
    return tag


@step
async def hold(prepared: str, started: str, release: str, cancelled: str, linger: str, done: str) -> str:
    progress(0.25, "waiting")
    if started:
        Path(started).touch()
    try:
        if release:
            await _wait_for(release)
    except asyncio.CancelledError:
        if cancelled:
            Path(cancelled).touch()
        if linger:
            await _wait_for(linger)
        raise
    progress(1.0, "released")
    if done:
        Path(done).touch()
    return prepared


@step
async def finish(held: str) -> Annotated[str, "result"]:
    return f"done:{held}"


@pipeline
def gated(
    tag: str = "",
    started: str = "",
    release: str = "",
    cancelled: str = "",
    linger: str = "",
    done: str = "",
):
    return finish(hold(prepare(tag), started, release, cancelled, linger, done))
