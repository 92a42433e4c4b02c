"""One sync step that blocks its worker thread; for the step-thread tests.

`block` touches `started`, then waits until the file `release` exists. With
`cooperate` it checks `serving.cancelled()` while it waits and, once that is True,
touches `noticed` and returns at once. It touches `done` only if it ran to its end
(the side effect an abandoned step still has). Every wait gives up after `LIMIT`
seconds so a failed test never leaves a thread behind.
"""

import time
from pathlib import Path
from typing import Annotated

from serving import cancelled, pipeline, step

LIMIT = 30.0


@step
def block(started: str, release: str, noticed: str, done: str, cooperate: bool) -> Annotated[str, "result"]:
    if started:
        Path(started).touch()
    deadline = time.monotonic() + LIMIT
    while release and not Path(release).exists() and time.monotonic() < deadline:
        if cooperate and cancelled():
            Path(noticed).touch()
            return "stopped early"
        time.sleep(0.005)
    if done:
        Path(done).touch()
    return "ran to the end"


@pipeline
def blocking(
    started: str = "", release: str = "", noticed: str = "", done: str = "", cooperate: bool = False
):
    return block(started, release, noticed, done, cooperate)
