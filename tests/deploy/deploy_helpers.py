"""Helpers for the deployment tests.

`Home` is one private $SERVING_HOME: it runs the `serving` CLI against it (a clean
environment, COLUMNS=120) and, at teardown, SIGKILLs every daemon that home started, so
no deployment outlives the test session. The rest reads CLI output: tables, the one
error line, URLs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from polling import wait_until

from serving.deploy.deployers.local import pid_alive
from serving.deploy.registry import Deployment, Registry, Snapshot

SERVING = str(Path(sys.executable).with_name("serving"))
PIPELINES = Path(__file__).resolve().parent / "pipelines"
GREET = f"{PIPELINES / 'greet.py'}:greet"
SHOUT = f"{PIPELINES / 'shout.py'}:shout"
CLI_TIMEOUT = 120.0  # hang guard only: a deploy itself waits at most 60 s for /readyz
KILL_TIMEOUT = 10.0
URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)")

ANSWER_TEMPLATE = '''"""Written by the deployment tests: the answer carries the code version."""

from typing import Annotated

from serving import pipeline, step


@step
def reply(question: str) -> Annotated[str, "answer"]:
    return "VERSION:" + question


@pipeline
def answer(question: str = "q"):
    return reply(question)
'''


def write_answer(path: Path, version: str) -> Path:
    """(Re)write a pipeline file `answer` whose step returns "<version>:<question>"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ANSWER_TEMPLATE.replace("VERSION", version))
    return path


class Home:
    """One $SERVING_HOME and a working folder to run the CLI in."""

    def __init__(self, path: Path, cwd: Path) -> None:
        self.path = path
        self.cwd = cwd
        path.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
        env.update(SERVING_HOME=str(self.path), COLUMNS="120", PYTHONIOENCODING="utf-8")
        return env

    def cli(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SERVING, *args],
            cwd=cwd or self.cwd,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [SERVING, *args],
            cwd=self.cwd,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # -- the registry ----------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        return Registry(self.path)

    def deployment(self, name: str) -> Deployment:
        return self.registry.get_deployment(name)

    def snapshot_of(self, name: str) -> Snapshot:
        return self.registry.get_snapshot(self.deployment(name).snapshot_id)

    def pid(self, name: str) -> int:
        pid = self.deployment(name).flavor_data.get("pid")
        assert pid, f"deployment {name!r} has no pid"
        return int(pid)

    # -- teardown --------------------------------------------------------------------

    def daemon_pids(self) -> set[int]:
        """Live daemons of this home: the pids the registry records, plus any process
        whose environment says it serves a deployment of this home (a deploy that was
        interrupted before it recorded its pid)."""
        candidates: set[int] = set()
        with contextlib.suppress(Exception):
            for dep in self.registry.list_deployments():
                if dep.flavor_data.get("pid"):
                    candidates.add(int(dep.flavor_data["pid"]))
        candidates.update(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
        return {pid for pid in candidates if self._is_ours(pid) and pid_alive(pid)}

    def _is_ours(self, pid: int) -> bool:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        marker = f"SERVING_HOME={self.path}".encode()
        return marker in environ and any(e.startswith(b"SERVING_DEPLOYMENT=") for e in environ)

    def kill_daemons(self) -> None:
        pids = self.daemon_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # the daemon leads its own session and group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: not any(pid_alive(pid) for pid in pids), f"daemons {pids} to die", timeout=KILL_TIMEOUT
        )


# -- reading CLI output ------------------------------------------------------------------


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """stdout of a command that must have succeeded."""
    assert result.returncode == 0, _show(result)
    return result.stdout


def failure(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single error line of a command that must have failed with exit status `code`."""
    assert result.returncode == code, _show(result)
    assert result.stdout.strip() == "", _show(result)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("serving: error: ")]
    assert len(errors) == 1, _show(result)
    assert lines[-1] == errors[0], f"the error is not one line:\n{result.stderr}"
    return errors[0]


def _show(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def table(stdout: str) -> dict[str, list[str]]:
    """Rows of a rich table (`deployment list`, `snapshot list`) keyed by the first cell."""
    rows: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip().strip("│").split("│")]
            if cells[0]:
                rows[cells[0]] = cells[1:]
    return rows


def url_in(text: str) -> str:
    match = URL_RE.search(text)
    assert match, f"no URL in {text!r}"
    return match.group(0)


def port_of(url: str) -> int:
    match = URL_RE.fullmatch(url)
    assert match, url
    return int(match.group(1))


def outputs(stdout: str) -> Any:
    """The outputs JSON `deployment invoke` prints."""
    return json.loads(stdout)


def bind(port: int) -> None:
    """Listen on 127.0.0.1:port as a server would (SO_REUSEADDR); raises OSError if taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def wait_dead(pid: int, timeout: float = KILL_TIMEOUT) -> None:
    """Hang guard: wait until `pid` is gone (or a zombie)."""
    wait_until(lambda: not pid_alive(pid), f"pid {pid} to exit", timeout=timeout)
