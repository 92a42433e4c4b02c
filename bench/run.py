"""Benchmark the serving daemon against a bare Starlette app on the same server.

Absolute req/s numbers depend on the machine; the ratio daemon/bare measured in
the same run, on the same pinned core, does not (much).  That ratio, the p50
latency the daemon adds, its cold start and its idle memory are what we hold
the daemon to.  See bench/README.md for the method and the targets.

`daemon` serves an async step (it runs on the event loop) on the MemoryOnly
runtime; `daemon-sync` serves the same pipeline with a plain `def` step, so each
request also pays the hand-off to a worker thread.  `daemon-realtime` is `daemon`
on the default `realtime` runtime with full capture, the daemon as it starts by
default: its req/s over `bare`'s is checked per server (issue 15), and the harness
checks that no capture record was dropped and that every reply has its row in its
runs.db.  `cpu` and `cpu-realtime` serve a 1 ms-CPU step on MemoryOnly and Realtime,
in paired runs only: their ratio is checked too.  The daemon/bare targets are checked
for `daemon`; the `daemon-sync` ratio is printed for information.  Each cold start
is the median of three starts.  Both checked ratios are also estimated from
interleaved rounds (CPU per request, both targets loaded at once and taking turns on
the core every --slice seconds), the steadier figure on a VM whose speed drifts.

Usage: python bench/run.py [--duration 10] [--servers hypercorn,uvicorn]
                           [--targets daemon,daemon-sync,daemon-realtime,bare,cpu,cpu-realtime]
                           [--pairs 10] [--pair-duration 3] [--interleaved-rounds 8]
                           [--slice 0.1] [--json PATH] [--jobs]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA_SCRIPT = BENCH / "post.lua"

SERVERS = ("hypercorn", "uvicorn")
TARGETS = ("daemon", "daemon-sync", "daemon-realtime", "bare", "cpu", "cpu-realtime")
# Daemon targets and the pipeline each serves; BENCH_PIPELINE overrides the hello
# pipeline of `daemon` and `daemon-realtime` (both, so their ratio stays like for like).
# bench/hello_sync.py is named as a module: daemons before commit ac55e1a let a file
# path's folder shadow their own packages (bench/jobs.py shadowed `jobs`), and a
# module name works with every version.
HELLO_PIPELINE = "examples/hello.py:hello"
PIPELINES = {
    "daemon": HELLO_PIPELINE,
    "daemon-sync": "bench.hello_sync:hello",
    "daemon-realtime": HELLO_PIPELINE,
    "cpu": "bench.cpu_step:hello",
    "cpu-realtime": "bench.cpu_step:hello",
}
# SERVING_RUNTIME per daemon target; None leaves it unset, i.e. the default (realtime).
# The foundation issue's spec: "the daemon (hello example, MemoryOnly)".
RUNTIME_ENV: dict[str, str | None] = {
    "daemon": "memory",
    "daemon-sync": "memory",
    "daemon-realtime": None,
    "cpu": "memory",
    "cpu-realtime": None,
}
# The runtime each daemon target must report on /info; anything else aborts the run.
EXPECTED_RUNTIME = {
    "daemon": "memory",
    "daemon-sync": "memory",
    "daemon-realtime": "realtime",
    "cpu": "memory",
    "cpu-realtime": "realtime",
}
CAPTURE_TARGET = "daemon-realtime"  # the default daemon: its capture and its ratio to bare are checked
CPU_TARGETS = ("cpu", "cpu-realtime")  # MemoryOnly, Realtime serving a 1 ms-CPU step
CAPTURE_TARGETS = (CAPTURE_TARGET, CPU_TARGETS[1])  # whose rows are counted against their replies
# Targets measured in paired runs only (no long runs): only their ratio is checked.
PAIRS_ONLY = CPU_TARGETS
# Groups compared in paired runs at 32 connections: each round runs every target of a
# group back to back, the order reversing at every round.
PAIR_GROUPS = (("bare", "daemon", CAPTURE_TARGET), CPU_TARGETS)
# Pairs loaded at the same time in interleaved rounds, baseline first: the two checked
# ratios of PAIR_GROUPS (`daemon` is not checked against anything, so it sits out).
INTERLEAVED_GROUPS = (("bare", CAPTURE_TARGET), CPU_TARGETS)
# After both wrk runs of an interleaved round end, wait this long before reading CPU
# time: the capture writer flushes a batch every 0.25 s, so its last batch is counted.
INTERLEAVED_SETTLE_S = 0.6
# wrk's request timeout in interleaved rounds: a request waits out the other target's
# slice, so the default 2 s must not be approached by a slice or two.
INTERLEAVED_WRK_TIMEOUT = "10s"
SLICE_S = 0.1  # default --slice: how long each target of an interleaved round runs in turn
VARIANT_NOTE = {
    "daemon-sync": "sync-step variant, information only",
    "daemon-realtime": "realtime runtime, information only",
}
TARGET_WIDTH = max(len(t) for t in TARGETS)
CONNECTIONS = (1, 32)
HOST = "127.0.0.1"
SERVER_CORE = "0"
LOAD_CORE = "1"

REQUEST_BODY = {"parameters": {"name": "World"}}
EXPECTED_GREETING = "Hello World!"

# Targets the daemon must meet; bare figures are reported for context only.
RATIO_TARGET = {"hypercorn": 0.8, "uvicorn": 0.75}
P50_DELTA_TARGET_MS = 0.3
COLD_START_TARGET_S = 0.5
IDLE_RSS_TARGET_MIB = 60.0
# Capture must cost little and lose nothing (issue 15): the default daemon (Realtime,
# full capture) against the bare app, per server, by the median of the paired runs...
REALTIME_BARE_TARGET = {"hypercorn": 0.88, "uvicorn": 0.7}
# ... and, with a 1 ms-CPU step, Realtime against MemoryOnly.
CPU_RATIO_TARGET = 0.97
COLD_STARTS = 3  # the cold start figure is the median of this many starts

START_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.005
WARMUP_REQUESTS = 20
STOP_GRACE_S = 5.0
# A capturing daemon flushes its queue on SIGTERM before it exits; give it the time.
CAPTURE_STOP_GRACE_S = 60.0
# After each wrk run against the capturing daemon, wait (bounded) until its capture
# queue is empty, so its writer never runs while the next target is measured.
CAPTURE_SETTLE_TIMEOUT_S = 60.0
STDERR_TAIL_LINES = 20


class TargetError(Exception):
    """A target never became ready or died; the run is meaningless, so abort."""

    def __init__(self, message: str, tail: str) -> None:
        super().__init__(message)
        self.tail = tail


@dataclass
class WrkResult:
    conns: int
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int | None = None
    non_2xx: int = 0
    socket_errors: int = 0
    error: str | None = None


@dataclass
class CaptureMetrics:
    """The capture figures of one /metrics scrape (absent series count as zero)."""

    written: float  # serving_capture_events_total: records the sink has stored
    dropped: dict[str, float]  # serving_capture_dropped_total by reason
    queue_depth: float  # serving_capture_queue_depth

    @property
    def dropped_total(self) -> float:
        return sum(self.dropped.values())


@dataclass
class CaptureOutcome:
    """What the capturing daemon kept of the load: /metrics under load, runs.db after exit."""

    after_32: CaptureMetrics | None = None  # scraped right after the last 32-connection wrk run
    # Seconds, per wrk run (warm-up first), from the end of the run until the capture
    # queue was empty: the capture work the run left behind.
    settle_s: list[float | None] = field(default_factory=list)
    exit_status: int | None = None  # after SIGTERM; None if it had to be killed
    exit_s: float | None = None  # SIGTERM to exit (includes the final flush)
    flushed: dict[str, int] | None = None  # its `capture_flushed` log line: written, dropped
    rows: int | None = None  # rows of the `runs` table after exit
    rows_by_status: dict[str, int] = field(default_factory=dict)
    code_rows: int | None = None  # rows of the `code` table (one capture record per version)
    # Requests it answered with 2xx: the harness's own start-up POSTs plus every wrk
    # run's requests minus its non-2xx, warm-up included.
    requests_2xx: int | None = None
    requests_non_2xx: int = 0
    # The daemon's own count of POST /invoke replies by status (serving_requests_total),
    # scraped after the last run: it includes the replies wrk never read.
    invoke_replies: dict[str, int] = field(default_factory=dict)
    # wrk stops with up to `connections` requests in flight and never counts their
    # replies; the daemon still runs (or cancels) them, and captures each one.
    uncounted_bound: int = 0
    error: str | None = None

    @property
    def rows_minus_requests(self) -> int | None:
        if self.rows is None or self.requests_2xx is None:
            return None
        return self.rows - self.requests_2xx


@dataclass
class TargetResult:
    server: str
    target: str
    pid: int
    server_pid: int
    ready_s: float
    cold_start_s: float
    idle_rss_mib: float
    tree_rss_mib: float
    runs: list[WrkResult] = field(default_factory=list)
    runtime: str | None = None  # the daemon's SERVING_RUNTIME as /info reports it
    warmup: WrkResult | None = None  # the unmeasured warm-up run (counted for capture)
    startup_invokes: int = 0  # POST /invoke answered 200 while starting (cold start, warm-up)
    startup_invokes_other: int = 0  # ... answered with any other status
    capture: CaptureOutcome | None = None  # CAPTURE_TARGETS only
    pair_runs: list[WrkResult] = field(default_factory=list)  # its paired runs, in order
    interleaved_runs: list[WrkResult] = field(default_factory=list)  # its interleaved rounds, in order
    # CPU microseconds per 2xx request of each interleaved round; None: the round is invalid.
    interleaved_cpu_us: list[float | None] = field(default_factory=list)
    cold_starts_s: list[float] = field(default_factory=list)  # every start's; cold_start_s is their median

    def run_at(self, conns: int) -> WrkResult | None:
        return next((r for r in self.runs if r.conns == conns), None)


@dataclass
class Running:
    """A started target plus what we need to measure, probe and kill it."""

    server: str
    target: str
    port: int
    proc: subprocess.Popen[bytes]
    stdout: IO[bytes]
    stderr: IO[bytes]
    started_at: float
    invokes_ok: int = 0  # POST /invoke answered 200 by wait_for
    invokes_other: int = 0  # POST /invoke answered otherwise by wait_for

    @property
    def label(self) -> str:
        return f"{self.target}/{self.server}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """Ask the kernel rather than guess, so parallel runs never collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def target_command(server: str, target: str, port: int, home: str) -> tuple[list[str], dict[str, str]]:
    pin = ["taskset", "-c", SERVER_CORE]
    env = dict(os.environ)
    if target == "bare":
        cmd = [
            sys.executable,
            str(BENCH / "bare_app.py"),
            "--server",
            server,
            "--port",
            str(port),
        ]
        return [*pin, *cmd], env
    # The runtime and what it captures are the target's, never the caller's shell's.
    for key in [k for k in env if k == "SERVING_RUNTIME" or k.startswith("SERVING_CAPTURE_")]:
        del env[key]
    runtime = RUNTIME_ENV[target]
    if runtime is not None:
        env["SERVING_RUNTIME"] = runtime
    env.update(
        SERVING_PIPELINE=pipeline_for(target),
        # A fresh home per target: the realtime runtime captures every run into
        # $SERVING_HOME/runs.db, which must neither grow across runs nor land in ~.
        SERVING_HOME=home,
        SERVING_HOST=HOST,
        SERVING_PORT=str(port),
        SERVING_SERVER=server,
        SERVING_LOG_FORMAT="json",
        SERVING_ACCESS_LOG="false",
    )
    return [*pin, sys.executable, "-m", "serving"], env


