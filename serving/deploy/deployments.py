"""Deployment operations shared by the CLI and the SDK: deploy, refresh, deprovision,
delete, logs. Every state change is written to the registry before and after the
deployer acts, so a concurrent `serving deployment list` sees PENDING, not nothing."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from serving.deploy.client import ServingClient
from serving.deploy.deployers import DeployError, get_deployer
from serving.deploy.deployers.base import is_started
from serving.deploy.names import validate_name
from serving.deploy.registry import Deployment, DeploymentStatus, Registry, RegistryError, Snapshot, new_uuid
from serving.deploy.snapshots import create_snapshot, delete_snapshot, unique_snapshot_name
from serving.settings import load_settings

Progress = Callable[[str], None]


class DeployOptions(msgspec.Struct, kw_only=True, frozen=True):
    """How to run a deployment: the one list of deploy keywords, shared by the SDK
    (`pipeline.deploy(**options)`), the CLI flags and `Deployments`."""

    port: int | None = None  # preferred port; None picks a free one (or keeps an updated one's)
    auth_key: str | None = None  # require this bearer token
    generate_auth_key: bool = False  # require a generated bearer token
    update: bool = False  # replace an existing deployment of that name
    flavor: str = "local"  # the deployer
    base_image: str | None = None  # docker: the image to build on (default python:3.11-slim)
    network: str | None = None  # docker: "host", or a network to publish the port from

    @classmethod
    def from_keywords(cls, options: dict[str, Any]) -> DeployOptions:
        """Options given as keywords (the SDK); raises TypeError naming an unknown one or a
        value of the wrong type, before anything is snapshotted."""
        unknown = sorted(set(options) - set(cls.__struct_fields__))
        if unknown:
            known = ", ".join(cls.__struct_fields__)
            raise TypeError(f"unknown deploy option(s) {', '.join(unknown)} (known: {known})")
        try:
            return msgspec.convert(options, cls)
        except msgspec.ValidationError as exc:
            raise TypeError(f"bad deploy option: {exc}") from None


def _quiet(_: str) -> None:
    return None


class Deployments:
    """The registry plus the deployers, for one SERVING_HOME."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else load_settings().home_path
        self.registry = Registry(self.home)

    # -- snapshots -----------------------------------------------------------------------

    def create_snapshot(self, name: str, source: str) -> Snapshot:
        return create_snapshot(self.registry, name, source)

    # -- deploy ----------------------------------------------------------------------------

    def deploy(
        self,
        source: str,
        name: str,
        options: DeployOptions | None = None,
        *,
        progress: Progress = _quiet,
    ) -> Deployment:
        """Snapshot `source` and run it as deployment `name`; raises RegistryError,
        PipelineLoadError or DeployError with a one-line message."""
        options = options or DeployOptions()
        validate_name(name)
        self._refuse_existing(name, options.update)
        get_deployer(options.flavor, self.home)  # an unknown flavor fails before a snapshot is made
        progress(f"snapshotting {source}")
        snap_name = unique_snapshot_name(self.registry, name)
        snapshot = create_snapshot(self.registry, snap_name, source, created_for=name)
        return self.deploy_snapshot(snapshot.id, name, options, progress=progress)

    def _refuse_existing(self, name: str, update: bool) -> Deployment | None:
        existing = self.registry.find_deployment(name)
        if existing is not None and not update:
            raise RegistryError(
                f"deployment {name!r} already exists ({existing.status}); pass --update to replace it"
            )
        return existing

    def deploy_snapshot(
        self,
        snapshot: str,
        name: str,
        options: DeployOptions | None = None,
        *,
        progress: Progress = _quiet,
    ) -> Deployment:
        """Run snapshot `snapshot` (name or id) as deployment `name`; raises as `deploy`."""
        options = options or DeployOptions()
        validate_name(name)
        port, auth_key, flavor = options.port, options.auth_key, options.flavor
        snap = self.registry.get_snapshot(snapshot)
        existing = self._refuse_existing(name, options.update)
        deployer = get_deployer(flavor, self.home)
        if flavor == "local" and (options.base_image or options.network):
            raise DeployError("--base-image and --network are options of --flavor docker, not local")
        if options.generate_auth_key:
            auth_key = secrets.token_urlsafe(24)
        now = time.time()
        previous: Deployment | None = None
        live = bool(
            existing is not None
            and existing.flavor == flavor
            and is_started(existing)
            and getattr(deployer, "replaces_live", False)
        )
        flavor_config = {"base_image": options.base_image, "network": options.network}
        if existing is not None:
            previous = msgspec.structs.replace(existing, flavor_data=dict(existing.flavor_data))
            if live:
                progress(f"starting the new {name!r} beside the running one")
            elif is_started(existing):
                progress(f"stopping the running {name!r} to replace it")
                get_deployer(existing.flavor, self.home).deprovision(existing, progress=progress)
                port = port or existing.flavor_data.get("port")  # keep the URL stable in place
            if existing.flavor == flavor:  # the flavor's options stay unless given again
                for key, value in flavor_config.items():
                    flavor_config[key] = value or existing.flavor_data.get(key)
            dep = existing
            dep.snapshot_id, dep.flavor = snap.id, flavor
            dep.auth_key = auth_key if auth_key is not None else existing.auth_key
        else:
            dep = Deployment(
                id=new_uuid(),
                name=name,
                snapshot_id=snap.id,
                flavor=flavor,
                auth_key=auth_key,
                created_at=now,
                updated_at=now,
            )
        dep.flavor_data = {**dep.flavor_data, **{k: v for k, v in flavor_config.items() if v}}
        if not live:  # a live update keeps the running one's record until the switch
            dep.status = DeploymentStatus.PENDING
            self.registry.put_deployment(dep)
        try:
            dep = deployer.provision(dep, snap, port=port, progress=progress)
        except DeployError:
            if live and previous is not None:
                self.registry.put_deployment(previous)  # the old one still serves
                raise
            if existing is None and not is_started(dep):
                self.registry.delete_deployment(dep.id)  # nothing ran: the name stays free
                raise
            dep.status = DeploymentStatus.ERROR
            self.registry.put_deployment(dep)
            raise
        self.registry.put_deployment(dep)
        if live and previous is not None:
            getattr(deployer, "retire")(previous, progress=progress)  # noqa: B009
        return dep

    # -- observe and manage -----------------------------------------------------------

    def get(self, name_or_id: str) -> Deployment:
        return self.registry.get_deployment(name_or_id)

    def list(self) -> list[Deployment]:
        return self.registry.list_deployments()

    def refresh(self, name_or_id: str) -> Deployment:
        """Observe the real state (pid and health probe) and record it."""
        dep = self.registry.get_deployment(name_or_id)
        before = dict(dep.flavor_data)
        status = get_deployer(dep.flavor, self.home).status(dep)
        if status != dep.status or dep.flavor_data != before:  # a flavor may record why
            dep.status = status
            self.registry.put_deployment(dep)
        return dep

    def provision(
        self, name_or_id: str, *, port: int | None = None, progress: Progress = _quiet
    ) -> Deployment:
        """Start a deployment that is not running (deprovisioned, or its process died)
        again from its snapshot, with its auth key and, when free, its old port; one that
        is running is left alone. Raises RegistryError or DeployError."""
        dep = self.refresh(name_or_id)
        if dep.status in (DeploymentStatus.RUNNING, DeploymentStatus.PENDING):
            return dep
        snap = self.registry.get_snapshot(dep.snapshot_id)
        deployer = get_deployer(dep.flavor, self.home)
        if dep.flavor_data.get("pid"):  # ERROR: whatever is left of the old process goes first
            dep = deployer.deprovision(dep, progress=progress)
        if port is None:
            port = _previous_port(dep)
        dep.status = DeploymentStatus.PENDING
        self.registry.put_deployment(dep)
        try:
            dep = deployer.provision(dep, snap, port=port, progress=progress)
        except DeployError:
            dep.status = DeploymentStatus.ERROR if dep.flavor_data.get("pid") else DeploymentStatus.ABSENT
            self.registry.put_deployment(dep)
            raise
        self.registry.put_deployment(dep)
        return dep

    def deprovision(self, name_or_id: str, progress: Progress = _quiet) -> Deployment:
        dep = self.registry.get_deployment(name_or_id)
        dep = get_deployer(dep.flavor, self.home).deprovision(dep, progress=progress)
        self.registry.put_deployment(dep)
        return dep

    def delete(self, name_or_id: str, *, force: bool = False, progress: Progress = _quiet) -> None:
        dep = self.refresh(name_or_id)
        if dep.status in (DeploymentStatus.RUNNING, DeploymentStatus.PENDING):
            if not force:
                raise RegistryError(
                    f"deployment {dep.name!r} is {dep.status}; stop it first"
                    f" (`serving deployment deprovision {dep.name}`) or pass --force"
                )
            dep = self.deprovision(dep.id, progress)
        elif is_started(dep):
            dep = self.deprovision(dep.id, progress)  # an ERROR'd one may have left a process
        forget = getattr(get_deployer(dep.flavor, self.home), "forget", None)
        if forget is not None:
            forget(dep, progress=progress)
        self.registry.delete_deployment(dep.id)
        # What the deployment owned: its folder (the daemon's log) and the snapshots
        # `pipeline deploy` made for it that no other deployment uses.
        shutil.rmtree(self.home / "deployments" / dep.id, ignore_errors=True)
        for snap in self.registry.list_snapshots():
            if snap.created_for == dep.name:
                with contextlib.suppress(RegistryError):  # another deployment uses it: it stays
                    delete_snapshot(self.registry, snap.id)

    def delete_snapshot(self, name_or_id: str) -> Snapshot:
        """Remove a snapshot and its frozen code; refused while a deployment uses it."""
        return delete_snapshot(self.registry, name_or_id)

    def logs(self, name_or_id: str, *, tail: int | None = None, follow: bool = False) -> Iterator[str]:
        """The deployment's log lines: all, or the last `tail` (0: none, for `follow`).

        Raises DeployError for a negative `tail`, which would otherwise slice from the front.
        """
        if tail is not None and tail < 0:
            raise DeployError(f"tail must be 0 or more, got {tail}")
        dep = self.registry.get_deployment(name_or_id)
        return get_deployer(dep.flavor, self.home).logs(dep, tail=tail, follow=follow)

    def client(self, name_or_id: str) -> ServingClient:
        dep = self.registry.get_deployment(name_or_id)
        if not dep.url:
            raise DeployError(
                f"deployment {dep.name!r} has no URL (status {dep.status});"
                f" start it with `serving deployment provision {dep.name}`"
            )
        return ServingClient(dep.url, auth_key=dep.auth_key)


def _previous_port(dep: Deployment) -> int | None:
    """The port a local deployment had, if it is still free: its URL stays the same
    across a deprovision and provision; a taken one gets a new port, not a failure."""
    port = dep.flavor_data.get("port")
    if dep.flavor != "local" or not port:
        return None
    from serving.deploy.deployers.local import port_free

    return int(port) if port_free(int(port)) else None
