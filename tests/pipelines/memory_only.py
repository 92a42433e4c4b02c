"""A one-step pipeline declared `Capture(memory_only=True)`: the daemon stores nothing."""

from typing import Annotated

from serving import Capture, pipeline, step


@step
def greet(name: str) -> Annotated[str, "greeting"]:
    print(f"greeting {name}")
    return f"hi {name}"


@pipeline(capture=Capture(memory_only=True))
def quiet(name: str = "x"):
    return greet(name)
