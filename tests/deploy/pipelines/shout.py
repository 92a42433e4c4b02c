"""A second, different pipeline, to tell two deployments apart."""

from typing import Annotated

from serving import pipeline, step


@step
def upper(word: str) -> Annotated[str, "loud"]:
    return word.upper() + "!"


@pipeline
def shout(word: str = "hey"):
    return upper(word)
