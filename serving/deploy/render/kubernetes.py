"""Kubernetes manifests for a deployment: Secret, Deployment, Service, PodDisruptionBudget
and HorizontalPodAutoscaler, as plain dicts (`kubectl apply -f DIR` takes them as YAML).

Shutdown follows the daemon's drain (docs/architecture.md, Shutdown): a preStop wait of
the drain delay keeps the pod serving while the endpoints controller forgets it, SIGTERM
then makes `/readyz` answer 503 for another drain delay and stops gracefully, and the
grace period covers all of it (`ServiceSpec.termination_grace`).
"""

from __future__ import annotations

from typing import Any

from serving.deploy.render.spec import (
    CONTAINER_HOME,
    LIVENESS_PATH,
    METRICS_PATH,
    READINESS_PATH,
    Defaults,
    ServiceSpec,
)
from serving.settings import PREFIX

Manifest = dict[str, Any]
SERVICE_PORT = 80
CPU_TARGET = 70  # percent of the CPU request the autoscaler aims for
DEFAULTS = Defaults(cpu="500m", memory="512Mi", drain_delay=5.0, graceful_timeout=30.0)


def _meta(spec: ServiceSpec, name: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name or spec.name, "labels": dict(spec.labels), **extra}
    if spec.namespace:
        meta["namespace"] = spec.namespace
    return meta


def _selector(spec: ServiceSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "serving", "app.kubernetes.io/instance": spec.name}


def scrape_annotations(spec: ServiceSpec) -> dict[str, str]:
    """The `prometheus.io/*` convention the common Prometheus scrape configs follow."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(spec.port),
        "prometheus.io/path": METRICS_PATH,
    }


def secret(spec: ServiceSpec) -> Manifest | None:
    if not spec.auth_key:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(spec, spec.secret_name),
        "type": "Opaque",
        "stringData": {"auth-key": spec.auth_key},
    }


def _env(spec: ServiceSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in spec.env.items()]
    if spec.auth_key:
        ref = {"secretKeyRef": {"name": spec.secret_name, "key": "auth-key"}}
        env.append({"name": f"{PREFIX}AUTH_KEY", "valueFrom": ref})
    return env


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def deployment(spec: ServiceSpec) -> Manifest:
    container: dict[str, Any] = {
        "name": "serving",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "env": _env(spec),
        # Loading the pipeline can take a while; until then only the startup probe runs.
        "startupProbe": _probe(READINESS_PATH, period=2, failures=60),
        "readinessProbe": _probe(READINESS_PATH, period=5, failures=2),
        "livenessProbe": _probe(LIVENESS_PATH, period=10, failures=3),
        "resources": {
            "requests": {"cpu": spec.cpu, "memory": spec.memory},
            "limits": {"memory": spec.memory},
        },
        "volumeMounts": [{"name": "serving-home", "mountPath": CONTAINER_HOME}],
    }
    if spec.drain_delay > 0:
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", f"{spec.drain_delay:g}"]}}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": _selector(spec)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": dict(spec.labels), "annotations": scrape_annotations(spec)},
                "spec": {
                    "terminationGracePeriodSeconds": spec.termination_grace,
                    "containers": [container],
                    "volumes": [{"name": "serving-home", "emptyDir": {}}],
                },
            },
        },
    }


def service(spec: ServiceSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, annotations=scrape_annotations(spec)),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(spec),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(spec: ServiceSpec) -> Manifest:
    """At most one pod evicted at a time (a node drain never takes the whole service);
    `maxUnavailable` rather than `minAvailable`, which would block drains of one replica."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(spec),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(spec)}},
    }


def autoscaler(spec: ServiceSpec) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(spec),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": spec.replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": CPU_TARGET},
                    },
                }
            ],
        },
    }


def manifests(spec: ServiceSpec) -> dict[str, Manifest]:
    """File name -> manifest, in the order `kubectl apply` should create them."""
    files: dict[str, Manifest | None] = {
        "secret.yaml": secret(spec),
        "deployment.yaml": deployment(spec),
        "service.yaml": service(spec),
        "pdb.yaml": disruption_budget(spec),
        "hpa.yaml": autoscaler(spec),
    }
    return {name: m for name, m in files.items() if m is not None}
