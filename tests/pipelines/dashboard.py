"""A pipeline for the dashboard's browser tests: every kind of form field, a streaming
step that reports progress, and a wait the test controls.

`words` (an async generator) reports progress, yields `times` words, then waits until
the file `release` exists (when given) before yielding "end": the test sees progress
and chunks arrive while the run is still going, and can cancel it there.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from serving import pipeline, progress, step

LIMIT = 20.0


@step
def prepare(topic: str, loud: bool, mode: Literal["fast", "slow"]) -> Annotated[str, "prepared"]:
    print(f"preparing {topic} ({mode})")
    return topic.upper() if loud else topic


@step
async def words(prepared: str, times: int, release: str) -> AsyncIterator[str]:
    progress(0.25, "first words")
    for i in range(times):
        yield f"{prepared}-{i} "
    progress(0.5, "waiting for release")
    if release:
        deadline = time.monotonic() + LIMIT
        while not Path(release).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{release} never appeared")
            await asyncio.sleep(0.005)
    progress(1.0, "released")
    yield "end"


@step
async def finish(text: str, extra: dict[str, int], fail: bool) -> Annotated[dict[str, Any], "summary"]:
    if fail:
        raise RuntimeError(f"finish refused {text!r}")
    return {"text": text, "extra": extra}


@pipeline
def dashboard(
    topic: str = "hello",
    times: int = 2,
    mode: Literal["fast", "slow"] = "fast",
    loud: bool = False,
    extra: dict[str, int] = {"a": 1},
    release: str = "",
    fail: bool = False,
):
    """A pipeline to look at in the dashboard."""
    return finish(words(prepare(topic, loud, mode), times, release), extra, fail)
