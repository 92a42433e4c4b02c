"""The Docker engine for the docker-flavor tests: found through DOCKER_HOST, never skipped.

CI (`.ci/run`) starts a private `dockerd` and exports DOCKER_HOST; a developer does the
same (README, "Deploying to Docker"). No registry is reachable, so the base image is one
the engine already has: `SERVING_TEST_BASE_IMAGE` (default `serving-test-base:bookworm`),
built by `.ci/docker-base-image` when missing (about 75 s once; the engine keeps it).
A missing engine or base image FAILS the tests: a skip would hide that the flavor is
untested.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import docker
import docker.errors
import pytest

from serving.deploy.deployers.docker import LABEL
from serving.deploy.registry import Registry

BASE_IMAGE = os.environ.get("SERVING_TEST_BASE_IMAGE", "serving-test-base:bookworm")
NO_PYTHON_IMAGE = "serving-test-nopython:1"  # builds on it fail: it has no shell, no python
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "docker-base-image"


def engine() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(
            f"no Docker engine at DOCKER_HOST={os.environ.get('DOCKER_HOST', '(unset)')}: {exc}; "
            "start one as .ci/run does (README: Deploying to Docker)",
            pytrace=False,
        )
    return client


def ensure_base_image(client: docker.DockerClient) -> str:
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(BASE_IMAGE)
        return BASE_IMAGE
    done = subprocess.run([str(BUILD_SCRIPT), BASE_IMAGE], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"cannot build {BASE_IMAGE}: {done.stderr.strip()[-2000:]}", pytrace=False)
    return BASE_IMAGE


def ensure_no_python_image(client: docker.DockerClient) -> str:
    """An image holding a single text file: any RUN in a build on it fails."""
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(NO_PYTHON_IMAGE)
        return NO_PYTHON_IMAGE
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"nothing to run here\n"
        info = tarfile.TarInfo("README")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    repo, tag = NO_PYTHON_IMAGE.split(":")
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)
    return NO_PYTHON_IMAGE


def remove_deployments_of(client: docker.DockerClient, home: Path, extra_ids: set[str]) -> None:
    """Teardown: every container, image and volume labelled with a deployment of `home`."""
    ids = set(extra_ids)
    with contextlib.suppress(Exception):
        ids |= {d.id for d in Registry(home).list_deployments()}
    for dep_id in ids:
        selector = {"label": f"{LABEL}={dep_id}"}
        for container in client.containers.list(all=True, filters=selector):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        for image in client.images.list(filters=selector):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.images.remove(image.id, force=True)
        for volume in client.volumes.list(filters=selector):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                volume.remove(force=True)
