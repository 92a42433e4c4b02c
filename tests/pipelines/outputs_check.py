"""Outputs that break their declared types, or hold NaN or infinity, on request."""

from typing import Annotated

from serving import pipeline, step


@step
def fetch(mode: str, qty: int, x: float) -> Annotated[dict, "weather"]:
    if mode == "none":
        return None  # type: ignore[return-value]  # the point: breaks its annotation
    if mode == "inf":
        return {"readings": [1.0, x * 1e308 * 10]}
    return {"qty": qty, "x": x}


@step
def scale(x: float) -> Annotated[float, "scaled"]:
    return x * 10


@pipeline
def outputs_check(mode: str = "ok", qty: int = 1, x: float = 1.0):
    return fetch(mode, qty, x), scale(x)
