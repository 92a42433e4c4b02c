"""Run the daemon (`python -m serving`) as a real process and talk to it over HTTP.

`daemon(pipeline, **env)` starts one and waits until `/readyz` answers 200; `env` keys
are setting names (`auth_key="k"` -> `SERVING_AUTH_KEY=k`). `module_daemon` does the
same but keeps the process for a whole test module, for read-only tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import GUARD, WaitTimeout, wait_until
from redis_helpers import REDIS_URL, RedisServer, drop_prefix, redis_client

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


def serving_env(pipeline: str | None, home: Path, **settings: Any) -> dict[str, str]:
    """A clean environment: no inherited SERVING_* variable, JSON logs, a private home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env.update(
        SERVING_HOST="127.0.0.1",
        SERVING_PORT="0",
        SERVING_LOG_FORMAT="json",
        SERVING_HOME=str(home),
        PYTHONUNBUFFERED="1",
    )
    if pipeline is not None:
        env["SERVING_PIPELINE"] = pipeline
    for key, value in settings.items():
        name = key if key.startswith("SERVING_") else f"SERVING_{key.upper()}"
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def _run_to_exit(pipeline: str | None, home: Path, timeout: float = 20, **settings: Any):
    return subprocess.run(
        [sys.executable, "-m", "serving"],
        cwd=ROOT,
        env=serving_env(pipeline, home, **settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Daemon:
    """One running `python -m serving` process; stderr is read by a background thread."""

    def __init__(self, pipeline: str, home: Path, **settings: Any) -> None:
        self.pipeline = pipeline
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self.url = ""
        self._signaled = False
        level = str(settings.get("log_level", "info")).strip().lower()
        if level in ("warning", "error") and "port" not in settings:
            # The "listening" line is info level: it would not show, so choose the port here.
            settings["port"] = _free_port()
            self.url = f"http://127.0.0.1:{settings['port']}"
            self._listening.set()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving"],
            cwd=ROOT,
            env=serving_env(pipeline, home, **settings),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C on pytest must not reach the daemon
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self._lines.append(line)
            if not self._listening.is_set():
                event = _parse(line)
                if event.get("event") == "listening":
                    self.url = event["url"]
                    self._listening.set()
        self._listening.set()  # EOF: unblock waiters; `url` stays empty

    # -- logs -------------------------------------------------------------------------

    def logs(self) -> str:
        """Everything the process wrote to stderr so far."""
        with self._lock:
            return "\n".join(self._lines)

    def log_events(self) -> list[dict[str, Any]]:
        with self._lock:
            lines = list(self._lines)
        return [e for e in map(_parse, lines) if e]

    def wait_for_log(
        self, predicate: Any, what: str = "a matching log line", timeout: float = GUARD
    ) -> dict[str, Any]:
        """The first JSON log event for which `predicate(event)` holds; raises
        `WaitTimeout` naming `what` (with the stderr so far) if none comes."""

        def first_match() -> dict[str, Any] | None:
            return next((e for e in self.log_events() if predicate(e)), None)

        return wait_until(first_match, what, timeout=timeout, detail=self.stderr_detail)

    def stderr_detail(self) -> str:
        """For a wait's error message: what the daemon said so far."""
        return f"stderr of the daemon for {self.pipeline}:\n{self.logs()[-4000:]}"

    # -- life cycle -------------------------------------------------------------------

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        if not self._listening.wait(timeout) or not self.url:
            self._fail_start("no 'listening' log line")
        with httpx.Client(timeout=2.0) as client:

            def ready_or_exited() -> bool:
                if self.proc.poll() is not None:
                    return True
                try:
                    return client.get(f"{self.url}/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            try:
                wait_until(ready_or_exited, "/readyz to answer 200", timeout=timeout)
            except WaitTimeout as exc:
                self._fail_start(str(exc))
        if self.proc.poll() is not None:
            self._fail_start(f"exited with status {self.proc.returncode}")

    def _fail_start(self, why: str) -> None:
        self.stop()
        pytest.fail(f"daemon for {self.pipeline} did not become ready: {why}; stderr:\n{self.logs()}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self._signaled = True
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for exit (a hang guard, not a timing assertion); returns the exit status."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon still running after {timeout}s; stderr:\n{self.logs()}") from None
        self._reader.join(2)
        return status

    def stop(self) -> int | None:
        """SIGTERM (unless already signalled), then SIGKILL after 5 s; always reaps the process."""
        if self.proc.poll() is None:
            if not self._signaled:  # a second SIGTERM would skip the graceful drain
                self.signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 10.0), **kw)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _parse(line: str) -> dict[str, Any]:
    if not line.startswith("{"):
        return {}
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


class DaemonFactory:
    """`factory(pipeline, **settings)` starts a daemon; with `shared=True` the same
    pipeline and settings give the same (already running) process."""

    def __init__(self, homes: Any, *, shared: bool = False) -> None:
        self._homes = homes
        self._shared = shared
        self._started: list[Daemon] = []
        self._by_key: dict[tuple[Any, ...], Daemon] = {}

    def __call__(self, pipeline: str, *, wait: bool = True, **settings: Any) -> Daemon:
        key = (pipeline, tuple(sorted((k, str(v)) for k, v in settings.items())))
        if self._shared and key in self._by_key and self._by_key[key].proc.poll() is None:
            return self._by_key[key]
        daemon = Daemon(pipeline, self._homes(), **settings)
        self._started.append(daemon)
        self._by_key[key] = daemon
        if wait:
            daemon.wait_ready()
        return daemon

    def close(self) -> None:
        for daemon in self._started:  # signal all first, so they drain in parallel
            daemon.signal(signal.SIGTERM)
        for daemon in self._started:
            daemon.stop()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Start daemons for one test; each is stopped (SIGTERM, then SIGKILL) at teardown."""
    count = iter(range(1_000_000))
    factory = DaemonFactory(lambda: _mkdir(tmp_path / f"home{next(count)}"))
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonFactory]:
    """Like `daemon`, but the processes live for the whole module (read-only tests)."""
    factory = DaemonFactory(lambda: tmp_path_factory.mktemp("home"), shared=True)
    yield factory
    factory.close()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def run_serving(tmp_path: Path) -> Any:
    """Run the daemon to completion (for start-up failures); returns a CompletedProcess."""

    def run(pipeline: str | None, timeout: float = 20, **settings: Any) -> subprocess.CompletedProcess[str]:
        return _run_to_exit(pipeline, tmp_path, timeout, **settings)

    return run


@pytest.fixture
def anyio_backend() -> str:
    """The one backend for every `@pytest.mark.anyio` test in the suite: the product
    runs on asyncio (uvloop in the daemon), never on trio."""
    return "asyncio"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of the test Redis for one test; every key under it is deleted after."""
    client = redis_client()
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    drop_prefix(client, prefix)
    client.close()


@pytest.fixture
def job_store_url(redis_prefix: str) -> str:
    """SERVING_JOB_STORE for daemons of one test: the test Redis under a private prefix."""
    return f"{REDIS_URL}?prefix={redis_prefix}"


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A `redis-server` of this test alone, started; the test may stop and restart it.
    Request it before `daemon`, so daemons stop before it does."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
