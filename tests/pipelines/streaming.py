"""A generator step that streams tokens; the test controls when the rest comes.

`tokens` (a sync generator, run in a worker thread) yields "a", waits until the file
`release` exists (when given), then yields "b" and "c". The output is "abc".
"""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from serving import pipeline, step

LIMIT = 20.0


@step
def tokens(release: str) -> Iterator[str]:
    yield "a"
    if release:
        deadline = time.monotonic() + LIMIT
        while not Path(release).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{release} never appeared")
            time.sleep(0.005)
    yield "b"
    yield "c"


@step
async def shout(text: str) -> Annotated[str, "text"]:
    return text.upper()


@pipeline
def streaming(release: str = ""):
    text = tokens(release)
    return {"joined": text, "loud": shout(text)}
