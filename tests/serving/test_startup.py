"""Start-up: every configuration problem is one line on stderr and a clear exit status."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.settings import Settings, SettingsError, load_settings

TESTS = Path(__file__).resolve().parent.parent
PIPELINES = TESTS / "pipelines"
EXAMPLES = TESTS.parent / "examples"
HELLO = f"{EXAMPLES / 'hello.py'}:hello"


def one_line(proc: Any, status: int) -> str:
    """Assert the exit status and a single `serving: error:` line; return that line."""
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert lines[0].startswith("serving: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("setting", "value", "expect"),
    [
        ("port", "abc", "Expected int"),
        ("port", "70000", "<= 65535"),
        ("port", "-1", ">= 0"),
        ("log_level", "loud", "loud"),
        ("log_format", "xml", "xml"),
        ("max_body_bytes", "0", ">= 1"),
        ("server", "nginx", "nginx"),
        ("invoke_timeout", "0", "> 0"),
        ("graceful_timeout", "-1", ">= 0"),
        ("step_threads", "0", ">= 1"),
        ("access_log", "maybe", "bool"),
    ],
)
def test_bad_setting_exits_2_naming_it(run_serving: Any, setting: str, value: str, expect: str) -> None:
    proc = run_serving(HELLO, **{setting: value})
    line = one_line(proc, 2)
    assert f"SERVING_{setting.upper()}" in line
    assert repr(value) in line
    assert expect in line


def test_pipeline_not_set(run_serving: Any) -> None:
    line = one_line(run_serving(None), 2)
    assert "SERVING_PIPELINE is not set" in line


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        (str(PIPELINES / "missing.py") + ":p", "does not exist"),
        (f"{PIPELINES / 'not_a_pipeline.py'}:NOT_A_PIPELINE", "is a dict, not a @pipeline"),
        (f"{EXAMPLES / 'hello.py'}:say_hello", "is a Step, not a @pipeline"),
        (f"{EXAMPLES / 'hello.py'}:nothing", "has no attribute 'nothing'"),
        ("no_such_module_xyz:p", "No module named 'no_such_module_xyz'"),
        (f"{PIPELINES / 'not_a_pipeline.py'}", "defines 0 pipelines"),
        (":hello", "expected 'module:attr'"),
    ],
)
def test_pipeline_cannot_load(run_serving: Any, spec: str, expect: str) -> None:
    line = one_line(run_serving(spec), 2)
    assert "cannot load pipeline" in line
    assert expect in line


def test_definition_error_names_function_and_parameter(run_serving: Any) -> None:
    line = one_line(run_serving(f"{PIPELINES / 'needs_default.py'}:needs_default"), 2)
    assert "pipeline 'needs_default'" in line
    assert "parameter 'name'" in line
    assert "has no default" in line


def test_unknown_runtime_lists_available(run_serving: Any) -> None:
    line = one_line(run_serving(HELLO, runtime="nope"), 2)
    assert "SERVING_RUNTIME" in line
    assert "'nope'" in line
    assert "available:" in line
    assert "memory" in line


def test_port_taken_exits_1(run_serving: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(run_serving(HELLO, port=port), 1)
    assert f"127.0.0.1:{port}" in line
    assert "cannot listen" in line


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("examples.hello:hello", id="module-attr"),
        pytest.param("examples/hello.py", id="file-without-attr"),
        pytest.param("examples/hello.py:hello", id="relative-file"),
    ],
)
def test_pipeline_spec_forms_start(daemon: Any, spec: str) -> None:
    d = daemon(spec)
    with httpx.Client(timeout=10) as client:
        r = client.post(f"{d.url}/invoke", json={"parameters": {"name": "Spec"}})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == {"greeting": "Hello Spec!"}


def test_listening_line_is_first_and_json(daemon: Any) -> None:
    d = daemon(HELLO)
    first = d.log_events()[0]
    assert first["event"] == "listening"
    assert first["url"] == d.url
    assert first["server"] == "hypercorn"
    assert first["level"] == "info"
    assert d.url.startswith("http://127.0.0.1:")
    assert not d.url.endswith(":0")


def test_access_log_off(daemon: Any) -> None:
    d = daemon(HELLO, access_log="false")
    with httpx.Client(timeout=10) as client:
        assert client.post(f"{d.url}/invoke").status_code == 200
    assert all(e["event"] != "request" for e in d.log_events())


@pytest.mark.parametrize("url", ["jsonl://", "jsonl:", "sqlite:///dev/null/store/runs.db"])
def test_unopenable_capture_store_exits_2_with_one_line(run_serving: Any, url: str) -> None:
    done = run_serving(HELLO, capture_url=url)
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert "SERVING_CAPTURE_URL" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_module_next_to_the_pipeline_cannot_shadow_the_daemons_own(daemon: Any, tmp_path: Path) -> None:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "hello.py").write_text((EXAMPLES / "hello.py").read_text())
    (folder / "jobs.py").write_text("")  # a user module named like one of ours
    d = daemon(f"{folder / 'hello.py'}:hello")
    assert httpx.post(f"{d.url}/invoke", json={}).json()["outputs"] == {"greeting": "Hello World!"}


def test_hypercorn_listens_with_a_deep_backlog(daemon: Any) -> None:
    """Hypercorn re-listened with its default backlog of 100; 1000 SSE clients overflowed it."""
    d = daemon(HELLO)
    port = int(d.url.rsplit(":", 1)[1])
    rows = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
    assert rows, f"no listening socket on port {port}"
    assert int(rows[2]) >= 2048  # Send-Q of a listening socket is its backlog


# -- load_settings, in process ------------------------------------------------------------


def test_load_settings_defaults() -> None:
    s = load_settings({})
    assert s == Settings()
    assert s.port == 8000
    assert s.host == "127.0.0.1"
    assert s.server == "hypercorn"
    assert s.runtime == "realtime"
    assert s.auth_key is None
    assert s.max_body_bytes == 16 * 1024 * 1024
    assert s.capture_sample == 1.0


def test_capture_sample_reaches_the_runtime() -> None:
    from serving.cli import runtime_options

    assert runtime_options(load_settings({"SERVING_CAPTURE_SAMPLE": "0.25"})).capture_sample == 0.25


def test_load_settings_parses_every_type() -> None:
    s = load_settings(
        {
            "SERVING_PIPELINE": "pkg.mod:p",
            "SERVING_HOST": "0.0.0.0",
            "SERVING_PORT": "0",
            "SERVING_LOG_LEVEL": " DEBUG ",
            "SERVING_LOG_FORMAT": "Json",
            "SERVING_ACCESS_LOG": "false",
            "SERVING_AUTH_KEY": "k",
            "SERVING_MAX_BODY_BYTES": "1",
            "SERVING_INVOKE_TIMEOUT": "2.5",
            "SERVING_GRACEFUL_TIMEOUT": "0",
            "SERVING_DRAIN_DELAY": "1.5",
            "SERVING_SERVER": "UVICORN",
            "SERVING_STEP_THREADS": "4",
            "SERVING_DEPLOYMENT_NAME": "dep",
            "SERVING_HOME": "~/x",
            "HOME": "/root",
            "SERVING_DEPLOYMENT": "not a setting",
        }
    )
    assert s.pipeline == "pkg.mod:p"
    assert s.host == "0.0.0.0"
    assert s.port == 0
    assert s.log_level == "debug"
    assert s.log_format == "json"
    assert s.access_log is False
    assert s.auth_key == "k"
    assert s.max_body_bytes == 1
    assert s.invoke_timeout == 2.5
    assert s.graceful_timeout == 0.0
    assert s.drain_delay == 1.5
    assert s.server == "uvicorn"
    assert s.step_threads == 4
    assert s.deployment_name == "dep"
    assert s.home_path == Path("~/x").expanduser()


def test_load_settings_empty_values_mean_unset() -> None:
    s = load_settings({"SERVING_AUTH_KEY": "", "SERVING_DEPLOYMENT_NAME": "  ", "SERVING_INVOKE_TIMEOUT": ""})
    assert s.auth_key is None
    assert s.deployment_name is None
    assert s.invoke_timeout is None


def test_load_settings_overrides_win() -> None:
    s = load_settings({"SERVING_PORT": "1", "SERVING_HOST": "h"}, port=2, host=None)
    assert s.port == 2
    assert s.host == "h"


@pytest.mark.parametrize(
    ("env", "start"),
    [
        ({"SERVING_PORT": "abc"}, "SERVING_PORT='abc' is invalid: Expected int, got str"),
        ({"SERVING_PORT": "70000"}, "SERVING_PORT='70000' is invalid: Expected int <= 65535"),
        ({"SERVING_LOG_LEVEL": "loud"}, "SERVING_LOG_LEVEL='loud' is invalid"),
        ({"SERVING_MAX_BODY_BYTES": "0"}, "SERVING_MAX_BODY_BYTES='0' is invalid: Expected int >= 1"),
        ({"SERVING_SERVER": "nginx"}, "SERVING_SERVER='nginx' is invalid"),
        ({"SERVING_CAPTURE_SAMPLE": "1.5"}, "SERVING_CAPTURE_SAMPLE='1.5' is invalid: Expected float <= 1"),
        ({"SERVING_CAPTURE_SAMPLE": "-1"}, "SERVING_CAPTURE_SAMPLE='-1' is invalid: Expected float >= 0"),
        ({"SERVING_CAPTURE_SAMPLE": "half"}, "SERVING_CAPTURE_SAMPLE='half' is invalid"),
        ({"SERVING_CAPTURE_SAMPLE": "nan"}, "SERVING_CAPTURE_SAMPLE='nan' is invalid"),
    ],
)
def test_load_settings_errors_name_the_variable(env: dict[str, str], start: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    message = str(info.value)
    assert message.startswith(start)
    assert "\n" not in message


def test_redacted_hides_auth_key() -> None:
    s = load_settings({"SERVING_AUTH_KEY": "hunter2"})
    shown = s.redacted()
    assert shown["auth_key"] == "***"
    assert "hunter2" not in repr(shown)
    assert load_settings({}).redacted()["auth_key"] is None
