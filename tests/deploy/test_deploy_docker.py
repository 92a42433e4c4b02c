"""`--flavor docker` against a real Docker engine (DOCKER_HOST) and real daemons in
containers on the host network: deploy, observe, invoke, logs, update without failed
requests, exited containers, deprovision, delete, and the one-line errors."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest
from deploy_helpers import SHOUT, Home, failure, ok, outputs, table, url_in, write_answer
from docker_helpers import engine, ensure_base_image, ensure_no_python_image, remove_deployments_of
from polling import wait_until

from serving.deploy.deployers.docker import (
    CONTAINER_PORT,
    HOME_IN_CONTAINER,
    LABEL,
    RESTART_POLICY,
    run_arguments,
)
from serving.deploy.registry import Deployment

GUARD = 120.0  # hang guard for builds and container starts on a loaded machine


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return engine()


@pytest.fixture(scope="module")
def base_image(client: docker.DockerClient) -> str:
    return ensure_base_image(client)


@pytest.fixture
def dhome(tmp_path: Path, client: docker.DockerClient) -> Iterator[Home]:
    h = Home(tmp_path / "home", tmp_path / "work")
    try:
        yield h
    finally:
        remove_deployments_of(client, h.path, set())


def deploy(home: Home, source: str, name: str, base_image: str, *extra: str) -> str:
    return ok(
        home.cli(
            "pipeline", "deploy", source, "--name", name, "--flavor", "docker",
            "--base-image", base_image, "--network", "host", *extra,
        )
    )  # fmt: skip


def container_of(client: docker.DockerClient, dep: Deployment) -> Any:
    return client.containers.get(dep.flavor_data["container"])


def has_run(container: Any, run_id: str) -> bool:
    """The daemon's store (on the volume) holds `run_id`: asked by id, because the client
    loop through an update adds more runs than any page holds."""
    code, out = container.exec_run(["serving", "runs", "show", run_id])
    return code == 0 and run_id in out.decode()


def runs_in(container: Any) -> list[str]:
    """Run ids the daemon captured in its SERVING_HOME (the volume), read inside it."""
    code, out = container.exec_run(["serving", "runs", "list", "--output", "json", "--limit", "100"])
    assert code == 0, out.decode()
    return [r["run_id"] for r in json.loads(out)]


def test_docker_deploy_observe_invoke_logs_update_delete(
    dhome: Home, client: docker.DockerClient, base_image: str
) -> None:
    source = f"{write_answer(dhome.cwd / 'answer.py', 'v1')}:answer"
    deploy(dhome, source, "box", base_image, "--auth-key", "s3cret")
    dep = dhome.deployment("box")
    assert dep.status == "RUNNING" and dep.flavor == "docker"

    # the container: init, restart policy, labels, settings, auth key, home on a volume
    container = container_of(client, dep)
    host_config = container.attrs["HostConfig"]
    assert host_config["Init"] is True
    assert host_config["RestartPolicy"] == RESTART_POLICY
    assert host_config["NetworkMode"] == "host"
    assert container.labels[LABEL] == dep.id
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["SERVING_DEPLOYMENT"] == dep.id and env["SERVING_HOME"] == HOME_IN_CONTAINER
    assert env["SERVING_AUTH_KEY"] == "s3cret" and env["SERVING_PORT"] == str(dep.flavor_data["port"])
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts[HOME_IN_CONTAINER]["Type"] == "volume"
    assert mounts[HOME_IN_CONTAINER]["Name"] == dep.flavor_data["volume"]
    image = client.images.get(dep.flavor_data["image"])
    assert image.labels[LABEL] == dep.id and dep.flavor_data["image"].startswith("serving-box:")

    # list / describe / invoke: the daemon knows its deployment and snapshot ids
    row = table(ok(dhome.cli("deployment", "list")))["box"]
    assert row[1] == dep.url and row[2] == "RUNNING"
    described = ok(dhome.cli("deployment", "describe", "box"))
    assert "docker" in described and dep.flavor_data["container_name"] in described
    assert outputs(ok(dhome.cli("deployment", "invoke", "box", "--question=a"))) == {"answer": "v1:a"}
    info = httpx.get(f"{dep.url}/info", headers={"Authorization": "Bearer s3cret"}).json()
    assert info["deployment"]["id"] == dep.id
    assert info["deployment"]["snapshot_id"] == dep.snapshot_id
    assert httpx.post(f"{dep.url}/invoke", json={"parameters": {}}).status_code == 401
    first_run = wait_until(lambda: runs_in(container), "the first run to be captured", timeout=GUARD)[0]

    # logs: the container's stream, --tail and -f
    tail = ok(dhome.cli("deployment", "logs", "box", "--tail", "2")).splitlines()
    assert len(tail) == 2 and all(json.loads(line)["event"] for line in tail)
    follower = dhome.popen("deployment", "logs", "box", "-f", "--tail", "0")
    followed: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [followed.put(ln) for ln in follower.stdout or []], daemon=True).start()

    def logged_live_request() -> bool:
        # the follower attaches in its own time: ask until a request reaches it
        httpx.get(f"{dep.url}/livez")
        return not followed.empty()

    try:
        wait_until(logged_live_request, "logs -f to print a request", timeout=GUARD, interval=0.2)
        assert json.loads(followed.get())["path"] == "/livez"
    finally:
        follower.kill()
        follower.wait()

    # --update while a client loop runs: no failed request, then the new code answers
    failures: list[str] = []
    answers: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            url = dhome.deployment("box").url  # as any client would: look it up, then call
            try:
                r = httpx.post(
                    f"{url}/invoke",
                    json={"parameters": {"question": "q"}},
                    headers={"Authorization": "Bearer s3cret"},
                    timeout=30,
                )
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    answers.append(r.json()["outputs"]["answer"])
            except httpx.HTTPError as exc:
                failures.append(f"{url}: {exc!r}")

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        wait_until(lambda: len(answers) >= 3, "the client loop to get answers", timeout=GUARD)
        write_answer(dhome.cwd / "answer.py", "v2")
        ok(dhome.cli("pipeline", "deploy", source, "--name", "box", "--flavor", "docker", "--update"))
        count = len(answers)
        wait_until(lambda: len(answers) >= count + 3, "answers after the update", timeout=GUARD)
    finally:
        stop.set()
        worker.join()
    assert failures == []
    assert answers[0] == "v1:q" and answers[-1] == "v2:q"
    new = dhome.deployment("box")
    assert new.url != dep.url and new.status == "RUNNING" and new.id == dep.id
    assert new.flavor_data["network"] == "host"  # kept from the first deploy
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(dep.flavor_data["container"])  # the old one is gone
    # captured runs survived: the new container sees the old one's runs on the volume
    assert has_run(container_of(client, new), first_run)

    # an exited container is ERROR with its exit code and last log lines
    container_of(client, new).kill()
    wait_until(lambda: container_of(client, new).status == "exited", "the container to exit", timeout=GUARD)
    refreshed = dhome.cli("deployment", "refresh", "box")
    assert refreshed.returncode == 1 and "ERROR" in refreshed.stdout
    described = ok(dhome.cli("deployment", "describe", "box"))
    assert "exit code 137" in described and '"event"' in described

    # deprovision then delete: container, images and the volume are gone
    ok(dhome.cli("deployment", "deprovision", "box"))
    assert dhome.deployment("box").status == "ABSENT"
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(new.flavor_data["container"])
    assert client.images.list(filters={"label": f"{LABEL}={dep.id}"})  # kept until delete
    ok(dhome.cli("deployment", "delete", "box"))
    assert dhome.registry.find_deployment("box") is None
    assert client.images.list(filters={"label": f"{LABEL}={dep.id}"}) == []
    assert client.volumes.list(filters={"label": f"{LABEL}={dep.id}"}) == []


def test_sdk_deploy_with_docker_flavor(dhome: Home, client: docker.DockerClient, base_image: str) -> None:
    import serving
    from serving.deploy.sdk import Client

    sdk = Client(dhome.path)
    dep = sdk.deploy(SHOUT, "sdk-box", flavor="docker", base_image=base_image, network="host")
    assert dep.status == "RUNNING"
    assert dep.invoke(word="hi")["outputs"] == {"loud": "HI!"}
    assert container_of(client, dep.record).labels[LABEL] == dep.id
    assert serving.Client(dhome.path).get_deployment("sdk-box").record.flavor == "docker"
    dep.delete()
    assert client.containers.list(all=True, filters={"label": f"{LABEL}={dep.id}"}) == []


def test_engine_unreachable_is_one_line_naming_docker_host(dhome: Home, tmp_path: Path) -> None:
    env_host = f"unix://{tmp_path}/no-engine.sock"
    result = _cli_with(dhome, {"DOCKER_HOST": env_host}, "pipeline", "deploy", SHOUT, "--name", "x",
                       "--flavor", "docker")  # fmt: skip
    error = failure(result, 1)
    assert f"DOCKER_HOST={env_host}" in error
    assert dhome.registry.find_deployment("x") is None


def test_base_image_not_local_nor_pullable_names_it(dhome: Home, client: docker.DockerClient) -> None:
    result = dhome.cli(
        "pipeline", "deploy", SHOUT, "--name", "x", "--flavor", "docker",
        "--base-image", "serving-no-such-base:0",
    )  # fmt: skip
    error = failure(result, 1)
    assert "'serving-no-such-base:0'" in error and "cannot be pulled" in error
    assert dhome.registry.find_deployment("x") is None


def test_failing_build_shows_its_last_lines_and_registers_nothing(
    dhome: Home, client: docker.DockerClient, base_image: str
) -> None:
    broken = ensure_no_python_image(client)
    result = dhome.cli(
        "pipeline", "deploy", SHOUT, "--name", "x", "--flavor", "docker", "--base-image", broken
    )
    error = failure(result, 1)
    assert "building image serving-x:" in error and "failed" in error
    assert "build: " in result.stderr  # the build's own last lines come before the error
    assert dhome.registry.find_deployment("x") is None
    assert client.containers.list(all=True, filters={"ancestor": broken}) == []


def test_failing_update_keeps_the_running_container(
    dhome: Home, client: docker.DockerClient, base_image: str
) -> None:
    deploy(dhome, SHOUT, "keep", base_image)
    before = dhome.deployment("keep")
    broken = ensure_no_python_image(client)
    result = dhome.cli("pipeline", "deploy", SHOUT, "--name", "keep", "--flavor", "docker", "--update",
                       "--base-image", broken)  # fmt: skip
    failure(result, 1)
    after = dhome.deployment("keep")
    assert after.url == before.url and after.flavor_data["container"] == before.flavor_data["container"]
    assert table(ok(dhome.cli("deployment", "list")))["keep"][2] == "RUNNING"
    assert url_in(ok(dhome.cli("deployment", "describe", "keep"))) == before.url


def _cli_with(home: Home, env: dict[str, str], *args: str) -> Any:
    import subprocess

    from deploy_helpers import CLI_TIMEOUT, SERVING

    return subprocess.run(
        [SERVING, *args],
        cwd=home.cwd,
        env={**home.env(), **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


# -- the run arguments (the default network publishes the port; no bridge here) ------------


def _dep() -> Deployment:
    return Deployment(id="0123456789ab-id", name="n", snapshot_id="s", flavor="docker",
                      created_at=0.0, updated_at=0.0)  # fmt: skip


def test_default_network_publishes_the_port_on_loopback() -> None:
    args = run_arguments(_dep(), "img:1", port=8123, network=None, env={"SERVING_DEPLOYMENT": "x"})
    assert args["ports"] == {f"{CONTAINER_PORT}/tcp": ("127.0.0.1", 8123)}
    assert "network_mode" not in args and "network" not in args
    assert args["environment"]["SERVING_HOST"] == "0.0.0.0"
    assert args["environment"]["SERVING_PORT"] == str(CONTAINER_PORT)
    assert args["init"] is True and args["detach"] is True
    assert args["volumes"] == {"serving-home-0123456789ab-id": {"bind": HOME_IN_CONTAINER, "mode": "rw"}}
    named = run_arguments(_dep(), "img:1", port=8123, network="backend", env={})
    assert named["network"] == "backend" and named["ports"] == args["ports"]


def test_host_network_listens_on_loopback_port() -> None:
    args = run_arguments(_dep(), "img:1", port=8124, network="host", env={})
    assert args["network_mode"] == "host" and "ports" not in args
    assert args["environment"]["SERVING_HOST"] == "127.0.0.1"
    assert args["environment"]["SERVING_PORT"] == "8124"
