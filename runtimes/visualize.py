"""Visualizations a step attaches (`visualize(...)`) or returns (a `Visualization`).

They are stored with the step run in the capture store (when
`Capture(visualizations=True)`); they never change the step's output.
"""

from __future__ import annotations

import base64
from typing import Literal

import msgspec

from capture.records import Artifact
from runtimes.progress import current_step

Kind = Literal["html", "markdown", "svg", "png"]


class Visualization(msgspec.Struct, frozen=True, kw_only=True):
    kind: Kind
    content: str | bytes
    name: str = "visualization"

    def artifact(self) -> Artifact:
        content = self.content
        if isinstance(content, bytes):
            content = base64.b64encode(content).decode() if self.kind == "png" else content.decode()
        return Artifact(name=self.name, kind=self.kind, content=content)


def visualize(content: str | bytes, kind: Kind = "html", name: str = "visualization") -> None:
    """Attach a visualization to the running step (html, markdown, svg, or png bytes).

    Outside a run, or when visualizations are not captured, it does nothing.
    """
    if kind not in ("html", "markdown", "svg", "png"):
        raise ValueError(f"visualization kind must be html, markdown, svg or png, not {kind!r}")
    scope = current_step.get()
    if scope is None or scope.artifacts is None:
        return
    scope.artifacts.append(Visualization(kind=kind, content=content, name=name).artifact())
