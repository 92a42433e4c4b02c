"""Several worker processes serving one port (`SERVING_WORKERS` > 1).

The supervisor binds the socket once and starts each worker as a fresh
`python -m serving.worker` process that inherits the listening socket: the kernel hands
each new connection to whichever worker accepts it first, so one port is served by as
many cores as there are workers. Workers are spawned, not forked, so each imports and
starts like a single daemon would (no event loop, thread or random pool copied from a
parent) and prometheus-client sees `PROMETHEUS_MULTIPROC_DIR` before its first import.

Life cycle, in the manner of Gunicorn's arbiter and uvicorn's supervisor:

- A worker that dies is started again, after a backoff that doubles while workers keep
  dying soon after they start (0.5 s up to 10 s) and resets once one has lived a while.
- The first SIGTERM or SIGINT drains: every worker gets SIGTERM and does its own graceful
  shutdown (`serving/server.py`), nothing is restarted, and the supervisor exits 0 once
  all have exited 0 (1 if any did not).
- A second signal is passed on (each worker then stops at once); the supervisor waits a
  few seconds, kills what is left and exits 1.

Workers run in their own process group, so a Ctrl-C in a terminal reaches only the
supervisor, which decides what the workers are told; and each asks the kernel for a
SIGTERM should the supervisor die without telling them (`PR_SET_PDEATHSIG`).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import structlog

from serving.settings import PREFIX, Settings

log = structlog.get_logger("serving.supervisor")

BACKOFF_FIRST = 0.5  # seconds before restarting a worker that died soon after it started
BACKOFF_MAX = 10.0
STABLE_AFTER = 10.0  # a worker that lived this long resets the backoff
FORCE_WAIT = 5.0  # after a second signal: how long workers get before SIGKILL
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def workers_problem(settings: Settings) -> str | None:
    """Why these settings cannot serve with their number of workers, as one line; None if
    they can.

    Several workers need a job store they all share: a job accepted by one worker must be
    found by a poll, stream or cancel that lands on another.
    """
    if settings.worker_count > 1 and settings.job_store == "memory":
        return (
            f"{PREFIX}JOB_STORE=memory cannot serve {PREFIX}WORKERS={settings.workers}: "
            "workers must share their jobs; set SERVING_JOB_STORE=redis://host:port/db"
        )
    return None


class _Worker:
    __slots__ = ("proc", "started")

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.started = time.monotonic()


class Supervisor:
    """Starts `count` workers on `sock`, keeps that many running, and drains them on a
    signal. `overrides` are settings given on the command line; workers get them as
    `SERVING_*` variables, so they read the same settings as the supervisor."""

    def __init__(self, settings: Settings, sock: socket.socket, overrides: Mapping[str, Any]) -> None:
        self.settings = settings
        self.sock = sock
        self.count = settings.worker_count
        self.workers: dict[int, _Worker] = {}
        self.pending: list[float] = []  # monotonic times at which to start a replacement
        self.failures = 0  # consecutive early deaths, for the backoff
        self.signals = 0
        self.force_deadline: float | None = None
        self.unclean = False  # a worker did not drain to exit status 0
        self.metrics_dir, self._own_metrics_dir = _metrics_dir()
        self.env = _worker_env(overrides, self.metrics_dir)

    # -- workers ----------------------------------------------------------------------

    def _spawn(self) -> None:
        fd = self.sock.fileno()
        flags = ["-P"] if sys.flags.safe_path else []  # as the supervisor was started (deployments)
        proc = subprocess.Popen(
            [sys.executable, *flags, "-m", "serving.worker", str(fd), str(os.getpid())],
            env=self.env,
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            process_group=0,  # a terminal's Ctrl-C reaches the supervisor only
        )
        self.workers[proc.pid] = _Worker(proc)
        log.info("worker_started", worker_pid=proc.pid, workers=len(self.workers))

    def _reap(self) -> None:
        """Collect exited workers; while serving, schedule their replacements."""
        now = time.monotonic()
        for pid, worker in list(self.workers.items()):
            status = worker.proc.poll()
            if status is None:
                continue
            del self.workers[pid]
            _mark_dead(pid, self.metrics_dir)
            if self.signals:
                log.info("worker_stopped", worker_pid=pid, status=status)
                self.unclean = self.unclean or status != 0
                continue
            lived = now - worker.started
            self.failures = 0 if lived >= STABLE_AFTER else self.failures + 1
            delay = 0.0 if not self.failures else min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failures - 1))
            log.warning(
                "worker_died",
                worker_pid=pid,
                status=status,
                lived_seconds=round(lived, 3),
                restart_in=delay,
            )
            self.pending.append(now + delay)

    def _start_due(self) -> None:
        now = time.monotonic()
        due = [t for t in self.pending if t <= now]
        self.pending = [t for t in self.pending if t > now]
        for _ in due:
            self._spawn()

    def _tell_all(self, signum: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    # -- signals ----------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        self.pending.clear()
        if self.signals == 1:
            log.info("draining", signal=name, workers=len(self.workers))
            self._tell_all(signal.SIGTERM)
        else:
            log.warning("second_signal_stopping_now", signal=name)
            self._tell_all(signal.SIGTERM)  # each worker's own second signal: stop at once
            self.force_deadline = time.monotonic() + FORCE_WAIT

    # -- main loop --------------------------------------------------------------------

    def run(self) -> int:
        """Serve until drained; returns the exit status (0 after a clean drain, 1 after a
        second signal or when a worker failed to drain)."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        watched = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in watched}
        clean = True
        try:
            for _ in range(self.count):
                self._spawn()
            while True:
                self._reap()
                if self.signals and not self.workers:
                    break
                if self.force_deadline is not None and time.monotonic() >= self.force_deadline:
                    self._tell_all(signal.SIGKILL)
                    self.force_deadline = None
                if not self.signals:
                    self._start_due()
                timeout = self._next_timeout()
                readable, _, _ = select.select([wake_r], [], [], timeout)
                if readable:
                    for signum in _drain_pipe(wake_r):
                        if signum in (signal.SIGTERM, signal.SIGINT):
                            self._on_signal(signum)
            clean = self.signals == 1 and not self.unclean
        finally:
            signal.set_wakeup_fd(-1)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
            with contextlib.suppress(OSError):
                self.sock.close()
            if self._own_metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
        if not clean:
            log.warning("stopped_at_once")
            return 1
        log.info("stopped")
        return 0

    def _next_timeout(self) -> float | None:
        """How long the loop may sleep: until the next restart or the force deadline. A
        worker's exit or a signal wakes it earlier (SIGCHLD and the wakeup pipe)."""
        times = [*self.pending] if not self.signals else []
        if self.force_deadline is not None:
            times.append(self.force_deadline)
        if not times:
            return 1.0  # a guard: SIGCHLD can coalesce; poll() every second regardless
        return max(0.0, min(times) - time.monotonic())