def pipeline_for(target: str) -> str:
    """BENCH_PIPELINE replaces the hello pipeline (`daemon`, `daemon-realtime`);
    `daemon-sync` exists to pin the sync form."""
    if PIPELINES[target] == HELLO_PIPELINE:
        return os.environ.get("BENCH_PIPELINE", HELLO_PIPELINE)
    return PIPELINES[target]


def spawn(server: str, target: str, stdout: IO[bytes], stderr: IO[bytes], home: str) -> Running:
    """Own session so teardown can signal the whole tree the target may fork."""
    port = free_port()
    cmd, env = target_command(server, target, port, home)
    started_at = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    return Running(server, target, port, proc, stdout, stderr, started_at)


def tail(stream: IO[bytes], lines: int = STDERR_TAIL_LINES) -> str:
    stream.flush()
    stream.seek(0)
    text = stream.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def output_tail(running: Running) -> str:
    """Prefer stderr, but structured loggers often write to stdout only."""
    return tail(running.stderr) or tail(running.stdout)


def stop(running: Running) -> None:
    """SIGTERM the group, then SIGKILL what is left: never leak a server.

    Continued after the SIGTERM, in case an interleaved round left it stopped."""
    pgid = running.proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        if sig == signal.SIGTERM:
            _continue(running)
        if _wait_group_gone(running, STOP_GRACE_S):
            break


