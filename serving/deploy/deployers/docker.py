"""The `docker` flavor: a snapshot as an image, run as a container by a Docker engine.

Each deploy builds `serving-<name>:<snapshot>` (`render.spec.image_name`) from the base image (default
`python:3.11-slim`): the wheels of this project and its dependencies, built on the host
(`wheels.py`) and installed with `--no-index`, then the snapshot's frozen code in
`/app/code`. The container runs detached with `init` (so SIGTERM reaches the daemon), an
`on-failure` restart policy, labels naming the deployment, and `SERVING_HOME` on a named
volume `serving-home-<deployment id>`, so captured runs survive a redeploy. Before it
starts, a one-deployment registry is copied into that volume: the daemon reads its
snapshot, names and ids from it exactly as a local deployment does.

`--network host` runs on the host's network, the daemon listening on 127.0.0.1:<port>;
otherwise the container listens on 8000 and the engine publishes it on
127.0.0.1:<port>. Status is observed: the container's state from the engine, then
`/readyz`. An `--update` starts the new container beside the old one (on another port:
with the host network two cannot share one), waits until it is ready, lets the registry
switch the URL, then retires the old one (`replaces_live`).

Everything goes through the `docker` SDK (the engine's API), never parsed CLI output.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import re
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import msgspec
from docker.models.containers import Container

from serving.deploy.deployers.base import DeployError, Progress
from serving.deploy.deployers.local import free_port, port_free
from serving.deploy.deployers.wheels import build_wheels
from serving.deploy.registry import Deployment, DeploymentStatus, Registry, Snapshot
from serving.deploy.render.spec import image_name

DEFAULT_BASE_IMAGE = "python:3.11-slim"
# A machine's own default for --base-image (a mirror, or an image built offline).
BASE_IMAGE_ENV = "SERVING_DOCKER_BASE_IMAGE"
LABEL = "dev.serving.deployment"  # value: the deployment id, on images, containers, volumes
HOME_IN_CONTAINER = "/var/lib/serving"
CODE_IN_CONTAINER = "/app/code"
CONTAINER_PORT = 8000  # where the daemon listens when the engine publishes the port
HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 60  # seconds: the daemon's default graceful timeout (30 s) plus its capture flush
SWITCH_GRACE = 1.0  # seconds the old container still serves after the URL switched
RESTART_POLICY = {"Name": "on-failure", "MaximumRetryCount": 3}
LOG_LINES_IN_ERRORS = 3

DOCKERFILE = """\
FROM {base}
COPY wheels /tmp/serving-wheels
RUN python3 -m pip install --no-index --no-cache-dir --disable-pip-version-check \\
        --find-links /tmp/serving-wheels serving && rm -rf /tmp/serving-wheels
