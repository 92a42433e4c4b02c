"""One typed description of a deployment as a container service, and its image name.

Every render target (Kubernetes, Cloud Run, App Runner) and the Kubernetes deployer
build from a `ServiceSpec`, so the port, the `SERVING_*` environment, the probes and the
drain timings are decided once: `describe()` checks them with the daemon's own
`Settings` class, so a rendered manifest can never carry a value the daemon would refuse
at start (a crash loop in a cluster is a much slower way to find a typo).
"""

from __future__ import annotations

import math
import re
from typing import Annotated

import msgspec

from serving.deploy.registry import Deployment, Snapshot
from serving.settings import PREFIX, Settings, SettingsError, load_settings

# The routes the daemon serves for the platform (serving/app.py); tests check they exist.
LIVENESS_PATH = "/livez"
READINESS_PATH = "/readyz"
METRICS_PATH = "/metrics"

# Where the container keeps SERVING_HOME (capture store, registry): a writable volume.
CONTAINER_HOME = "/var/lib/serving"
CONTAINER_PORT = 8000

# Set by describe() from the options; a user's --env may not override them.
MANAGED = frozenset(
    f"{PREFIX}{n}"
    for n in (
        "HOST",
        "PORT",
        "HOME",
        "AUTH_KEY",
        "JOB_STORE",
        "DRAIN_DELAY",
        "GRACEFUL_TIMEOUT",
        "MAX_CONCURRENCY",
        "DEPLOYMENT_NAME",
    )
)

# Time the daemon may spend after its graceful stop: flushing captured runs.
FLUSH_MARGIN = 5


class RenderError(ValueError):
    """The options cannot make a sound service; the message names the option, in one line."""


class RenderOptions(msgspec.Struct, kw_only=True, frozen=True):
    """What a user chooses when rendering (the `serving deployment render` flags)."""

    image: str | None = None  # default: image_name(deployment, snapshot)
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = CONTAINER_PORT
    replicas: Annotated[int, msgspec.Meta(ge=1)] = 1
    max_replicas: int | None = None  # the autoscaler's ceiling; default: replicas
    job_store: str | None = None  # SERVING_JOB_STORE, required beyond one replica
    namespace: str | None = None
    cpu: str | None = None  # in the target's own units; default: Defaults.cpu
    memory: str | None = None
    drain_delay: Annotated[float, msgspec.Meta(ge=0)] | None = None
    graceful_timeout: Annotated[float, msgspec.Meta(ge=0)] | None = None
    max_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 64
    env: dict[str, str] = {}  # further SERVING_* settings (or any other variable)
    auth_secret: str | None = None  # a cloud secret reference for the auth key
    access_role_arn: str | None = None  # App Runner: role that may pull from private ECR
    auto_scaling_arn: str | None = None  # App Runner: its auto scaling configuration


class Defaults(msgspec.Struct, kw_only=True, frozen=True):
    """A target's defaults for what RenderOptions leaves unset: platforms differ in units
    (`500m` vs `1 vCPU`) and in how long they wait for a stopping container."""

    cpu: str
    memory: str
    drain_delay: float
    graceful_timeout: float
    max_name: int = 55  # longest service name the platform accepts (less the Secret's suffix)


class ServiceSpec(msgspec.Struct, kw_only=True, frozen=True):
    """A deployment as any container platform sees it."""

    name: str  # DNS-1123 label: usable as a Kubernetes / Cloud Run / App Runner name
    deployment_id: str
    deployment_name: str
    snapshot_id: str
    pipeline_name: str
    image: str
    port: int
    replicas: int
    max_replicas: int
    namespace: str | None
    cpu: str
    memory: str
    env: dict[str, str]  # plain variables, secrets excluded
    auth_key: str | None  # the bearer token: goes to a secret, never into env
    auth_secret: str | None
    access_role_arn: str | None
    auto_scaling_arn: str | None
    job_store: str | None
    drain_delay: float
    graceful_timeout: float
    max_concurrency: int
    invoke_timeout: float | None

    @property
    def termination_grace(self) -> int:
        """Seconds a platform must wait after asking the container to stop: the preStop
        wait (one drain delay, while endpoints forget the pod), the daemon's own drain
        delay after SIGTERM, its graceful timeout, and a margin for the capture flush."""
        return math.ceil(2 * self.drain_delay + self.graceful_timeout) + FLUSH_MARGIN

    @property
    def labels(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "serving",
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/managed-by": "serving",
            "serving/deployment-id": self.deployment_id,
        }

    @property
    def secret_name(self) -> str:
        return f"{self.name}-auth"