def _wait_group_gone(running: Running, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running.proc.poll()  # reap our direct child so it stops counting
        if not _group_members(running.proc.pid):
            return True
        time.sleep(0.02)
    return False


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in a process group.

    ``killpg(pgid, 0)`` is not enough: orphaned zombies keep answering it
    when PID 1 in a container does not reap them.
    """
    members = []
    for pid, (state, pgrp) in _proc_stats().items():
        if pgrp == pgid and state != "Z":
            members.append(pid)
    return members


@contextmanager
def started(server: str, target: str, client: httpx.Client) -> Iterator[tuple[Running, TargetResult]]:
    """Output goes to temp files, not pipes: a chatty server would otherwise
    block on a full pipe nobody reads, and skew or hang the run."""
    with (
        tempfile.TemporaryFile() as stdout,
        tempfile.TemporaryFile() as stderr,
        tempfile.TemporaryDirectory(prefix="bench-home-") as home,
    ):
        earlier = [first_answer(server, target, client) for _ in range(COLD_STARTS - 1)]
        running = spawn(server, target, stdout, stderr, home)
        try:
            result = measure_startup(running, client)
            result.cold_starts_s = [*earlier, result.cold_start_s]
            result.cold_start_s = statistics.median(result.cold_starts_s)
            yield running, result
            if result.capture is not None:
                finish_capture(running, result, Path(home), client)
        finally:
            stop(running)


def first_answer(server: str, target: str, client: httpx.Client) -> float:
    """One more cold start of the target, in a home of its own, stopped at once.

    A single start is one sample of whatever the host did in that half second (the
    first start of an hour loads every file from disk); the figure checked is the
    median of COLD_STARTS starts, the last of which is the one measured afterwards.
    """
    with (
        tempfile.TemporaryFile() as stdout,
        tempfile.TemporaryFile() as stderr,
        tempfile.TemporaryDirectory(prefix="bench-home-") as home,
    ):
        running = spawn(server, target, stdout, stderr, home)
        try:
            wait_for(running, client, "GET", "/readyz")
            check_payload(running, wait_for(running, client, "POST", "/invoke"))
            return time.perf_counter() - running.started_at
        finally:
            stop(running)


# --------------------------------------------------------------------------- probing


def _fail(running: Running, why: str, phase: str = "failed to start") -> TargetError:
    return TargetError(f"{running.label} {phase}: {why}", output_tail(running))


def _check_alive(running: Running, phase: str = "failed to start") -> None:
    code = running.proc.poll()
    if code is not None:
        raise _fail(running, f"process exited with status {code}", phase)


def wait_for(running: Running, client: httpx.Client, method: str, path: str) -> httpx.Response:
    """Poll until 200; a refused connection just means 'not listening yet'."""
    deadline = running.started_at + START_TIMEOUT_S
    last = "no response"
    while time.perf_counter() < deadline:
        _check_alive(running)
        try:
            body = REQUEST_BODY if method == "POST" else None
            response = client.request(method, running.url + path, json=body)
            if method == "POST":  # each one is a run the daemon may capture
                if response.status_code == 200:
                    running.invokes_ok += 1
                else:
                    running.invokes_other += 1
            if response.status_code == 200:
                return response
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}"
        time.sleep(POLL_INTERVAL_S)
    raise _fail(running, f"{method} {path} not 200 within {START_TIMEOUT_S:.0f}s ({last})")


def check_payload(running: Running, response: httpx.Response) -> None:
    """Refuse to benchmark a target that does not do the same work."""
    try:
        greeting = response.json()["outputs"]["greeting"]
    except (ValueError, KeyError, TypeError):
        greeting = None
    if greeting != EXPECTED_GREETING:
        raise _fail(running, f"unexpected /invoke body: {response.text[:200]}")


def measure_startup(running: Running, client: httpx.Client) -> TargetResult:
    """Cold start ends at the first useful answer, not at the first open port."""
    wait_for(running, client, "GET", "/readyz")
    ready_s = time.perf_counter() - running.started_at
    first = wait_for(running, client, "POST", "/invoke")
    cold_start_s = time.perf_counter() - running.started_at
    check_payload(running, first)
    for _ in range(WARMUP_REQUESTS):
        check_payload(running, wait_for(running, client, "POST", "/invoke"))
    pid = server_pid(running.proc.pid, running.port)
    result = TargetResult(
        server=running.server,
        target=running.target,
        pid=running.proc.pid,
        server_pid=pid,
        ready_s=ready_s,
        cold_start_s=cold_start_s,
        idle_rss_mib=rss_mib(pid),
        tree_rss_mib=sum(rss_mib(p) for p in [running.proc.pid, *descendants(running.proc.pid)]),
        runtime=daemon_runtime(running, client),
        startup_invokes=running.invokes_ok,
        startup_invokes_other=running.invokes_other,
        capture=CaptureOutcome() if running.target in CAPTURE_TARGETS else None,
    )
    expected = EXPECTED_RUNTIME.get(running.target)
    if expected is not None and result.runtime != expected:
        raise _fail(running, f"/info reports runtime {result.runtime!r}, expected {expected!r}")
    return result


def daemon_runtime(running: Running, client: httpx.Client) -> str | None:
    """Which runtime served: the figures depend on it (capture or not)."""
    if running.target == "bare":
        return None
    try:
        return str(client.get(running.url + "/info").json().get("runtime"))
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


# --------------------------------------------------------------------------- /proc


def rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else 0.0


def _read_stat(entry: Path) -> list[str] | None:
    """Fields of /proc/<pid>/stat after ``comm`` (state is index 0).

    ``comm`` may contain spaces and parens, so split after the last ')'.
    """
    try:
        return (entry / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _proc_entries() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _read_stat(entry)) is not None:
            yield int(entry.name), fields


def _proc_stats() -> dict[int, tuple[str, int]]:
    return {pid: (fields[0], int(fields[2])) for pid, fields in _proc_entries()}


def _parent_map() -> dict[int, int]:
    return {pid: int(fields[1]) for pid, fields in _proc_entries()}


def descendants(root: int) -> list[int]:
    """Breadth-first, so deeper processes come later in the list."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parent_map().items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    queue = [root]
    while queue:
        for child in sorted(children.get(queue.pop(0), [])):
            found.append(child)
            queue.append(child)
    return found


def tree_cpu_s(root: int) -> float:
    """CPU seconds of `root` and its descendants, every thread, from schedstat.

    schedstat counts the time a thread actually ran (hypervisor steal is not in it),
    per thread, in ns: finer than /proc/PID/stat's clock ticks, which at a few
    thousand requests a round would round away the differences we look for.
    A thread or process that exits between two readings takes its time with it.
    """
    total = 0
    for pid in [root, *descendants(root)]:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue  # gone since descendants() listed it
        for task in tasks:
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _holds_socket(pid: int, inodes: set[str]) -> bool:
    wanted = {f"socket:[{inode}]" for inode in inodes}
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in wanted:
                return True
        except OSError:
            continue
    return False


def server_pid(root: int, port: int) -> int:
    """The pid that serves is the deepest one holding the listening socket.

    A supervisor (hypercorn/uvicorn with workers, a reloader) also holds the
    socket but serves nothing; its RSS would understate the real server's.
    """
    inodes = _listening_inodes(port)
    holders = [p for p in [root, *descendants(root)] if _holds_socket(p, inodes)]
    return holders[-1] if holders else root


# --------------------------------------------------------------------------- capture

_SAMPLE = re.compile(r"^(serving_capture_\w+?)(?:\{([^}]*)\})?\s+(\S+)\s*$", re.MULTILINE)
_REASON = re.compile(r'reason="([^"]*)"')
SETTLE_POLL_S = 0.025


def parse_capture_metrics(text: str) -> CaptureMetrics:
    """The capture series of a Prometheus text page; a counter never incremented has no line."""
    written = depth = 0.0
    dropped: dict[str, float] = {}
    for name, labels, value in _SAMPLE.findall(text):
        if name == "serving_capture_events_total":
            written = float(value)
        elif name == "serving_capture_queue_depth":
            depth = float(value)
        elif name == "serving_capture_dropped_total":
            reason = _REASON.search(labels or "")
            key = reason.group(1) if reason else "?"
            dropped[key] = dropped.get(key, 0.0) + float(value)
    return CaptureMetrics(written=written, dropped=dropped, queue_depth=depth)


_INVOKE_REPLIES = re.compile(r"^serving_requests_total\{([^}]*)\}\s+(\S+)\s*$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_invoke_replies(text: str) -> dict[str, int]:
    """POST /invoke replies by status, from the daemon's own HTTP counter."""
    replies: dict[str, int] = {}
    for labels, value in _INVOKE_REPLIES.findall(text):
        found = dict(_LABEL.findall(labels))
        if found.get("method") == "POST" and found.get("route") == "/invoke":
            status = found.get("status", "?")
            replies[status] = replies.get(status, 0) + int(float(value))
    return replies


def scrape_capture(running: Running, client: httpx.Client) -> CaptureMetrics:
    """A /metrics page the capturing daemon cannot serve ends the run, as a death would."""
    try:
        response = client.get(running.url + "/metrics")
        response.raise_for_status()
    except httpx.HTTPError as exc:
        _check_alive(running, phase="died under load")
        why = f"GET /metrics: {type(exc).__name__}: {exc}"
        raise _fail(running, why, phase="failed under load") from None
    return parse_capture_metrics(response.text)


def settle_capture(running: Running, client: httpx.Client, since: float) -> float | None:
    """Seconds from `since` until the capture queue is empty and the written count has
    stopped moving (the last batch is popped before it is written); None on timeout.

    Run after every wrk run against the capturing daemon: its writer thread must not
    take core 0 from the next target's run.
    """
    deadline = time.perf_counter() + CAPTURE_SETTLE_TIMEOUT_S
    previous: CaptureMetrics | None = None
    while time.perf_counter() < deadline:
        current = scrape_capture(running, client)
        if (
            previous is not None
            and current.queue_depth == 0
            and previous.queue_depth == 0
            and current.written == previous.written
        ):
            return time.perf_counter() - since
        previous = current
        time.sleep(SETTLE_POLL_S)
    return None


def served_requests(result: TargetResult) -> tuple[int | None, int, int]:
    """(2xx replies, other replies, replies wrk may have left uncounted) over every run."""
    runs = [
        run
        for run in (result.warmup, *result.runs, *result.pair_runs, *result.interleaved_runs)
        if run is not None
    ]
    if any(run.requests is None for run in runs):
        return None, 0, 0  # a wrk run failed: its requests are unknown
    ok = result.startup_invokes + sum((run.requests or 0) - run.non_2xx for run in runs)
    other = result.startup_invokes_other + sum(run.non_2xx for run in runs)
    return ok, other, sum(run.conns for run in runs)


def finish_capture(running: Running, result: TargetResult, home: Path, client: httpx.Client) -> None:
    """SIGTERM the capturing daemon, wait for it to flush and exit, then count what it kept."""
    outcome = result.capture
    assert outcome is not None
    outcome.requests_2xx, outcome.requests_non_2xx, outcome.uncounted_bound = served_requests(result)
    try:
        outcome.invoke_replies = parse_invoke_replies(client.get(running.url + "/metrics").text)
    except httpx.HTTPError as exc:
        outcome.error = f"/metrics before SIGTERM: {type(exc).__name__}"
    progress(f"  stop {running.label} (SIGTERM, wait for the capture flush)")
    sent = time.perf_counter()
    try:
        os.killpg(running.proc.pid, signal.SIGTERM)
        _continue(running)  # a stopped daemon would not act on it
        outcome.exit_status = running.proc.wait(timeout=CAPTURE_STOP_GRACE_S)
        outcome.exit_s = time.perf_counter() - sent
        _wait_group_gone(running, STOP_GRACE_S)
    except ProcessLookupError:
        outcome.error = "the daemon was gone before SIGTERM"
    except subprocess.TimeoutExpired:
        outcome.error = f"no exit within {CAPTURE_STOP_GRACE_S:g} s of SIGTERM; killed"
        stop(running)
    outcome.flushed = flushed_line(running)
    try:
        outcome.rows, outcome.rows_by_status, outcome.code_rows = count_runs(home / "runs.db")
    except sqlite3.Error as exc:
        outcome.error = f"{outcome.error + '; ' if outcome.error else ''}runs.db: {exc}"


def flushed_line(running: Running) -> dict[str, int] | None:
    """The daemon's last `capture_flushed` log line (JSON logs): written and dropped."""
    found = None
    for stream in (running.stdout, running.stderr):
        stream.flush()
        stream.seek(0)
        for line in stream.read().decode(errors="replace").splitlines():
            if '"capture_flushed"' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            found = {key: int(record.get(key, 0)) for key in ("written", "dropped")}
    return found


def count_runs(path: Path) -> tuple[int, dict[str, int], int]:
    if not path.exists():
        raise sqlite3.OperationalError(f"{path.name} does not exist")
    with closing(sqlite3.connect(path)) as conn:
        by_status = dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
        code = conn.execute("SELECT count(*) FROM code").fetchone()[0]
    return sum(by_status.values()), by_status, int(code)


# --------------------------------------------------------------------------- wrk

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(output: str, conns: int) -> WrkResult:
    percentiles = {float(p): float(value) * _UNIT_MS[unit] for p, value, unit in _PERCENTILE.findall(output)}
    rps = _RPS.search(output)
    requests = _REQUESTS.search(output)
    non_2xx = _NON_2XX.search(output)
    errors = _SOCKET_ERRORS.search(output)
    result = WrkResult(
        conns=conns,
        rps=float(rps.group(1)) if rps else None,
        p50_ms=percentiles.get(50.0),
        p99_ms=percentiles.get(99.0),
        requests=int(requests.group(1)) if requests else None,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )
    if result.rps is None or result.p50_ms is None or result.p99_ms is None:
        result.error = "could not parse wrk output"
    return result


def wrk_command(running: Running, conns: int, duration: float, timeout: str | None = None) -> list[str]:
    """Load from the other core, so client and server never fight for a CPU."""
    return [
        "taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{duration:g}s",
        *(["--timeout", timeout] if timeout else []),
        "--latency", "-s", str(LUA_SCRIPT), f"{running.url}/invoke",
    ]  # fmt: skip


def run_wrk(running: Running, conns: int, duration: float) -> WrkResult:
    cmd = wrk_command(running, conns, duration)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        return WrkResult(conns=conns, error=f"wrk exited {done.returncode}: {done.stderr.strip()}")
    result = parse_wrk(done.stdout, conns)
    _check_alive(running, phase="died under load")
    return result


# --------------------------------------------------------------------------- orchestration


def bench_server(
    server: str,
    targets: list[str],
    duration: float,
    warmup: float,
    pairs: int = 0,
    pair_duration: float = 3,
    interleaved_rounds: int = 0,
    slice_s: float = SLICE_S,
) -> list[TargetResult]:
    """All targets stay up and take turns, so drift hits them equally.

    The order reverses at each connection level (ABBA; with four targets
    ABCD then DCBA), so every target has the same mean position and every pair
    swaps order once: a linear trend such as thermal throttling is spread
    evenly instead of always penalising one side.  After each run against the
    capturing daemon the harness waits until its capture queue is empty, so
    no target is measured while that daemon's writer still works on core 0.
    """
    with (
        httpx.Client(timeout=5.0) as client,
        _all_started(server, targets, client) as live,
    ):
        for running, result in live:
            result.warmup = run_wrk(running, max(CONNECTIONS), warmup)
            _after_run(running, result, client)
        long_runs = [(running, result) for running, result in live if running.target not in PAIRS_ONLY]
        for index, conns in enumerate(CONNECTIONS):
            order = long_runs if index % 2 == 0 else long_runs[::-1]
            for running, result in order:
                progress(f"  wrk {running.label} c={conns} {duration:g}s")
                result.runs.append(run_wrk(running, conns, duration))
                _after_run(running, result, client, scrape=conns == max(CONNECTIONS))
        by_target = {result.target: (running, result) for running, result in live}
        for group in PAIR_GROUPS:
            present = [by_target[t] for t in group if t in by_target]
            if pairs and len(present) > 1:
                run_pairs(present, client, pairs, pair_duration)
        for interleaved in INTERLEAVED_GROUPS:
            if interleaved_rounds and all(t in by_target for t in interleaved):
                run_interleaved(
                    [by_target[t] for t in interleaved], client, interleaved_rounds, pair_duration, slice_s
                )
        return [result for _, result in live]


def run_pairs(
    both: list[tuple[Running, TargetResult]], client: httpx.Client, pairs: int, duration: float
) -> None:
    """Short back-to-back runs of a group of targets at 32 connections, `pairs` times
    (bare, MemoryOnly and Realtime; MemoryOnly and Realtime with the 1 ms step).

    On a shared VM the speed of the core moves by +-25 % from one second to the next
    (bench/README.md, "Paired runs"), so one long run per target compares two different
    machines. Runs a few seconds apart see nearly the same one: each round gives a
    ratio, and the median of the rounds is the figure checked against the target. The
    order reverses at every round, so no target always runs first.
    """
    conns = max(CONNECTIONS)
    for index in range(pairs):
        order = both if index % 2 == 0 else both[::-1]
        for running, result in order:
            progress(f"  pair {index + 1}/{pairs}: wrk {running.label} c={conns} {duration:g}s")
            result.pair_runs.append(run_wrk(running, conns, duration))
            _after_run(running, result, client, scrape=True)


def run_interleaved(
    pair: list[tuple[Running, TargetResult]],
    client: httpx.Client,
    rounds: int,
    duration: float,
    slice_s: float = SLICE_S,
) -> None:
    """Rounds in which both targets of a pair (baseline first) are loaded at the same time,
    each by its own wrk, but take turns on the core, and are compared by CPU time per request.

    Paired runs a few seconds apart still see different machines: the core's speed
    moves by up to 2x within seconds, so their ratios scatter by +-7 %. Two targets
    loaded over the same window see the same machine. Were both left to run at once,
    the kernel would switch between them every few ms and each would find its caches
    cold, which inflates both figures; so only one runs at a time: every `slice_s`
    seconds the running one is SIGSTOPped and the other SIGCONTed. Each then has the
    core to itself for slices of `slice_s` (0.1 s), while drift, which moves over
    seconds, still hits both alike. CPU time per request does not depend on how the window was split.
    The CPU time is read after a fixed pause, before any /metrics scrape (which costs
    the daemon CPU), so both targets' windows are alike; the usual settle and scrape
    follow. Whatever happens, both targets are continued before this returns or raises.
    """
    conns = max(CONNECTIONS)
    names = "+".join(running.label for running, _ in pair)
    for index in range(rounds):
        # Neither always starts first: the order of the wrk starts and of the slices alternates.
        order = pair if index % 2 == 0 else pair[::-1]
        first, second = (running for running, _ in order)
        progress(
            f"  interleaved {index + 1}/{rounds}: wrk {names} c={conns} {duration:g}s each, "
            f"taking turns every {slice_s:g} s, {first.target} first"
        )
        before = [tree_cpu_s(running.proc.pid) for running, _ in pair]
        trees = {running.port: process_tree(running) for running in (first, second)}
        procs: dict[int, subprocess.Popen[str]] = {}
        try:
            try:
                _signal_tree(trees[second.port], signal.SIGSTOP)
                for running in (first, second):
                    procs[running.port] = subprocess.Popen(
                        wrk_command(running, conns, duration, timeout=INTERLEAVED_WRK_TIMEOUT),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                _take_turns(trees[first.port], trees[second.port], duration, slice_s)
            finally:  # a stopped target must never be left behind
                for running in (first, second):
                    _continue(running, trees[running.port])
            runs = {port: _finish_wrk(proc, conns, duration) for port, proc in procs.items()}
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        ended = time.perf_counter()
        time.sleep(INTERLEAVED_SETTLE_S)
        after = [tree_cpu_s(running.proc.pid) for running, _ in pair]
        for (running, result), start, end in zip(pair, before, after, strict=True):
            _check_alive(running, phase="died under load")
            run = runs[running.port]
            # wrk saw pauses of a slice: its latency figures mean nothing here.
            run.p50_ms = run.p99_ms = None
            result.interleaved_runs.append(run)
            result.interleaved_cpu_us.append(_cpu_per_request(end - start, run))
        for running, result in pair:
            _after_run(running, result, client, scrape=True, ended=ended)


def _take_turns(running: list[int], waiting: list[int], duration: float, slice_s: float) -> None:
    """Until `duration` has passed, every `slice_s` seconds stop the running process tree
    and continue the waiting one. Either may be left stopped: the caller continues both."""
    end = time.monotonic() + duration
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(slice_s, left))
        if time.monotonic() >= end:
            break
        _signal_tree(running, signal.SIGSTOP)
        _signal_tree(waiting, signal.SIGCONT)
        running, waiting = waiting, running


def process_tree(running: Running) -> list[int]:
    """The target's process and its descendants, as they are now."""
    return [running.proc.pid, *descendants(running.proc.pid)]


def _signal_tree(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue  # gone: nothing to stop or continue


def _continue(running: Running, pids: list[int] | None = None) -> None:
    """SIGCONT the target's group and tree (and `pids`, listed when it was stopped).

    A SIGSTOPped process does not act on SIGTERM until it is continued, so every
    teardown path calls this; continuing a running process does nothing."""
    with suppress(ProcessLookupError):
        os.killpg(running.proc.pid, signal.SIGCONT)
    _signal_tree(sorted({*(pids or []), *process_tree(running)}), signal.SIGCONT)


def _finish_wrk(proc: subprocess.Popen[str], conns: int, duration: float) -> WrkResult:
    try:
        stdout, stderr = proc.communicate(timeout=duration + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return WrkResult(conns=conns, error=f"wrk did not end within {duration + 60:g} s")
    if proc.returncode != 0:
        return WrkResult(conns=conns, error=f"wrk exited {proc.returncode}: {stderr.strip()}")
    return parse_wrk(stdout, conns)


def _cpu_per_request(cpu_s: float, run: WrkResult) -> float | None:
    """Microseconds per 2xx request; None when an error reply or a socket error means the
    CPU time was spent on something else than the requests wrk counted."""
    if run.error or run.requests is None or run.non_2xx or run.socket_errors:
        return None
    ok = run.requests - run.non_2xx
    return cpu_s / ok * 1e6 if ok > 0 else None


def _after_run(
    running: Running,
    result: TargetResult,
    client: httpx.Client,
    scrape: bool = False,
    ended: float | None = None,
) -> None:
    """For the capturing daemon: read /metrics at once (if asked), then let it settle.

    `ended` is when the load stopped, if that was earlier than now (interleaved rounds)."""
    if result.capture is None:
        return
    ended = time.perf_counter() if ended is None else ended
    if scrape:
        result.capture.after_32 = scrape_capture(running, client)
    result.capture.settle_s.append(settle_capture(running, client, ended))


@contextmanager
def _all_started(
    server: str, targets: list[str], client: httpx.Client
) -> Iterator[list[tuple[Running, TargetResult]]]:
    """Start targets one at a time so each cold start has the core to itself."""
    with ExitStack() as stack:
        live = []
        for target in targets:
            progress(f"  start {target}/{server}")
            live.append(stack.enter_context(started(server, target, client)))
        yield live


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- reporting


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(results: list[TargetResult]) -> None:
    width = TARGET_WIDTH
    print(f"{'server':<10} {'target':<{width}} {'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}  notes")
    for result in results:
        for run in result.runs:
            notes = _run_notes(run)
            print(
                f"{result.server:<10} {result.target:<{width}} {run.conns:>5} {_fmt(run.rps, '.0f'):>10} "
                f"{_fmt(run.p50_ms, '.3f'):>8} {_fmt(run.p99_ms, '.3f'):>8}  {notes}"
            )


def _run_notes(run: WrkResult) -> str:
    notes = []
    if run.error:
        notes.append(run.error)
    if run.non_2xx:
        notes.append(f"{run.non_2xx} non-2xx")
    if run.socket_errors:
        notes.append(f"{run.socket_errors} socket errors")
    return "; ".join(notes)


# Summary-key prefix of each daemon variant compared with bare; "" keeps the
# checked daemon's keys (ratio_32, p50_delta_1_ms) as they always were.
VARIANT_PREFIX = {"daemon": "", "daemon-sync": "sync_", "daemon-realtime": "realtime_"}
SUMMARY_WIDTH = len("daemon-realtime p50 delta @1 conn (- bare)")


def summarize(server: str, results: list[TargetResult]) -> dict[str, Any]:
    """Compare within one server only: cross-server ratios mean nothing."""
    by_target = {r.target: r for r in results if r.server == server}
    bare = by_target.get("bare")
    summary: dict[str, Any] = {"server": server}
    for name, result in by_target.items():
        summary[f"{name.replace('-', '_')}_cold_start_s"] = result.cold_start_s
        summary[f"{name.replace('-', '_')}_idle_rss_mib"] = result.idle_rss_mib
    for name, prefix in VARIANT_PREFIX.items():
        variant = by_target.get(name)
        if variant and bare:
            summary[f"{prefix}ratio_32"] = _ratio(
                variant.run_at(max(CONNECTIONS)), bare.run_at(max(CONNECTIONS))
            )
            summary[f"{prefix}p50_delta_1_ms"] = _delta(
                variant.run_at(min(CONNECTIONS)), bare.run_at(min(CONNECTIONS))
            )
    if "daemon" in by_target:
        summary["checks"] = _checks(server, summary)
    realtime = by_target.get(CAPTURE_TARGET)
    if realtime is not None:
        summary.update(_capture_summary(server, realtime, by_target.get("daemon"), bare))
    cpu, cpu_realtime = (by_target.get(t) for t in CPU_TARGETS)
    if cpu is not None and cpu_realtime is not None:
        summary.update(_cpu_summary(cpu_realtime, cpu))
    return summary


def _pair_ratios(daemon: TargetResult, other: TargetResult | None) -> tuple[list[float | None], float | None]:
    """Each paired round's req/s ratio of `daemon` over `other`, and their median."""
    if other is None:
        return [], None
    ratios = [_ratio(a, b) for a, b in zip(daemon.pair_runs, other.pair_runs, strict=False)]
    known = sorted(r for r in ratios if r is not None)
    return ratios, statistics.median(known) if known else None


def _interleaved_summary(prefix: str, subject: TargetResult, baseline: TargetResult | None) -> dict[str, Any]:
    """The interleaved rounds of a pair as flat keys `<prefix>_interleaved_*`; none without rounds.

    The ratio is baseline CPU per request over the subject's, so that like the req/s
    ratios it is 1 for no cost and lower is worse."""
    if baseline is None or not subject.interleaved_runs:
        return {}
    ratios: list[float | None] = [
        None if b is None or s is None or s <= 0 else b / s
        for b, s in zip(baseline.interleaved_cpu_us, subject.interleaved_cpu_us, strict=False)
    ]
    known = sorted(r for r in ratios if r is not None)
    quartiles = [_quantile(known, 0.25), _quantile(known, 0.75)] if known else None
    return {
        f"{prefix}_interleaved_ratios": ratios,
        f"{prefix}_interleaved_median": statistics.median(known) if known else None,
        f"{prefix}_interleaved_quartiles": quartiles,
        f"{prefix}_interleaved_range": [known[0], known[-1]] if known else None,
        f"{prefix}_interleaved_cpu_us": {
            baseline.target: baseline.interleaved_cpu_us,
            subject.target: subject.interleaved_cpu_us,
        },
    }


def _kept_everything(outcome: CaptureOutcome) -> bool | None:
    """Every reply the daemon counted has its row, and the rows plus the code rows are
    the records its log says it wrote."""
    if outcome.rows is None or not outcome.invoke_replies:
        return None
    replies = sum(outcome.invoke_replies.values())
    flushed = outcome.flushed
    written = None if flushed is None or outcome.code_rows is None else flushed["written"]
    return outcome.rows == replies and (written is None or written == outcome.rows + outcome.code_rows)


def _cpu_summary(realtime: TargetResult, memory: TargetResult) -> dict[str, Any]:
    ratios, median = _pair_ratios(realtime, memory)
    interleaved = _interleaved_summary("cpu_realtime_memory", realtime, memory)
    outcome = realtime.capture or CaptureOutcome()
    after = outcome.after_32
    dropped = after.dropped_total if after else None
    checks: dict[str, bool | None] = {
        f"realtime/memory req/s @32 >= {CPU_RATIO_TARGET} (median of pairs)": (
            None if median is None else median >= CPU_RATIO_TARGET
        ),
    }
    checks.update(
        _shared_checks(
            "realtime/memory", CPU_RATIO_TARGET, interleaved, "cpu_realtime_memory", dropped, outcome
        )
    )
    return {
        "cpu_realtime_memory_pair_ratios": ratios,
        "cpu_realtime_memory_pair_median": median,
        **interleaved,
        "cpu_capture_dropped": dropped,
        "cpu_capture_rows": outcome.rows,
        "cpu_checks": checks,
    }


def _capture_summary(
    server: str, realtime: TargetResult, memory: TargetResult | None, bare: TargetResult | None
) -> dict[str, Any]:
    """The default daemon against bare (checked) and MemoryOnly, and what capture kept;
    figures flat, as the other keys."""
    peak = max(CONNECTIONS)
    outcome = realtime.capture or CaptureOutcome()
    after = outcome.after_32
    pair_ratios, pair_median = _pair_ratios(realtime, memory)
    bare_ratios, bare_median = _pair_ratios(realtime, bare)
    interleaved = _interleaved_summary("realtime_bare", realtime, bare)
    out: dict[str, Any] = {
        "realtime_memory_ratio_32": _ratio(realtime.run_at(peak), memory.run_at(peak)) if memory else None,
        "realtime_memory_pair_ratios": pair_ratios,
        "realtime_memory_pair_median": pair_median,
        "realtime_bare_pair_ratios": bare_ratios,
        "realtime_bare_pair_median": bare_median,
        **interleaved,
        "capture_written_32": after.written if after else None,
        "capture_dropped_32": after.dropped_total if after else None,
        "capture_queue_depth_32": after.queue_depth if after else None,
        "capture_rows": outcome.rows,
        "capture_requests_2xx": outcome.requests_2xx,
        "capture_rows_minus_requests": outcome.rows_minus_requests,
        "capture_uncounted_bound": outcome.uncounted_bound,
        "capture_invoke_replies": outcome.invoke_replies,
    }
    # The median of the paired runs when there are any: one long run per side is at the
    # mercy of whatever else the host runs meanwhile (see run_pairs).
    one_run = _ratio(realtime.run_at(peak), bare.run_at(peak)) if bare else None
    ratio = bare_median if bare_median is not None else one_run
    dropped = out["capture_dropped_32"]
    basis = "median of pairs" if bare_median is not None else "one run each"
    target = REALTIME_BARE_TARGET[server]
    checks: dict[str, bool | None] = {
        f"realtime/bare req/s @32 >= {target} ({basis})": None if ratio is None else ratio >= target,
    }
    checks.update(_shared_checks("realtime/bare", target, interleaved, "realtime_bare", dropped, outcome))
    out["realtime_checks"] = checks
    return out


def _shared_checks(
    label: str,
    target: float,
    interleaved: dict[str, Any],
    prefix: str,
    dropped: float | None,
    outcome: CaptureOutcome,
) -> dict[str, bool | None]:
    """The checks both capture pairs share after their req/s line: the interleaved median
    (when rounds ran), no record dropped, every reply in the store."""
    checks: dict[str, bool | None] = {}
    if interleaved:  # `_interleaved_summary(prefix, ...)`: empty when no round ran
        median = interleaved[f"{prefix}_interleaved_median"]
        key = f"{label} CPU per request >= {target} (median of interleaved rounds)"
        checks[key] = None if median is None else median >= target
    checks["capture records dropped == 0"] = None if dropped is None else dropped == 0
    checks["every reply has its row in runs.db"] = _kept_everything(outcome)
    return checks


def _ratio(daemon: WrkResult | None, bare: WrkResult | None) -> float | None:
    if not (daemon and bare and daemon.rps is not None and bare.rps):
        return None
    return daemon.rps / bare.rps


def _delta(daemon: WrkResult | None, bare: WrkResult | None) -> float | None:
    if not (daemon and bare and daemon.p50_ms is not None and bare.p50_ms is not None):
        return None
    return daemon.p50_ms - bare.p50_ms


def _checks(server: str, summary: dict[str, Any]) -> dict[str, bool | None]:
    def check(key: str, ok: Any) -> bool | None:
        value = summary.get(key)
        return None if value is None else bool(ok(value))

    return {
        f"ratio@32 >= {RATIO_TARGET[server]}": check("ratio_32", lambda v: v >= RATIO_TARGET[server]),
        f"p50 delta@1 <= {P50_DELTA_TARGET_MS} ms": check(
            "p50_delta_1_ms", lambda v: v <= P50_DELTA_TARGET_MS
        ),
        f"cold start <= {COLD_START_TARGET_S} s": check(
            "daemon_cold_start_s", lambda v: v <= COLD_START_TARGET_S
        ),
        f"idle RSS <= {IDLE_RSS_TARGET_MIB:g} MiB": check(
            "daemon_idle_rss_mib", lambda v: v <= IDLE_RSS_TARGET_MIB
        ),
    }


def print_summary(summary: dict[str, Any], results: list[TargetResult]) -> None:
    server = summary["server"]
    print(f"\n[{server}]")
    for name, prefix in VARIANT_PREFIX.items():
        if f"{prefix}ratio_32" not in summary:
            continue
        note = f"  ({VARIANT_NOTE[name]})" if name in VARIANT_NOTE else ""
        label = f"{name}/bare req/s @32 conns"
        print(f"  {label:<{SUMMARY_WIDTH}}: {_fmt(summary[f'{prefix}ratio_32'], '.3f')}{note}")
        label = f"{name} p50 delta @1 conn (- bare)"
        print(f"  {label:<{SUMMARY_WIDTH}}: {_fmt(summary[f'{prefix}p50_delta_1_ms'], '+.3f')} ms{note}")
    for result in (r for r in results if r.server == server):
        pid_note = (
            ""
            if result.server_pid == result.pid
            else f" (server pid {result.server_pid}, tree {result.tree_rss_mib:.1f} MiB)"
        )
        print(
            f"  {result.target:<{TARGET_WIDTH}} cold start {result.cold_start_s:.3f} s "
            f"(median of {', '.join(f'{c:.3f}' for c in result.cold_starts_s)}; "
            f"readyz {result.ready_s:.3f} s), "
            f"idle RSS {result.idle_rss_mib:.1f} MiB{pid_note}"
            + (f", runtime {result.runtime}" if result.runtime else "")
        )
    for name, ok in summary.get("checks", {}).items():
        print(f"  {_verdict(ok)}  daemon {name}")
    realtime = next((r for r in results if r.server == server and r.target == CAPTURE_TARGET), None)
    if realtime is not None and realtime.capture is not None:
        print_capture(summary, realtime.capture)
    cpu = next((r for r in results if r.server == server and r.target == CPU_TARGETS[1]), None)
    if cpu is not None and "cpu_checks" in summary:
        print_cpu(summary, cpu.capture or CaptureOutcome())


def _print_rounds(
    label: str, ratios: list[float | None], median: float | None, none: str = "no pair completed"
) -> None:
    known = sorted(r for r in ratios if r is not None)
    spread = (
        f"quartiles {_quantile(known, 0.25):.3f}..{_quantile(known, 0.75):.3f}, "
        f"range {known[0]:.3f}..{known[-1]:.3f}"
        if known
        else none
    )
    print(f"  {label:<{SUMMARY_WIDTH}}: median {_fmt(median, '.3f')} ({spread})")
    print("    each round, in order: " + " ".join(_fmt(r, ".3f") for r in ratios))


def _print_interleaved(summary: dict[str, Any], prefix: str, label: str) -> None:
    """The interleaved rounds next to the paired ones, with each side's CPU per request."""
    ratios = summary.get(f"{prefix}_interleaved_ratios")
    if ratios is None:
        return
    label = f"{label}, {len(ratios)} interleaved rounds (CPU per request)"
    _print_rounds(label, ratios, summary.get(f"{prefix}_interleaved_median"), none="no round valid")
    for target, per_round in (summary.get(f"{prefix}_interleaved_cpu_us") or {}).items():
        print(f"    {target} CPU us per request, each round: " + " ".join(_fmt(u, ".1f") for u in per_round))


def print_cpu(summary: dict[str, Any], outcome: CaptureOutcome) -> None:
    ratios = summary.get("cpu_realtime_memory_pair_ratios") or []
    _print_rounds(
        f"cpu-realtime/cpu, {len(ratios)} pairs", ratios, summary.get("cpu_realtime_memory_pair_median")
    )
    _print_interleaved(summary, "cpu_realtime_memory", "cpu-realtime/cpu")
    if outcome.rows is not None:
        replies = sum(outcome.invoke_replies.values())
        print(f"  cpu-realtime runs.db: {outcome.rows} rows, {replies} POST /invoke replies")
    for name, ok in summary.get("cpu_checks", {}).items():
        print(f"  {_verdict(ok)}  cpu-realtime {name}")


def _verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else "PASS" if ok else "FAIL"


def print_capture(summary: dict[str, Any], outcome: CaptureOutcome) -> None:
    label = f"{CAPTURE_TARGET}/daemon req/s @32 conns"
    print(
        f"  {label:<{SUMMARY_WIDTH}}: {_fmt(summary.get('realtime_memory_ratio_32'), '.3f')}  (one run each)"
    )
    ratios = summary.get("realtime_bare_pair_ratios") or []
    if ratios:
        label = f"{CAPTURE_TARGET}/bare, {len(ratios)} rounds"
        _print_rounds(label, ratios, summary.get("realtime_bare_pair_median"))
    _print_interleaved(summary, "realtime_bare", f"{CAPTURE_TARGET}/bare")
    ratios = summary.get("realtime_memory_pair_ratios") or []
    if ratios:
        label = f"{CAPTURE_TARGET}/daemon, {len(ratios)} rounds"
        _print_rounds(label, ratios, summary.get("realtime_memory_pair_median"))
    after = outcome.after_32
    if after is not None:
        reasons = ", ".join(f"{k} {v:g}" for k, v in sorted(after.dropped.items()))
        print(
            f"  capture, /metrics right after the 32-conn run: {after.written:g} records written, "
            f"{after.dropped_total:g} dropped{f' ({reasons})' if reasons else ''}, "
            f"queue depth {after.queue_depth:g}"
        )
    if outcome.settle_s:
        settled = ", ".join("timeout" if s is None else f"{s:.2f}" for s in outcome.settle_s)
        print(f"  capture queue empty after each run (warm-up, then in run order): {settled} s")
    if outcome.exit_s is not None:
        flushed = outcome.flushed
        log = f"; its log: written {flushed['written']}, dropped {flushed['dropped']}" if flushed else ""
        print(f"  after SIGTERM: exit status {outcome.exit_status} in {outcome.exit_s:.2f} s{log}")
    if outcome.rows is not None:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(outcome.rows_by_status.items()))
        diff = outcome.rows_minus_requests
        print(
            f"  runs.db: {outcome.rows} rows ({statuses}) vs {_fmt_int(outcome.requests_2xx)} 2xx "
            f"requests ({'n/a' if diff is None else f'{diff:+d}'}; wrk leaves up to "
            f"{outcome.uncounted_bound} in flight uncounted when it stops"
            + (f"; {outcome.requests_non_2xx} non-2xx" if outcome.requests_non_2xx else "")
            + f"); code rows {outcome.code_rows}"
        )
        if outcome.invoke_replies:
            replies = ", ".join(f"{k} {v}" for k, v in sorted(outcome.invoke_replies.items()))
            same = outcome.rows == sum(outcome.invoke_replies.values())
            print(
                f"  the daemon's own count of POST /invoke replies (serving_requests_total): {replies}; "
                f"rows {'match' if same else 'DO NOT match'} it"
            )
        if outcome.flushed is not None and outcome.code_rows is not None:
            stored = outcome.rows + outcome.code_rows
            same = "matches" if stored == outcome.flushed["written"] else "DOES NOT match"
            print(f"  runs.db rows + code rows = {stored}: {same} the records its log says it wrote")
    if outcome.error:
        print(f"  capture: {outcome.error}")
    for name, ok in summary.get("realtime_checks", {}).items():
        print(f"  {_verdict(ok)}  {CAPTURE_TARGET} {name}")


def _quantile(ordered: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted, non-empty list."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _fmt_int(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def write_json(
    path: Path,
    args: argparse.Namespace,
    results: list[TargetResult],
    summaries: list[dict[str, Any]],
    jobs: dict[str, Any] | None = None,
) -> None:
    payload: dict[str, Any] = {
        "duration_s": args.duration,
        "pairs": args.pairs,
        "pair_duration_s": args.pair_duration,
        "interleaved_rounds": args.interleaved_rounds,
        "slice_s": args.slice,
        "warmup_s": args.warmup,
        "connections": list(CONNECTIONS),
        "targets": args.targets,
        "runtimes": {t: EXPECTED_RUNTIME[t] for t in args.targets if t in EXPECTED_RUNTIME},
        "loadavg": os.getloadavg(),
        "python": sys.version.split()[0],
        "results": [asdict(r) for r in results],
        "summary": summaries,
    }
    if jobs is not None:
        payload["jobs"] = jobs
    path.write_text(json.dumps(payload, indent=2) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of wrk warm-up per target (default 2)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma list from: hypercorn,uvicorn",
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma list from: {','.join(TARGETS)}",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=10,
        help="rounds of short runs of bare, daemon and daemon-realtime (and cpu, cpu-realtime) "
        "at 32 conns (default 10; 0: none)",
    )
    parser.add_argument("--pair-duration", type=float, default=3.0, help="seconds per paired run (default 3)")
    parser.add_argument(
        "--interleaved-rounds",
        type=int,
        default=8,
        help="then rounds of bare with daemon-realtime, and cpu with cpu-realtime, loaded at once "
        "for --pair-duration but taking turns on the core, compared by CPU per request (default 8; 0: none)",
    )
    parser.add_argument(
        "--slice",
        type=float,
        default=SLICE_S,
        help=f"seconds each target of an interleaved round runs in turn (default {SLICE_S:g})",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument(
        "--jobs",
        action="store_true",
        help="then run bench/jobs.py (async jobs, long-poll, SSE fan-out) with its defaults",
    )
    args = parser.parse_args(argv)
    for flag, count in (("--pairs", args.pairs), ("--interleaved-rounds", args.interleaved_rounds)):
        if count < 0:
            parser.error(f"{flag}: expected a number >= 0, got {count}")
    if not 0 < args.slice < args.pair_duration:
        parser.error(f"--slice: expected seconds > 0 and below --pair-duration, got {args.slice:g}")
    for flag, value in (
        ("--duration", args.duration),
        ("--warmup", args.warmup),
        ("--pair-duration", args.pair_duration),
    ):
        if value < 1 or value != int(value):  # wrk's -d takes whole seconds only
            parser.error(f"{flag}: expected a whole number of seconds >= 1, got {value:g}")
    args.servers = _choices(parser, "--servers", args.servers, SERVERS)
    args.targets = _choices(parser, "--targets", args.targets, TARGETS)
    return args


def _choices(parser: argparse.ArgumentParser, flag: str, raw: str, allowed: tuple[str, ...]) -> list[str]:
    picked = [item.strip() for item in raw.split(",") if item.strip()]
    unknown = sorted(set(picked) - set(allowed))
    if unknown or not picked:
        parser.error(f"{flag}: expected a comma list from {','.join(allowed)}, got {raw!r}")
    return [item for item in allowed if item in picked]  # canonical order


def preflight() -> str | None:
    """Pinning is the method; without two cores the figures would mislead."""
    for tool in ("taskset", "wrk"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH"
    if not {0, 1} <= os.sched_getaffinity(0):
        return "cores 0 and 1 must both be available for pinning"
    return None


def runnable_servers(servers: list[str]) -> list[str]:
    available = []
    for server in servers:
        if importlib.util.find_spec(server) is None:
            print(
                f"note: {server} is not importable in {sys.executable}; skipping it",
                file=sys.stderr,
            )
        else:
            available.append(server)
    return available


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = preflight()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    # make/CI stop us with SIGTERM; turn it into an exception so `finally` reaps children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: list[TargetResult] = []
    load_start = os.getloadavg()[0]
    try:
        for server in runnable_servers(args.servers):
            progress(f"[{server}]")
            results.extend(
                bench_server(
                    server,
                    args.targets,
                    args.duration,
                    args.warmup,
                    args.pairs,
                    args.pair_duration,
                    args.interleaved_rounds,
                    args.slice,
                )
            )
    except TargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.tail:
            print(f"--- output tail ---\n{exc.tail}", file=sys.stderr)
        return 1
    servers = sorted({r.server for r in results}, key=SERVERS.index)
    summaries = [summarize(server, results) for server in servers]
    print(f"\n1-minute load average: {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print_table(results)
    for summary in summaries:
        print_summary(summary, results)
    jobs: dict[str, Any] | None = None
    if args.jobs:
        status, jobs = run_jobs_bench(want_json=args.json is not None)
        if status != 0:
            return status
    if args.json:
        write_json(args.json, args, results, summaries, jobs)
    return 0


def run_jobs_bench(want_json: bool) -> tuple[int, dict[str, Any] | None]:
    """Run bench/jobs.py in its own process.

    A subprocess rather than an import: jobs.py pins itself to the load core and
    raises its fd limit, which must not leak into this process; and inside
    bench/ the name `jobs` would shadow the daemon's own `jobs` package.
    """
    print(flush=True)
    progress("[jobs]")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "jobs.json"
        cmd = [sys.executable, str(BENCH / "jobs.py"), *(["--json", str(out)] if want_json else [])]
        status = subprocess.run(cmd, cwd=ROOT, check=False).returncode
        data = json.loads(out.read_text()) if want_json and out.exists() else None
    return status, data


if __name__ == "__main__":
    sys.exit(main())
