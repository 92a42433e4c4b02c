"""Render a deployment for platforms this machine cannot reach: the files a user applies.

One module per target builds plain dicts from a `ServiceSpec` (spec.py); this module
names the targets and turns their dicts into YAML or JSON text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import yaml

from serving.deploy.registry import Deployment, Snapshot
from serving.deploy.render import app_runner, cloud_run, kubernetes
from serving.deploy.render.spec import (
    Defaults,
    RenderError,
    RenderOptions,
    ServiceSpec,
    describe,
    image_name,
)

__all__ = [
    "TARGETS",
    "RenderError",
    "RenderOptions",
    "ServiceSpec",
    "Target",
    "documents",
    "image_name",
    "render",
    "spec_for",
    "write",
]

Documents = dict[str, dict[str, Any]]


class Target(msgspec.Struct, frozen=True):
    defaults: Defaults
    build: Callable[[ServiceSpec], Documents]
    apply: str  # how a user applies the output; {path} is the file or folder


TARGETS: dict[str, Target] = {
    "kubernetes": Target(kubernetes.DEFAULTS, kubernetes.manifests, "kubectl apply -f {path}"),
    "gcp-cloud-run": Target(cloud_run.DEFAULTS, cloud_run.manifests, "gcloud run services replace {path}"),
    "aws-app-runner": Target(
        app_runner.DEFAULTS,
        app_runner.manifests,
        "aws apprunner create-service --cli-input-json file://{path}",
    ),
}


def _target(flavor: str) -> Target:
    target = TARGETS.get(flavor)
    if target is None:
        raise RenderError(f"cannot render flavor {flavor!r} (renderable: {', '.join(TARGETS)})")
    return target


def spec_for(flavor: str, deployment: Deployment, snapshot: Snapshot, options: RenderOptions) -> ServiceSpec:
    """The deployment as `flavor` runs it (that target's defaults filled in); raises
    RenderError for an unknown flavor or bad options."""
    return describe(deployment, snapshot, options, _target(flavor).defaults)


def documents(flavor: str, spec: ServiceSpec) -> Documents:
    """File name -> document (a dict) for `flavor`; raises RenderError."""
    return _target(flavor).build(spec)


def to_text(filename: str, document: dict[str, Any]) -> str:
    if filename.endswith(".json"):
        return json.dumps(document, indent=2) + "\n"
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def render(flavor: str, spec: ServiceSpec) -> dict[str, str]:
    """File name -> text (YAML, or JSON for a .json file)."""
    return {name: to_text(name, doc) for name, doc in documents(flavor, spec).items()}


def write(files: dict[str, str], folder: Path) -> list[Path]:
    """Write the files into `folder` (created), readable by the owner only: a Kubernetes
    Secret carries the auth key."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        paths.append(path)
    return paths
