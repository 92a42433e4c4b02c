"""The Python SDK: `my_pipeline.deploy(...)`, the Deployment handle, `serving.Client`,
`serving.invoke_deployment` and the HTTP clients against a deployed daemon."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from deploy_helpers import CLI_TIMEOUT, GREET, Home, wait_dead, write_answer

import serving
from serving.deploy.client import AsyncServingClient, ServingClient
from serving.deploy.deployers import DeployError
from serving.deploy.deployers.local import pid_alive
from serving.deploy.registry import RegistryError


def import_file(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def module(module_home: Home) -> Iterator[ModuleType]:
    """The pipeline module, imported from a file of the test's own; sys.path and
    sys.modules are restored afterwards (the loader adds to both).

    Only modules loaded from the test's own folder are forgotten: serving's modules
    imported for the first time meanwhile must stay, or a Struct of theirs can no
    longer resolve its annotations (`Settings`: NameError 'Port' in a later test).
    """
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    folder = module_home.cwd.resolve()
    try:
        yield import_file(write_answer(module_home.cwd / "sdk_answer.py", "sdk"), "deploy_tests_sdk_answer")
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            origin = getattr(sys.modules[name], "__file__", None)
            if origin is not None and Path(origin).resolve().is_relative_to(folder):
                del sys.modules[name]


@pytest.fixture(scope="module")
def deployment(module: ModuleType, module_home: Home) -> serving.Deployment:
    return module.answer.deploy(deployment_name="sdk", home=module_home.path)


def test_deploy_returns_a_running_handle(deployment: serving.Deployment, module_home: Home) -> None:
    assert isinstance(deployment, serving.Deployment)
    assert deployment.name == "sdk"
    assert deployment.url and deployment.url.startswith("http://127.0.0.1:")
    assert deployment.status == "RUNNING"
    assert deployment.id == module_home.deployment("sdk").id
    assert module_home.snapshot_of("sdk").pipeline_name == "answer"
    assert [d.name for d in serving.Client(module_home.path).list_deployments()] == ["sdk"]


def test_invoke_and_submit(deployment: serving.Deployment) -> None:
    reply = deployment.invoke(question="a")
    assert reply["success"] is True and reply["outputs"] == {"answer": "sdk:a"}
    assert reply["metadata"]["deployment_name"] == "sdk"
    assert deployment.invoke({"question": "b"})["outputs"] == {"answer": "sdk:b"}

    job = deployment.submit(question="c")
    assert job["job_id"]
    with ServingClient(deployment.url) as client:
        done = client.wait(job["job_id"], timeout=30)
    assert done["status"] == "completed"
    assert done["result"]["outputs"] == {"answer": "sdk:c"}


def test_stream_yields_events_ending_with_run_completed(deployment: serving.Deployment) -> None:
    job = deployment.submit(question="s")
    with ServingClient(deployment.url, timeout=30) as client:
        events = list(client.stream(job["job_id"]))
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_completed"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@pytest.mark.anyio
async def test_async_client_invoke(deployment: serving.Deployment) -> None:
    async with AsyncServingClient(deployment.url, timeout=30) as client:
        reply = await client.invoke(question="async")
        assert reply["outputs"] == {"answer": "sdk:async"}
        job = await client.submit(question="job")
        done = await client.wait(job["job_id"], timeout=30)
        assert done["result"]["outputs"] == {"answer": "sdk:job"}
        types = [e["type"] async for e in client.stream(job["job_id"])]
        assert types[-1] == "run_completed"


def test_logs(deployment: serving.Deployment) -> None:
    deployment.invoke()
    lines = deployment.logs()
    assert any('"/invoke"' in line for line in lines)
    assert deployment.logs(tail=2) == lines[-2:]
    assert deployment.logs(tail=0) == []
    assert deployment.logs(tail=len(lines) + 50)[: len(lines)] == lines
    with pytest.raises(DeployError, match="tail must be 0 or more, got -1"):
        deployment.logs(tail=-1)


def test_client_and_invoke_deployment_read_serving_home(
    deployment: serving.Deployment, module_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVING_HOME", str(module_home.path))
    assert serving.invoke_deployment("sdk", question="env")["outputs"] == {"answer": "sdk:env"}
    assert serving.invoke_deployment(deployment.id, {"question": "id"})["outputs"] == {"answer": "sdk:id"}
    client = serving.Client()
    assert client.get_deployment("sdk").url == deployment.url
    assert client.get_snapshot(module_home.deployment("sdk").snapshot_id).pipeline_name == "answer"
    with pytest.raises(RegistryError, match="'nowhere'"):
        client.get_deployment("nowhere")


def test_deprovision_and_delete(module: ModuleType, module_home: Home) -> None:
    dep = module.answer.deploy(deployment_name="sdk-temp", home=module_home.path)
    assert dep.status == "RUNNING"
    pid = module_home.pid("sdk-temp")
    port = module_home.deployment("sdk-temp").flavor_data["port"]

    assert dep.deprovision() is dep
    wait_dead(pid)
    assert not pid_alive(pid)
    assert dep.status == "ABSENT"
    assert module_home.deployment("sdk-temp").status == "ABSENT"
    assert port

    dep.delete()
    client = serving.Client(module_home.path)
    assert "sdk-temp" not in [d.name for d in client.list_deployments()]
    with pytest.raises(RegistryError):
        client.get_deployment("sdk-temp")


def test_deploy_options_are_checked_before_a_snapshot_is_made(module: ModuleType, home: Home) -> None:
    # The SDK, the CLI flags and Deployments share DeployOptions; a misspelt or mistyped
    # keyword is refused by name, and nothing is left in the registry.
    with pytest.raises(TypeError, match=r"unknown deploy option\(s\) prot \(known: port, "):
        module.answer.deploy(deployment_name="typo", home=home.path, prot=8000)
    with pytest.raises(TypeError, match=r"bad deploy option: .*\$\.port"):
        serving.Client(home.path).deploy(GREET, "typed", port="eighty")
    assert home.registry.list_snapshots() == []
    assert home.registry.list_deployments() == []


RUNTIMES_ONLY = '''"""A pipeline written against `runtimes` alone: nothing here imports `serving`."""

from typing import Annotated

from runtimes import pipeline, step


@step
def reply(question: str) -> Annotated[str, "answer"]:
    return "plain:" + question


@pipeline
def plain(question: str = "q"):
    return reply(question)
'''

DEPLOY_FROM_RUNTIMES = """
import sys
import plain_pipeline

