"""A pipeline whose one step announces it started and then holds until released, so a
test can interrupt the CLI while the job is certainly still running."""

import asyncio
from pathlib import Path
from typing import Annotated

from serving import pipeline, step


@step
async def hold(started: str, release: str) -> Annotated[str, "held"]:
    Path(started).touch()
    while not Path(release).exists():  # a cancel interrupts the sleep
        await asyncio.sleep(0.02)
    return "released"


@pipeline
def held(started: str = "", release: str = ""):
    return hold(started, release)