_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


def dns_name(name: str, max_len: int = 55) -> str:
    """`name` as a DNS-1123 label (lowercase letters, digits, '-'; at most 63; starts with
    a letter): what Kubernetes, Cloud Run and App Runner all accept as a service name."""
    label = _DNS_LABEL.sub("-", name.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)
    if label and not label[0].isalpha():
        label = f"s-{label}"
    label = label[:max_len].rstrip("-")  # 55: room for the "-auth" suffix of the Secret
    if len(label) < 4:  # App Runner's minimum
        label = f"serving-{label}".rstrip("-")
    return label


def image_name(deployment: Deployment, snapshot: Snapshot) -> str:
    """The image a deployment's snapshot runs in: `serving-<name>:<snapshot>`.

    The one place this name is made; the docker flavor builds images under it, so a
    rendered manifest points at what `--flavor docker` built (after a `docker tag` /
    `docker push` to a registry the cluster can pull from, passed as `--image`)."""
    repo = "serving-" + dns_name(deployment.name).removeprefix("serving-")
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", snapshot.name)[:128]
    return f"{repo}:{tag}"


def describe(
    deployment: Deployment, snapshot: Snapshot, options: RenderOptions, defaults: Defaults
) -> ServiceSpec:
    """The container view of `deployment`; raises RenderError naming a bad option."""
    drain_delay = defaults.drain_delay if options.drain_delay is None else options.drain_delay
    graceful = defaults.graceful_timeout if options.graceful_timeout is None else options.graceful_timeout
    max_replicas = options.max_replicas if options.max_replicas is not None else options.replicas
    if max_replicas < options.replicas:
        raise RenderError(f"--max-replicas {max_replicas} is below --replicas {options.replicas}")
    if max_replicas > 1 and not options.job_store:
        raise RenderError(
            f"{max_replicas} replicas need a shared job store: pass --job-store redis://HOST:6379/0 "
            "(jobs accepted by one replica must be readable, streamable and cancelable from any)"
        )
    fields = {f.name for f in msgspec.structs.fields(Settings)}
    for key in options.env:
        if key.startswith(PREFIX) and key.removeprefix(PREFIX).lower() not in fields:
            raise RenderError(f"--env {key}: the daemon has no such setting (see README, Configuration)")
        if key in MANAGED:
            flag = "--" + key.removeprefix(PREFIX).lower().replace("_", "-")
            raise RenderError(f"--env {key} is set by the renderer; use {flag} instead")
    env = {
        f"{PREFIX}HOST": "0.0.0.0",
        f"{PREFIX}PORT": str(options.port),
        f"{PREFIX}HOME": CONTAINER_HOME,
        f"{PREFIX}LOG_FORMAT": "json",
        f"{PREFIX}DEPLOYMENT_NAME": deployment.name,
        f"{PREFIX}DRAIN_DELAY": f"{drain_delay:g}",
        f"{PREFIX}GRACEFUL_TIMEOUT": f"{graceful:g}",
        f"{PREFIX}MAX_CONCURRENCY": str(options.max_concurrency),
        **options.env,
    }
    if options.job_store:
        env[f"{PREFIX}JOB_STORE"] = options.job_store
    settings = _check(env, deployment.auth_key)
    return ServiceSpec(
        name=dns_name(deployment.name, defaults.max_name),
        deployment_id=deployment.id,
        deployment_name=deployment.name,
        snapshot_id=snapshot.id,
        pipeline_name=snapshot.pipeline_name,
        image=options.image or image_name(deployment, snapshot),
        port=options.port,
        replicas=options.replicas,
        max_replicas=max_replicas,
        namespace=options.namespace,
        cpu=options.cpu or defaults.cpu,
        memory=options.memory or defaults.memory,
        env=env,
        auth_key=deployment.auth_key,
        auth_secret=options.auth_secret,
        access_role_arn=options.access_role_arn,
        auto_scaling_arn=options.auto_scaling_arn,
        job_store=options.job_store,
        drain_delay=drain_delay,
        graceful_timeout=graceful,
        max_concurrency=options.max_concurrency,
        invoke_timeout=settings.invoke_timeout,
    )


def _check(env: dict[str, str], auth_key: str | None) -> Settings:
    """The daemon's own parse of the environment it will get."""
    full = dict(env)
    if auth_key:
        full[f"{PREFIX}AUTH_KEY"] = auth_key
    try:
        return load_settings(full)
    except SettingsError as exc:
        raise RenderError(str(exc)) from None
