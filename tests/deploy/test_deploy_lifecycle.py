"""The life cycle of a local deployment through the CLI, with real daemons:
deploy, list, invoke (CLI, SDK, HTTP), logs, redeploy, deprovision, delete; a daemon
killed under the registry's feet; a busy preferred port."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest
from deploy_helpers import (
    SHOUT,
    Home,
    bind,
    failure,
    ok,
    outputs,
    port_of,
    table,
    url_in,
    wait_dead,
    write_answer,
)

import serving
from serving.deploy.deployers.local import pid_alive


def test_life_cycle_through_the_cli(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_answer(home.cwd / "answer.py", "v1")

    # deploy
    out = ok(home.cli("pipeline", "deploy", f"{source.name}:answer", "--name", "life"))
    assert "RUNNING" in out
    url = url_in(out)
    record = home.deployment("life")
    assert record.url == url and record.status == "RUNNING"
    first_pid = home.pid("life")
    assert pid_alive(first_pid)

    # list
    rows = table(ok(home.cli("deployment", "list")))
    assert rows["life"] == ["answer", url, "RUNNING"]

    # invoke: the CLI, the SDK (by home and by $SERVING_HOME), plain HTTP
    assert outputs(ok(home.cli("deployment", "invoke", "life", "--question=cli"))) == {"answer": "v1:cli"}
    assert serving.Client(home.path).get_deployment("life").invoke(question="sdk")["outputs"] == {
        "answer": "v1:sdk"
    }
    monkeypatch.setenv("SERVING_HOME", str(home.path))
    assert serving.invoke_deployment("life", {"question": "env"})["outputs"] == {"answer": "v1:env"}
    reply = httpx.post(f"{url}/invoke", json={"parameters": {"question": "http"}}, timeout=30)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["success"] is True and body["outputs"] == {"answer": "v1:http"}
    snapshot = home.snapshot_of("life")
    assert body["metadata"]["deployment_id"] == record.id
    assert body["metadata"]["deployment_name"] == "life"
    assert body["metadata"]["snapshot_id"] == snapshot.id == record.snapshot_id
    assert body["metadata"]["snapshot_name"] == snapshot.name
    assert body["metadata"]["pipeline_name"] == "answer"

    # logs: the daemon's JSON log, the last 5 lines
    tail = ok(home.cli("deployment", "logs", "life", "--tail", "5")).splitlines()
    assert len(tail) == 5
    assert all(isinstance(json.loads(line), dict) for line in tail)
    every = ok(home.cli("deployment", "logs", "life")).splitlines()
    assert set(tail) <= set(every)
    assert any('"/invoke"' in line for line in every)

    # a redeploy without --update is refused and leaves the running one alone
    source = write_answer(source, "v2")
    error = failure(home.cli("pipeline", "deploy", f"{source.name}:answer", "--name", "life"), 1)
    assert "'life' already exists" in error and "--update" in error
    assert home.pid("life") == first_pid and pid_alive(first_pid)
    assert outputs(ok(home.cli("deployment", "invoke", "life", "--question=x"))) == {"answer": "v1:x"}

    # --update replaces it in place: new code, a new process, the same URL
    out = ok(home.cli("pipeline", "deploy", f"{source.name}:answer", "--name", "life", "--update"))
    assert "RUNNING" in out and url_in(out) == url
    wait_dead(first_pid)
    assert home.pid("life") != first_pid
    assert home.deployment("life").snapshot_id != snapshot.id
    assert outputs(ok(home.cli("deployment", "invoke", "life", "--question=x"))) == {"answer": "v2:x"}

    # deprovision: the process is gone, the port is free
    second_pid = home.pid("life")
    out = ok(home.cli("deployment", "deprovision", "life"))
    assert "ABSENT" in out
    wait_dead(second_pid)
    assert not pid_alive(second_pid)
    bind(port_of(url))
    assert table(ok(home.cli("deployment", "list")))["life"][-1] == "ABSENT"

    # delete
    out = ok(home.cli("deployment", "delete", "life"))
    assert "deleted" in out
    assert "life" not in table(ok(home.cli("deployment", "list")))
    assert home.registry.find_deployment("life") is None


def test_killed_daemon_is_reported_as_error_and_can_be_deleted(home: Home) -> None:
    ok(home.cli("pipeline", "deploy", str(write_answer(home.cwd / "victim.py", "v1")), "--name", "victim"))
    pid = home.pid("victim")
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)

    result = home.cli("deployment", "refresh", "victim")
    assert result.returncode == 1, result
    assert "ERROR" in result.stdout
    assert home.deployment("victim").status == "ERROR"
    assert table(ok(home.cli("deployment", "list")))["victim"][-1] == "ERROR"

    # --update brings it back at the same URL
    url = home.deployment("victim").url
    source = str(home.cwd / "victim.py")
    assert url_in(ok(home.cli("pipeline", "deploy", source, "--name", "victim", "--update"))) == url
    assert "RUNNING" in ok(home.cli("deployment", "refresh", "victim"))
    pid = home.pid("victim")
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)

    assert "deleted" in ok(home.cli("deployment", "delete", "victim"))
    assert "victim" not in table(ok(home.cli("deployment", "list")))


def test_a_busy_preferred_port_fails_and_no_port_picks_a_free_one(home: Home) -> None:
    source = str(write_answer(home.cwd / "ported.py", "v1"))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        error = failure(home.cli("pipeline", "deploy", source, "--name", "taken", "--port", str(port)), 1)
        assert f"port {port} " in error and "in use" in error
        taken = home.registry.find_deployment("taken")
        assert taken is None or not taken.flavor_data.get("pid")  # nothing was started

        out = ok(home.cli("pipeline", "deploy", source, "--name", "picked"))
        url = url_in(out)
        assert port_of(url) != port
        assert httpx.post(f"{url}/invoke", json={"parameters": {}}, timeout=30).json()["outputs"] == {
            "answer": "v1:q"
        }

    # a running deployment is deleted only with --force, which stops it first
    pid = home.pid("picked")
    error = failure(home.cli("deployment", "delete", "picked"), 1)
    assert "RUNNING" in error and "--force" in error
    assert pid_alive(pid)
    assert "deleted" in ok(home.cli("deployment", "delete", "picked", "--force"))
    wait_dead(pid)
    assert home.registry.find_deployment("picked") is None


def test_a_free_preferred_port_is_used(home: Home, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = str(write_answer(tmp_path / "chosen.py", "v1"))
    out = ok(home.cli("pipeline", "deploy", source, "--name", "chosen", "--port", str(port)))
    assert url_in(out) == f"http://127.0.0.1:{port}"
    assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200


# -- regressions found in review (each failed before its fix) ----------------------------


def test_invoke_of_a_deprovisioned_deployment_fails_in_one_line(home: Home) -> None:
    ok(home.cli("pipeline", "deploy", SHOUT, "--name", "gone"))
    ok(home.cli("deployment", "deprovision", "gone"))
    assert "'gone'" in failure(home.cli("deployment", "invoke", "gone", "--word=x"), 1)


def test_a_failed_first_deploy_does_not_take_the_name(home: Home) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        failure(home.cli("pipeline", "deploy", SHOUT, "--name", "api", "--port", port), 1)
    ok(home.cli("pipeline", "deploy", SHOUT, "--name", "api"))
    ok(home.cli("deployment", "delete", "api", "--force"))


def test_a_daemon_that_dies_while_starting_leaves_the_name_free(home: Home, tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text(
        "import os\n"
        "from serving import pipeline, step\n"
        "if os.environ.get('SERVING_DEPLOYMENT'):\n"
        "    raise RuntimeError('only fails when deployed')\n"
        "@step\n"
        "def one() -> int:\n"
        "    return 1\n"
        "@pipeline\n"
        "def p():\n"
        "    return one()\n"
    )
    assert "exited" in failure(home.cli("pipeline", "deploy", f"{broken}:p", "--name", "flaky"), 1)
    ok(home.cli("pipeline", "deploy", SHOUT, "--name", "flaky"))
    ok(home.cli("deployment", "delete", "flaky", "--force"))
