"""Several typed parameters, to see every bad field reported at once."""

from typing import Annotated

from serving import pipeline, step


@step
def describe(name: str, count: int, ratio: float, flag: bool) -> Annotated[str, "text"]:
    return f"{name}:{count}:{ratio}:{flag}"


@pipeline
def typed(name: str = "n", count: int = 1, ratio: float = 0.5, flag: bool = False):
    return describe(name, count, ratio, flag)
