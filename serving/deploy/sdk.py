"""The Python SDK: deploy pipelines and use deployments from code.

from serving import Client, invoke_deployment
dep = my_pipeline.deploy(deployment_name="weather")   # snapshot + local daemon
dep.invoke(city="Rome")["outputs"]
Client().list_deployments()
dep.deprovision(); dep.delete()
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtimes import Pipeline
from serving.deploy import registry as reg
from serving.deploy.client import ServingClient
from serving.deploy.deployments import Deployments, DeployOptions


class Deployment:
    """A handle on one registered deployment; reads go to the registry, calls to the daemon."""

    def __init__(self, record: reg.Deployment, service: Deployments) -> None:
        self.record = record
        self._service = service

    def __repr__(self) -> str:
        return f"<Deployment {self.name} {self.status} {self.url}>"

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def url(self) -> str | None:
        return self.record.url

    @property
    def status(self) -> str:
        """The observed status (pid and health probe), refreshed on each read."""
        self.record = self._service.refresh(self.record.id)
        return self.record.status

    @property
    def auth_key(self) -> str | None:
        return self.record.auth_key

    def client(self) -> ServingClient:
        return self._service.client(self.record.id)

    def invoke(self, parameters: dict[str, Any] | None = None, /, **params: Any) -> dict[str, Any]:
        with self.client() as c:
            return c.invoke(parameters, **params)

    def submit(self, parameters: dict[str, Any] | None = None, /, **params: Any) -> dict[str, Any]:
        with self.client() as c:
            return c.submit(parameters, **params)

    def logs(self, tail: int | None = None) -> list[str]:
        return list(self._service.logs(self.record.id, tail=tail))

    def deprovision(self) -> Deployment:
        self.record = self._service.deprovision(self.record.id)
        return self

    def delete(self, force: bool = True) -> None:
        self._service.delete(self.record.id, force=force)


class Client:
    """Registry operations for one SERVING_HOME (default: the settings' home)."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.service = Deployments(home)

    def list_deployments(self) -> list[Deployment]:
        return [Deployment(d, self.service) for d in self.service.list()]

    def get_deployment(self, name_or_id: str) -> Deployment:
        return Deployment(self.service.get(name_or_id), self.service)

    def delete_deployment(self, name_or_id: str, force: bool = False) -> None:
        self.service.delete(name_or_id, force=force)

    def list_snapshots(self) -> list[reg.Snapshot]:
        return self.service.registry.list_snapshots()

    def get_snapshot(self, name_or_id: str) -> reg.Snapshot:
        return self.service.registry.get_snapshot(name_or_id)

    def deploy(self, source: str, deployment_name: str, **options: Any) -> Deployment:
        """Deploy `module:attr` or `path/file.py:attr`, replacing a deployment of that name
        unless `update=False`; the options are `DeployOptions` fields. Raises TypeError
        for an unknown option, else as `Deployments.deploy`."""
        settings = DeployOptions.from_keywords({"update": True, **options})
        return Deployment(self.service.deploy(source, deployment_name, settings), self.service)


def invoke_deployment(
    name_or_id: str, parameters: dict[str, Any] | None = None, /, **params: Any
) -> dict[str, Any]:
    """Invoke a registered deployment by name or id; returns the /invoke reply."""
    return Client().get_deployment(name_or_id).invoke(parameters, **params)


def pipeline_source(pipeline: Pipeline) -> str:
    """`path/file.py:attr` for a pipeline object, found through the module that defines it."""
    module = sys.modules.get(pipeline.fn.__module__)
    path = inspect.getsourcefile(pipeline.fn)
    if module is None or path is None:
        raise ValueError(f"cannot tell which file defines pipeline {pipeline.name!r}; deploy it by path")
    names = [k for k, v in vars(module).items() if v is pipeline]
    if not names:
        raise ValueError(
            f"pipeline {pipeline.name!r} is not a module-level name in {path}; deploy it by path"
        )
    return f"{Path(path).resolve()}:{names[0]}"


def deploy_pipeline(pipeline: Pipeline, deployment_name: str, **options: Any) -> Deployment:
    """`my_pipeline.deploy(deployment_name=...)`: snapshot it and run it (replacing in place)."""
    home = options.pop("home", None)
    return Client(home).deploy(pipeline_source(pipeline), deployment_name, **options)


def iter_logs(name_or_id: str, tail: int | None = None, follow: bool = False) -> Iterator[str]:
    return Client().service.logs(name_or_id, tail=tail, follow=follow)