assert "serving" not in sys.modules, "the pipeline module imported serving"
dep = plain_pipeline.plain.deploy(deployment_name="plain")
print(dep.invoke(question="fresh")["outputs"]["answer"])
dep.deprovision()
"""


def test_deploy_works_without_importing_serving_first(home: Home) -> None:
    # `Pipeline.deploy()` finds the SDK through the `serving.deploy` entry point, so it
    # does not depend on `serving` having been imported (runtimes never imports it).
    (home.cwd / "plain_pipeline.py").write_text(RUNTIMES_ONLY)
    done = subprocess.run(
        [sys.executable, "-c", DEPLOY_FROM_RUNTIMES],
        cwd=home.cwd,
        env=home.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "plain:fresh"
    assert home.deployment("plain").status == "ABSENT"


def test_deploy_without_the_deploy_package_says_so(
    module: ModuleType, home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `runtimes.pipeline` the attribute is the decorator; the module is in sys.modules.
    pipeline_module = importlib.import_module("runtimes.pipeline")
    monkeypatch.setattr(pipeline_module, "DEPLOY_ENTRY_POINT_GROUP", "serving.tests.nothing-here")
    with pytest.raises(RuntimeError, match=r"needs the serving deploy package"):
        module.answer.deploy(deployment_name="nowhere", home=home.path)
    assert home.registry.list_snapshots() == []
