"""Marker-file gates that steer `tests/pipelines/gated.py` runs, shared by the job and
stream tests: a step announces it started, waits to be released, records a cancel."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class Gate:
    """Marker files for one run of the gated pipeline."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.started = root / f"{name}.started"
        self.release = root / f"{name}.release"
        self.cancelled = root / f"{name}.cancelled"
        self.linger = root / f"{name}.linger"
        self.done = root / f"{name}.done"

    def params(self, *, block: bool = True, linger: bool = False) -> dict[str, str]:
        return {
            "tag": self.name,
            "started": str(self.started),
            "release": str(self.release) if block else "",
            "cancelled": str(self.cancelled),
            "linger": str(self.linger) if linger else "",
            "done": str(self.done),
        }

    def body(self, **kw: Any) -> dict[str, Any]:
        return {"parameters": self.params(**kw)}

    def open(self) -> None:
        self.release.touch()


def gate_factory(root: Path) -> Iterator[Callable[[str], Gate]]:
    """Yield a maker of gates; afterwards open them all, so no step is left waiting in a
    daemon that other tests share."""
    made: list[Gate] = []

    def make(name: str) -> Gate:
        gate = Gate(root, name)
        made.append(gate)
        return gate

    yield make
    for gate in made:
        gate.open()
        gate.linger.touch()