def _drain_pipe(fd: int) -> list[int]:
    try:
        return list(os.read(fd, 512))
    except BlockingIOError:
        return []


def _metrics_dir() -> tuple[str, bool]:
    """The folder where workers' metrics meet: PROMETHEUS_MULTIPROC_DIR if set (emptied of
    a previous run's files, as prometheus-client requires), else a private temporary one
    that is removed on exit. Returns the path and whether it is ours to remove."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(given, name))
        return given, False
    return tempfile.mkdtemp(prefix="serving-metrics-"), True


def _mark_dead(pid: int, path: str) -> None:
    """Drop a dead worker's live gauges; its counters stay, so sums never go backwards."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


def _worker_env(overrides: Mapping[str, Any], metrics_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in overrides.items():
        env[f"{PREFIX}{name.upper()}"] = str(value)
    env[MULTIPROC_ENV] = metrics_dir
    return env


def run_supervisor(settings: Settings, overrides: Mapping[str, Any]) -> int:
    """Bind the port once and supervise `settings.worker_count` workers on it.

    Raises ServerStartError (one line) when the port cannot be bound.
    """
    from serving.server import bind_socket

    sock = bind_socket(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    log.info(
        "listening",
        url=f"http://{host}:{port}",
        server=settings.server,
        pipeline=settings.pipeline,
        workers=settings.worker_count,
    )
    return Supervisor(settings, sock, overrides).run()
