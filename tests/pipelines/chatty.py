"""One step that reports `count` progress events, each with a `size`-character message;
for the event-memory tests (a job whose event log outgrows its byte bounds)."""

from typing import Annotated

from serving import pipeline, progress, step


@step
def talk(count: int, size: int) -> Annotated[int, "reported"]:
    for i in range(count):
        progress(None, f"{i:06d}" + "x" * max(0, size - 6))
    return count


@pipeline
def chatty(count: int = 10, size: int = 1000):
    return talk(count, size)
