"""The `kubernetes` flavor: apply the rendered manifests to the cluster of the current
kubeconfig context (lightkube, imported only here), and observe the Deployment.

It applies what `serving deployment render NAME --flavor kubernetes` writes, with that
command's defaults (image `serving-<name>:<snapshot>`, one replica); for anything else,
render and `kubectl apply -f DIR`. The cluster is found as kubectl finds it: in-cluster
service account, else `$KUBECONFIG`, else `~/.kube/config`; `SERVING_KUBE_CONTEXT` picks a
context other than the current one. No cluster, or one that does not answer, is one
line naming the kubeconfig and context.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from serving.deploy.deployers.base import DeployError, Progress
from serving.deploy.registry import Deployment, DeploymentStatus, Snapshot
from serving.deploy.render import kubernetes as manifests
from serving.deploy.render.spec import RenderError, RenderOptions, describe

if TYPE_CHECKING:
    from lightkube import Client

READY_TIMEOUT = 300.0  # pulling an image and starting a pod can take minutes
CONTEXT_VARIABLE = "SERVING_KUBE_CONTEXT"
DEFAULTS = manifests.DEFAULTS


class KubernetesDeployer:
    flavor = "kubernetes"

    def __init__(self, home: Path) -> None:
        self.home = home

    # -- the cluster -------------------------------------------------------------------

    def _client(self, namespace: str | None = None) -> tuple[Client, str, str]:
        """(client, namespace, where) for the configured context; `where` names it for errors."""
        try:
            from lightkube import Client
            from lightkube.config.kubeconfig import KubeConfig
            from lightkube.core.exceptions import ConfigError
        except ImportError:
            raise DeployError(
                "the kubernetes flavor needs lightkube: pip install 'serving[kubernetes]'"
            ) from None
        source = os.environ.get("KUBECONFIG") or "~/.kube/config"
        context = os.environ.get(CONTEXT_VARIABLE) or None
        try:
            config = KubeConfig.from_env().get(context_name=context)
        except ConfigError as exc:
            raise DeployError(
                f"no Kubernetes cluster is configured: {exc} (kubeconfig {source}; set KUBECONFIG, "
                f"or {CONTEXT_VARIABLE} for a context other than the current one)"
            ) from None
        assert config is not None
        kubeconfig = config.fname or source
        where = f"context {config.context_name!r} of kubeconfig {kubeconfig} ({config.cluster.server})"
        ns = namespace or config.namespace or "default"
        timeout = httpx.Timeout(10.0)
        return Client(config, namespace=ns, timeout=timeout, field_manager="serving"), ns, where

    def _reachable(self, client: Client, where: str) -> None:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Namespace

        try:
            client.get(Namespace, client.namespace)
        except ApiError as exc:
            if exc.status.code not in (403, 404):  # answered: it is reachable
                raise DeployError(f"the Kubernetes API of {where} refused: {exc.status.message}") from None
        except httpx.HTTPError as exc:
            raise DeployError(f"no Kubernetes cluster is reachable through {where}: {exc}") from None

    # -- the protocol ------------------------------------------------------------------

    def provision(
        self, deployment: Deployment, snapshot: Snapshot, *, port: int | None, progress: Progress
    ) -> Deployment:
        from lightkube import codecs
        from lightkube.core.exceptions import ApiError

        client, namespace, where = self._client()
        self._reachable(client, where)
        options = RenderOptions(namespace=namespace, port=port or RenderOptions().port)
        try:
            spec = describe(deployment, snapshot, options, DEFAULTS)
        except RenderError as exc:
            raise DeployError(str(exc)) from None
        deployment.flavor_data = {"namespace": namespace, "name": spec.name, "where": where}
        deployment.url = f"http://{spec.name}.{namespace}.svc.cluster.local:{manifests.SERVICE_PORT}"
        try:
            try:
                for filename, doc in manifests.manifests(spec).items():
                    progress(f"applying {filename} to {where}")
                    client.apply(codecs.from_dict(doc), force=True)
            except (ApiError, httpx.HTTPError) as exc:
                raise DeployError(f"applying the manifests to {where} failed: {exc}") from None
            self._wait_ready(deployment, progress)
        except DeployError:
            # The registry forgets a new deployment whose provision failed: take back
            # what was applied, so nothing runs unrecorded.
            with contextlib.suppress(DeployError):
                self.deprovision(deployment, progress=progress)
            raise
        deployment.status = DeploymentStatus.RUNNING
        return deployment

    def _wait_ready(self, deployment: Deployment, progress: Progress) -> None:
        namespace, name = deployment.flavor_data["namespace"], deployment.flavor_data["name"]
        deadline = time.monotonic() + READY_TIMEOUT
        while (status := self.status(deployment)) != DeploymentStatus.RUNNING:
            if time.monotonic() > deadline:
                raise DeployError(
                    f"Deployment {namespace}/{name} was not ready within {READY_TIMEOUT:g}s "
                    f"({status}); see `kubectl -n {namespace} describe deployment {name}`"
                )
            progress(f"waiting for Deployment {namespace}/{name} to be ready")
            time.sleep(1.0)

    def _resources(self) -> list[Any]:
        from lightkube.resources.apps_v1 import Deployment as KubeDeployment
        from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
        from lightkube.resources.core_v1 import Secret, Service
        from lightkube.resources.policy_v1 import PodDisruptionBudget

        return [HorizontalPodAutoscaler, PodDisruptionBudget, Service, KubeDeployment, Secret]

    def deprovision(self, deployment: Deployment, *, progress: Progress) -> Deployment:
        from lightkube.core.exceptions import ApiError

        data = deployment.flavor_data
        if data.get("name"):
            client, namespace, where = self._client(data.get("namespace"))
            for kind in self._resources():
                name = f"{data['name']}-auth" if kind.__name__ == "Secret" else data["name"]
                progress(f"deleting {kind.__name__} {namespace}/{name}")
                try:
                    client.delete(kind, name)
                except ApiError as exc:
                    if exc.status.code != 404:
                        raise DeployError(
                            f"deleting {kind.__name__} {name} in {where} failed: {exc}"
                        ) from None
                except httpx.HTTPError as exc:
                    raise DeployError(f"no Kubernetes cluster is reachable through {where}: {exc}") from None
        deployment.status = DeploymentStatus.ABSENT
        return deployment

    def status(self, deployment: Deployment) -> str:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.apps_v1 import Deployment as KubeDeployment

        data = deployment.flavor_data
        if not data.get("name"):
            return DeploymentStatus.ABSENT
        try:
            client, _, _ = self._client(data.get("namespace"))
            found = client.get(KubeDeployment, data["name"])
        except ApiError as exc:
            return DeploymentStatus.ABSENT if exc.status.code == 404 else DeploymentStatus.UNKNOWN
        except (DeployError, httpx.HTTPError):
            return DeploymentStatus.UNKNOWN
        want = (found.spec.replicas if found.spec else None) or 1
        ready = (found.status.readyReplicas if found.status else None) or 0
        return DeploymentStatus.RUNNING if ready >= want else DeploymentStatus.PENDING

    def logs(self, deployment: Deployment, *, tail: int | None, follow: bool) -> Iterator[str]:
        from lightkube.resources.core_v1 import Pod

        data = deployment.flavor_data
        if not data.get("name"):
            raise DeployError(f"deployment {deployment.name!r} has nothing in a cluster")
        client, _, where = self._client(data.get("namespace"))
        selector = {"app.kubernetes.io/instance": data["name"]}
        try:
            pods = [
                p.metadata.name for p in client.list(Pod, labels=selector) if p.metadata and p.metadata.name
            ]
            for pod in pods:
                for line in client.log(pod, tail_lines=tail, follow=follow and len(pods) == 1):
                    yield f"{pod} {line.rstrip()}" if len(pods) > 1 else line.rstrip("\n")
        except httpx.HTTPError as exc:
            raise DeployError(f"no Kubernetes cluster is reachable through {where}: {exc}") from None
