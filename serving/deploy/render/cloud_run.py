"""A Google Cloud Run service (`serving.knative.dev/v1` Service) for a deployment, as
`gcloud run services replace FILE` takes it.

Cloud Run sends SIGTERM and kills the container 10 s later, whatever the YAML says, so
this target's defaults drain for 0 s and stop gracefully within 8 s, and a longer total
is refused. The auth key lives in Secret Manager (`--auth-secret NAME`, default
`<name>-auth-key`), referenced by name; the YAML never carries it.
"""

from __future__ import annotations

import math
from typing import Any

from serving.deploy.render.spec import LIVENESS_PATH, READINESS_PATH, Defaults, RenderError, ServiceSpec
from serving.settings import PREFIX

DEFAULTS = Defaults(cpu="1", memory="512Mi", drain_delay=0.0, graceful_timeout=8.0, max_name=49)
SHUTDOWN_WINDOW = 10.0  # seconds between SIGTERM and SIGKILL on Cloud Run
MAX_CONCURRENCY = 1000  # Cloud Run's ceiling for containerConcurrency
MAX_TIMEOUT = 3600  # Cloud Run's ceiling for timeoutSeconds
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"})


def secret_name(spec: ServiceSpec) -> str:
    return spec.auth_secret or f"{spec.name}-auth-key"


def service(spec: ServiceSpec) -> dict[str, Any]:
    if spec.max_concurrency > MAX_CONCURRENCY:
        raise RenderError(
            f"--max-concurrency {spec.max_concurrency} is above Cloud Run's limit of {MAX_CONCURRENCY}"
        )
    if spec.drain_delay + spec.graceful_timeout >= SHUTDOWN_WINDOW:
        raise RenderError(
            f"--drain-delay {spec.drain_delay:g} plus --graceful-timeout {spec.graceful_timeout:g} must stay "
            f"under Cloud Run's {SHUTDOWN_WINDOW:g} s between SIGTERM and SIGKILL"
        )
    reserved = sorted(RESERVED_ENV & spec.env.keys())
    if reserved:
        raise RenderError(f"--env {reserved[0]} is reserved by Cloud Run")
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in spec.env.items()]
    if spec.auth_key:
        ref = {"secretKeyRef": {"name": secret_name(spec), "key": "latest"}}
        env.append({"name": f"{PREFIX}AUTH_KEY", "valueFrom": ref})
    timeout = (
        MAX_TIMEOUT if spec.invoke_timeout is None else min(MAX_TIMEOUT, math.ceil(spec.invoke_timeout) + 30)
    )
    probe_port = {"port": spec.port}
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": spec.name,
            "labels": {"managed-by": "serving", "serving-deployment-id": spec.deployment_id},
        },
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        "autoscaling.knative.dev/minScale": str(spec.replicas),
                        "autoscaling.knative.dev/maxScale": str(spec.max_replicas),
                    }
                },
                "spec": {
                    "containerConcurrency": spec.max_concurrency,
                    "timeoutSeconds": timeout,
                    "containers": [
                        {
                            "name": "serving",
                            "image": spec.image,
                            "ports": [{"name": "http1", "containerPort": spec.port}],
                            "env": env,
                            "resources": {"limits": {"cpu": spec.cpu, "memory": spec.memory}},
                            "startupProbe": {
                                "httpGet": {"path": READINESS_PATH, **probe_port},
                                "periodSeconds": 2,
                                "timeoutSeconds": 2,
                                "failureThreshold": 60,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": LIVENESS_PATH, **probe_port},
                                "periodSeconds": 10,
                                "timeoutSeconds": 2,
                                "failureThreshold": 3,
                            },
                        }
                    ],
                },
            },
            "traffic": [{"percent": 100, "latestRevision": True}],
        },
    }


def manifests(spec: ServiceSpec) -> dict[str, dict[str, Any]]:
    return {"service.yaml": service(spec)}