COPY code {code}
WORKDIR {code}
ENV PYTHONUNBUFFERED=1
CMD ["python3", "-P", "-m", "serving"]
"""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:500]


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (DOCKER_HOST unset)"


def volume_name(deployment: Deployment) -> str:
    return f"serving-home-{deployment.id}"


def container_path(snapshot: Snapshot) -> Snapshot:
    """The snapshot as the container sees it: its code under /app/code."""
    code = Path(snapshot.workdir)
    source = snapshot.source
    path_part, sep, attr = source.rpartition(":")
    if sep and Path(path_part).is_absolute():
        source = f"{CODE_IN_CONTAINER}/{Path(path_part).relative_to(code).as_posix()}:{attr}"
    return msgspec.structs.replace(snapshot, source=source, workdir=CODE_IN_CONTAINER)


def run_arguments(
    deployment: Deployment, image: str, *, port: int, network: str | None, env: dict[str, str]
) -> dict[str, Any]:
    """The keywords of `containers.create` for one deployment (pure, so unit-testable)."""
    args: dict[str, Any] = {
        "image": image,
        "name": f"serving-{deployment.id[:8]}-{secrets.token_hex(3)}",
        "detach": True,
        "init": True,
        "restart_policy": dict(RESTART_POLICY),
        "labels": {LABEL: deployment.id, f"{LABEL}.name": deployment.name},
        "volumes": {volume_name(deployment): {"bind": HOME_IN_CONTAINER, "mode": "rw"}},
        "stop_signal": "SIGTERM",
    }
    env = dict(env)
    if network == "host":
        args["network_mode"] = "host"
        env.update(SERVING_HOST=HOST, SERVING_PORT=str(port))
    else:
        env.update(SERVING_HOST="0.0.0.0", SERVING_PORT=str(CONTAINER_PORT))
        args["ports"] = {f"{CONTAINER_PORT}/tcp": (HOST, port)}
        if network is not None:
            args["network"] = network
    args["environment"] = env
    return args


def _registry_archive(deployment: Deployment, snapshot: Snapshot) -> bytes:
    """A tar of a registry holding only this deployment and its snapshot (container paths)."""
    with tempfile.TemporaryDirectory(prefix="serving-registry-") as tmp:
        registry = Registry(Path(tmp))
        registry.put_snapshot(container_path(snapshot))
        registry.put_deployment(msgspec.structs.replace(deployment, flavor_data={}))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in ("registry.db", "registry.db-wal", "registry.db-shm"):
                if (Path(tmp) / name).exists():
                    tar.add(Path(tmp) / name, arcname=name)
        return buf.getvalue()


def _container_env(deployment: Deployment) -> dict[str, str]:
    env = {
        "SERVING_DEPLOYMENT": deployment.id,
        "SERVING_HOME": HOME_IN_CONTAINER,
        "SERVING_LOG_FORMAT": "json",
    }
    if deployment.auth_key:
        env["SERVING_AUTH_KEY"] = deployment.auth_key
    for key in ("SERVING_LOG_LEVEL", "SERVING_SERVER", "SERVING_RUNTIME"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


class DockerDeployer:
    flavor = "docker"
    replaces_live = True  # an --update starts the new container before the old one stops

    def __init__(self, home: Path) -> None:
        self.home = home
        self._docker: docker.DockerClient | None = None

    def client(self) -> docker.DockerClient:
        """The engine at DOCKER_HOST; raises DeployError (one line naming it) if unreachable."""
        if self._docker is None:
            try:
                engine = docker.from_env(timeout=STOP_TIMEOUT + 30)
                engine.ping()
            except (docker.errors.DockerException, OSError) as exc:
                raise DeployError(
                    f"cannot reach the Docker engine at DOCKER_HOST={docker_host()}: {_one_line(exc)}"
                ) from None
            self._docker = engine
        return self._docker

    # -- build -------------------------------------------------------------------------

    def _ensure_base(self, base: str, progress: Progress) -> None:
        engine = self.client()
        try:
            engine.images.get(base)
            return
        except docker.errors.ImageNotFound:
            pass
        progress(f"pulling the base image {base}")
        try:
            engine.images.pull(base)
        except docker.errors.APIError as exc:
            raise DeployError(
                f"base image {base!r} is not in the engine and cannot be pulled: "
                f"{_one_line(exc.explanation or exc)}"
            ) from None

    def _python_of(self, base: str) -> str:
        """The Python version in the base image (the wheels must fit it). An image with no
        runnable python3 gets the host's version: its build then fails and says why."""
        host = platform.python_version()
        probe = ["python3", "-c", "import platform; print(platform.python_version())"]
        try:
            container = self.client().containers.create(base, probe, network_mode="none")
        except docker.errors.DockerException:
            return host
        try:
            container.start()
            if container.wait(timeout=READY_TIMEOUT).get("StatusCode") != 0:
                return host
            version = container.logs(stderr=False).decode().strip()
        except docker.errors.DockerException:
            return host
        finally:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)
        if not re.fullmatch(r"\d+\.\d+\.\d+\S*", version):
            return host
        if version.split(".")[:2] != host.split(".")[:2]:
            raise DeployError(
                f"base image {base!r} has Python {version}, but the wheels are built by this Python"
                f" {host}; use a base image with Python {'.'.join(host.split('.')[:2])}"
            )
        return version

    def build(self, deployment: Deployment, snapshot: Snapshot, base: str, progress: Progress) -> str:
        """Build the snapshot's image; returns its tag. Raises DeployError with the build's
        last lines shown through `progress`."""
        code = Path(snapshot.workdir)
        if code.name != "code" or code.parent.name != snapshot.id or not code.is_dir():
            raise DeployError(
                f"snapshot {snapshot.name!r} runs an installed module ({snapshot.source}); the docker"
                " flavor needs frozen code: deploy a file path or a module under the current folder"
            )
        self._ensure_base(base, progress)
        wheels = build_wheels(progress, self._python_of(base))
        tag = image_name(deployment, snapshot)  # what `deployment render` points at
        with tempfile.TemporaryDirectory(prefix="serving-image-") as tmp:
            ctx = Path(tmp)
            (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base, code=CODE_IN_CONTAINER))
            shutil.copytree(wheels, ctx / "wheels", ignore=shutil.ignore_patterns(".complete"))
            shutil.copytree(code, ctx / "code", symlinks=False)
            progress(f"building image {tag} on {base}")
            try:
                self.client().images.build(
                    path=str(ctx),
                    tag=tag,
                    rm=True,
                    forcerm=True,
                    labels={LABEL: deployment.id, f"{LABEL}.snapshot": snapshot.id},
                )
            except docker.errors.BuildError as exc:
                lines = _build_lines(exc.build_log)
                for line in lines[-10:]:
                    progress(f"build: {line}")
                raise DeployError(
                    f"building image {tag} failed: {_one_line(exc.msg)}"
                    + (f" (last build line: {lines[-1]})" if lines and lines[-1] not in exc.msg else "")
                ) from None
            except docker.errors.APIError as exc:
                raise DeployError(f"building image {tag} failed: {_one_line(exc.explanation)}") from None
        return tag

    # -- run ---------------------------------------------------------------------------

    def provision(
        self, deployment: Deployment, snapshot: Snapshot, *, port: int | None, progress: Progress
    ) -> Deployment:
        data = deployment.flavor_data
        base = data.get("base_image") or os.environ.get(BASE_IMAGE_ENV) or DEFAULT_BASE_IMAGE
        network = data.get("network")
        engine = self.client()
        tag = self.build(deployment, snapshot, base, progress)
        if port is not None:
            if not port_free(port):
                raise DeployError(f"port {port} is already in use on {HOST}; pick another or omit --port")
        else:
            port = free_port()
        args = run_arguments(deployment, tag, port=port, network=network, env=_container_env(deployment))
        volume = volume_name(deployment)
        try:
            engine.volumes.create(volume, labels={LABEL: deployment.id})
        except docker.errors.APIError as exc:
            raise DeployError(f"cannot create volume {volume}: {_one_line(exc.explanation)}") from None
        try:
            container = engine.containers.create(**args)
        except docker.errors.APIError as exc:
            raise DeployError(f"cannot create the container: {_one_line(exc.explanation)}") from None
        url = f"http://{HOST}:{port}"
        deployment.url = url
        deployment.flavor_data = {
            "base_image": data.get("base_image"),
            "network": network,
            "image": tag,
            "volume": volume,
            "container": container.id,
            "container_name": container.name,
            "port": port,
            "started_at": time.time(),
        }
        try:
            if not container.put_archive(HOME_IN_CONTAINER, _registry_archive(deployment, snapshot)):
                raise DeployError(f"cannot copy the registry into volume {volume}")
            progress(f"starting container {container.name} at {url}")
            container.start()
            self._wait_ready(container, url, progress)
        except (DeployError, docker.errors.APIError) as exc:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)  # nothing of a failed start may linger
            deployment.flavor_data["container"] = None
            if isinstance(exc, DeployError):
                raise
            raise DeployError(f"cannot start the container: {_one_line(exc.explanation)}") from None
        deployment.status = DeploymentStatus.RUNNING
        return deployment

    def _wait_ready(self, container: Container, url: str, progress: Progress) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        started = time.monotonic()
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                container.reload()
                state = container.attrs["State"]
                if state["Status"] in ("exited", "dead") or state.get("Restarting"):
                    raise DeployError(
                        f"the container exited with status {state.get('ExitCode')} while starting: "
                        f"{_last_lines(container, 1)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{url}/readyz").status_code == 200:
                        return
                progress(f"waiting for {url}/readyz ({time.monotonic() - started:.1f}s)")
                time.sleep(0.1)
        raise DeployError(
            f"the container was not ready within {READY_TIMEOUT:g}s: {_last_lines(container, 1)}"
        )

    def retire(self, previous: Deployment, *, progress: Progress) -> None:
        """Stop what `previous` ran once its replacement serves and the registry points
        at it; clients that looked the old URL up just before the switch still get served
        for SWITCH_GRACE seconds, then the daemon drains in-flight requests on SIGTERM."""
        if not previous.flavor_data.get("container"):
            return
        progress(f"retiring the previous container in {SWITCH_GRACE:g}s")
        time.sleep(SWITCH_GRACE)
        self.deprovision(previous, progress=progress)

    def deprovision(self, deployment: Deployment, *, progress: Progress) -> Deployment:
        cid = deployment.flavor_data.get("container")
        if cid:
            try:
                container = self.client().containers.get(cid)
            except docker.errors.NotFound:
                container = None
            if container is not None:
                progress(f"stopping container {container.name} (SIGTERM, up to {STOP_TIMEOUT}s)")
                try:
                    container.stop(timeout=STOP_TIMEOUT)
                    container.remove(force=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    reason = _one_line(exc.explanation)
                    raise DeployError(f"cannot stop container {cid[:12]}: {reason}") from None
        deployment.status = DeploymentStatus.ABSENT
        deployment.flavor_data = {**deployment.flavor_data, "container": None, "error": None}
        return deployment

    def forget(self, deployment: Deployment, *, progress: Progress) -> None:
        """`delete`: the deployment's images and its home volume (with its captured runs)."""
        engine = self.client()
        selector: dict[str, str | list[str] | bool] = {"label": f"{LABEL}={deployment.id}"}
        for container in engine.containers.list(all=True, filters=selector):
            progress(f"removing container {container.name}")
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        for image in engine.images.list(filters=selector):
            progress(f"removing image {', '.join(image.tags) or image.short_id}")
            with contextlib.suppress(docker.errors.NotFound):
                engine.images.remove(str(image.id), force=True)
        for volume in engine.volumes.list(filters=selector):
            progress(f"removing volume {volume.name}")
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)

    # -- observe -----------------------------------------------------------------------

    def status(self, deployment: Deployment) -> str:
        """The engine's view, then /readyz; records why in `flavor_data["error"]`."""
        cid = deployment.flavor_data.get("container")
        if not cid:
            return DeploymentStatus.ABSENT
        try:
            container = self.client().containers.get(cid)
            state = container.attrs["State"]
        except DeployError:
            return DeploymentStatus.UNKNOWN
        except docker.errors.NotFound:
            deployment.flavor_data["error"] = f"container {cid[:12]} no longer exists"
            return DeploymentStatus.ERROR
        except docker.errors.APIError:
            return DeploymentStatus.UNKNOWN
        if state["Status"] == "running" and not state.get("Restarting"):
            deployment.flavor_data["error"] = None
            try:
                r = httpx.get(f"{deployment.url}/readyz", timeout=2.0)
            except httpx.HTTPError:
                return DeploymentStatus.PENDING
            return DeploymentStatus.RUNNING if r.status_code == 200 else DeploymentStatus.PENDING
        if state["Status"] == "created":
            return DeploymentStatus.PENDING
        deployment.flavor_data["error"] = (
            f"container {state['Status']} with exit code {state.get('ExitCode')}"
            f" (restarts: {container.attrs.get('RestartCount', 0)}): "
            f"{_last_lines(container, LOG_LINES_IN_ERRORS)}"
        )
        return DeploymentStatus.ERROR

    def logs(self, deployment: Deployment, *, tail: int | None, follow: bool) -> Iterator[str]:
        cid = deployment.flavor_data.get("container")
        if not cid:
            raise DeployError(f"deployment {deployment.name!r} has no container ({deployment.status})")
        try:
            container = self.client().containers.get(cid)
        except docker.errors.NotFound:
            raise DeployError(f"the container of {deployment.name!r} ({cid[:12]}) no longer exists") from None
        stream = container.logs(stream=True, follow=follow, tail="all" if tail is None else tail)
        pending = b""
        for chunk in stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")


def _build_lines(build_log: Any) -> list[str]:
    lines: list[str] = []
    for entry in build_log or []:
        text = entry.get("stream") or entry.get("error") or ""
        lines += [ln.rstrip() for ln in str(text).splitlines() if ln.strip()]
    return lines


def _last_lines(container: Container, n: int) -> str:
    try:
        raw = container.logs(tail=n).decode(errors="replace")
    except docker.errors.APIError:
        return "(no logs)"
    lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
    return " | ".join(lines)[:1000] if lines else "(empty log)"
