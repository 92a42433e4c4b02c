"""The `Deployer` protocol and the flavor registry.

A flavor is a factory (usually the deployer class itself) that takes `$SERVING_HOME`
and returns a `Deployer`. Flavors are found by name in the `serving.deployers`
entry-point group, ours (`local`, `docker`, `kubernetes`) as much as a third party's,
so a package that declares

    [project.entry-points."serving.deployers"]
    my-cloud = "my_package.deployer:MyCloudDeployer"

is `--flavor my-cloud` once installed; `register_flavor` adds one at run time (tests,
embedding). The README's "Writing a deployer flavor" states the contract in full.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from serving.deploy.registry import Deployment, Snapshot

Progress = Callable[[str], None]


class DeployError(Exception):
    """Provisioning or deprovisioning failed; the message is one line for the CLI."""


class Deployer(Protocol):
    """What `Deployments` (CLI and SDK) asks of a flavor. Every method may raise
    DeployError with a one-line message; nothing else is caught. The deployer keeps what
    it needs to find its service again (container id, pid, cluster names) in
    `deployment.flavor_data` (JSON-able) and the address clients use in `deployment.url`;
    `Deployments` writes the record to the registry after each call."""

    flavor: str

    def provision(
        self, deployment: Deployment, snapshot: Snapshot, *, port: int | None, progress: Progress
    ) -> Deployment:
        """Start the service and wait until it is ready; raises DeployError."""
        ...

    def deprovision(self, deployment: Deployment, *, progress: Progress) -> Deployment:
        """Stop the service (gracefully, then forcibly); raises DeployError."""
        ...

    def status(self, deployment: Deployment) -> str:
        """Observe the real state now (RUNNING, PENDING, ERROR, ABSENT, UNKNOWN)."""
        ...

    def logs(self, deployment: Deployment, *, tail: int | None, follow: bool) -> Iterator[str]: ...


DeployerFactory = Callable[[Path], Deployer]
ENTRY_POINT_GROUP = "serving.deployers"
# Rendered for a platform, never deployed from here (serving/deploy/render/).
RENDER_ONLY = ("gcp-cloud-run", "aws-app-runner")
_flavors: dict[str, DeployerFactory] = {}

# Optional parts of a deployer, looked up with getattr so a flavor without them works:
#
#   replaces_live: bool
#       True: `--update` provisions the new deployment while the old one still serves,
#       records it (the registry's URL switches), then calls `retire(previous)`. False or
#       missing (the local flavor): the old one is deprovisioned first, so it can hand
#       its port over and the URL stays the same.
#   retire(previous: Deployment, *, progress) -> None
#       stop what `previous` (the record before the update) ran; only with replaces_live.
#   forget(deployment: Deployment, *, progress) -> None
#       `delete`: remove what the flavor kept for a deprovisioned deployment (images,
#       volumes); missing means there is nothing to remove.


def is_started(deployment: Deployment) -> bool:
    """Something of the deployment may run: a local pid or a container."""
    return bool(deployment.flavor_data.get("pid") or deployment.flavor_data.get("container"))


def register_flavor(name: str, factory: DeployerFactory) -> None:
    """Add a flavor at run time; an installed package uses the entry-point group instead."""
    _flavors[name] = factory


def available_flavors() -> list[str]:
    return sorted({*_flavors, *(e.name for e in entry_points(group=ENTRY_POINT_GROUP))})


def get_deployer(flavor: str, home: Path) -> Deployer:
    """The deployer of `flavor`; raises DeployError naming the available flavors for an
    unknown one, or the package whose flavor failed to load."""
    factory = _flavors.get(flavor) or _from_entry_point(flavor)
    if factory is None:
        if flavor in RENDER_ONLY:
            raise DeployError(
                f"the {flavor!r} flavor is rendered, not deployed from here: "
                f"serving deployment render NAME --flavor {flavor}"
            )
        raise DeployError(f"unknown deployer flavor {flavor!r} (available: {', '.join(available_flavors())})")
    return factory(home)


def _from_entry_point(name: str) -> DeployerFactory | None:
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            factory: DeployerFactory = entry.load()
        except Exception as exc:  # a broken plug-in: say which, never a traceback
            package = entry.dist.name if entry.dist else entry.value
            raise DeployError(
                f"the {name!r} deployer flavor (from {package}) failed to load: {exc}"
            ) from None
        register_flavor(name, factory)
        return factory
    return None
