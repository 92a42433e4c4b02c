"""Benchmark the daemon's async-job path: submit rate, completion latency, SSE fan-out.

bench/run.py measures sync `POST /invoke`.  An async job pays for things a sync
call never does (a record in the store, a task, an event log, a second request
or a stream to learn the outcome), and a stream is held open for as long as the
job runs, so the questions differ: how fast can jobs be accepted and worked off,
how long until a client *sees* a job finish, and what does one job watched by
many clients cost.  See bench/README.md for the method.

Usage: python bench/jobs.py [--submits 5000] [--concurrency 32] [--samples 200]
                            [--fanout 1000] [--lead-in S] [--sections LIST]
                            [--server hypercorn|uvicorn] [--client-pool per-worker|shared]
                            [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse
from run import (
    HOST,
    LOAD_CORE,
    ROOT,
    SERVER_CORE,
    Running,
    TargetError,
    daemon_runtime,
    free_port,
    output_tail,
    rss_mib,
    server_pid,
    stop,
    wait_for,
)

HELLO_PIPELINE = "examples/hello.py:hello"
# A module name rather than bench/pipelines_jobs.py: it works with daemons from before
# commit ac55e1a too, which let this file shadow their `jobs` package (see run.py).
FANOUT_PIPELINE = "bench.pipelines_jobs:ticker"
SERVERS = ("hypercorn", "uvicorn")
SECTIONS = ("submit", "latency", "fanout")

HELLO_BODY = {"parameters": {"name": "World"}}
TERMINAL_EVENTS = frozenset({"run_completed", "run_failed", "run_canceled"})

# Daemon defaults we must stay above (serving/settings.py); we raise only what the load needs.
DEFAULT_MAX_QUEUE = 1024
DEFAULT_MAX_JOBS = 10_000

LATENCY_WARMUP = 10  # submit->completion round trips before the measured ones
DRAIN_SAMPLE = 100  # random jobs long-polled to confirm the drain
DRAIN_POLL_S = 0.005
WAIT_S = 5.0  # ?wait= for the latency section (the brief's 5 s)
DRAIN_WAIT_S = 30.0
FANOUT_TIMEOUT_S = 120.0
RSS_SAMPLE_S = 0.02
FD_HEADROOM = 256  # beyond one fd per stream: pool, epoll, stdio, the daemon's own


# --------------------------------------------------------------------------- results


@dataclass
class SubmitResult:
    submits: int
    concurrency: int
    client_pool: str
    elapsed_s: float
    per_s: float
    statuses: dict[str, int]
    non_202: int
    reply_p50_ms: float | None
    reply_p99_ms: float | None
    backlog_at_end: dict[str, int] | None
    drain_s: float | None
    sample_statuses: dict[str, int]
    client_cpu_pct: float
    daemon_cpu_pct: float


@dataclass
class LatencySeries:
    via: str
    samples: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    not_completed: int


@dataclass
class FanoutResult:
    streams: int
    lead_in_s: float
    established: int
    errors: dict[str, int]
    connect_all_s: float | None
    attached_before_finish: int
    job_status: str | None
    events_expected: int | None
    events_per_stream: dict[str, int]
    complete_streams: int
    missing_seq_streams: int
    duplicate_seq_streams: int
    gap_events: int
    terminal_after_finish_p50_ms: float | None
    terminal_after_finish_max_ms: float | None
    terminal_spread_ms: float | None
    rss_before_mib: float
    rss_peak_mib: float
    rss_after_mib: float
    daemon_fds_before: int
    daemon_fds_peak: int
    # Still open 0.5 s after every stream ended and every client closed: the
    # daemon keeps a connection whose client left until its keep-alive timeout.
    daemon_fds_after: int
    listen_overflows: int
    client_cpu_pct: float
    daemon_cpu_pct: float


@dataclass
class Report:
    server: str = SERVERS[0]
    python: str = sys.version.split()[0]
    settings: dict[str, str] = field(default_factory=dict)
    client_pool: str = "per-worker"
    runtime: str | None = None  # the daemon's runtime as /info reports it
    # 1-minute load average as each section starts: on a shared machine, a
    # figure taken while something else ran is not the daemon's alone.
    loadavg: dict[str, float] = field(default_factory=dict)
    submit: SubmitResult | None = None
    latency: list[LatencySeries] = field(default_factory=list)
    fanout: FanoutResult | None = None


# --------------------------------------------------------------------------- helpers


def progress_note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: a real observation, never an interpolated one."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def loadavg_1m() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


def rfc3339_epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listen_overflows() -> int:
    """Kernel count of connections dropped because an accept queue was full.

    System-wide, so only a delta taken around our own burst means anything.  A
    drop costs the client a SYN retransmit: 1 s, then 2 s more, and so on.
    """
    try:
        header, values = Path("/proc/net/netstat").read_text().splitlines()[:2]
        return int(values.split()[header.split().index("ListenOverflows")])
    except (OSError, ValueError):
        return -1


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class CpuMeter:
    """CPU used by us and by the daemon over one section, as % of one core.

    Both sides are pinned to one core each, so 100 % on either side means that
    side is the bottleneck and the figure measures it, not the other.
    """

    def __init__(self, daemon_pid: int) -> None:
        self.daemon_pid = daemon_pid
        self.wall = time.perf_counter()
        self.ours = time.process_time()
        self.theirs = cpu_seconds(daemon_pid)

    def read(self) -> tuple[float, float]:
        wall = max(time.perf_counter() - self.wall, 1e-9)
        ours = (time.process_time() - self.ours) / wall * 100
        theirs = (cpu_seconds(self.daemon_pid) - self.theirs) / wall * 100
        return round(ours, 1), round(theirs, 1)


# --------------------------------------------------------------------------- process set-up


def pin_to_load_core() -> None:
    """The daemon has core 0; the load generator must never compete with it."""
    os.sched_setaffinity(0, {int(LOAD_CORE)})


def raise_fd_limit(needed: int) -> tuple[int, int]:
    """One socket per stream: lift the soft limit towards the hard one if it is short.

    The daemon is started after this, so it inherits the same limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        progress_note(f"warning: RLIMIT_NOFILE is {soft} (hard {hard}); {needed} wanted, streams may fail")
    return soft, hard


def daemon_settings(args: argparse.Namespace) -> dict[str, str]:
    """Defaults, except what the load needs: a queue and a job table big enough for it."""
    jobs_created = args.submits + 2 * (args.samples + LATENCY_WARMUP) + 1
    settings = {
        "SERVING_SERVER": args.server,
        "SERVING_LOG_FORMAT": "json",
        "SERVING_ACCESS_LOG": "false",
        "SERVING_MAX_QUEUE": str(max(DEFAULT_MAX_QUEUE, args.submits)),
    }
    if jobs_created > DEFAULT_MAX_JOBS:
        settings["SERVING_MAX_JOBS"] = str(jobs_created)
    return settings


def spawn_daemon(pipeline: str, settings: dict[str, str], stdout: Any, stderr: Any, home: str) -> Running:
    port = free_port()
    env = {
        **os.environ,
        **settings,
        "SERVING_HOME": home,  # captured runs go to a throwaway runs.db, not ~/.serving
        "SERVING_PIPELINE": pipeline,
        "SERVING_HOST": HOST,
        "SERVING_PORT": str(port),
    }
    cmd = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "serving"]
    started_at = time.perf_counter()
    # Own session, so `run.stop` can signal the whole group.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    return Running(settings["SERVING_SERVER"], pipeline, port, proc, stdout, stderr, started_at)


@contextmanager
def daemon(pipeline: str, settings: dict[str, str], report: Report) -> Iterator[tuple[Running, int]]:
    """A ready daemon and the pid that serves; always torn down (SIGTERM, then SIGKILL)."""
    with (
        tempfile.TemporaryFile() as stdout,
        tempfile.TemporaryFile() as stderr,
        tempfile.TemporaryDirectory(prefix="bench-home-") as home,
    ):
        running = spawn_daemon(pipeline, settings, stdout, stderr, home)
        try:
            with httpx.Client(timeout=5.0) as client:
                wait_for(running, client, "GET", "/readyz")
                report.runtime = daemon_runtime(running, client)
            yield running, server_pid(running.proc.pid, running.port)
        finally:
            stop(running)


def check_alive(running: Running, phase: str) -> None:
    code = running.proc.poll()
    if code is not None:
        raise TargetError(
            f"daemon ({running.target}) {phase}: exited with status {code}", output_tail(running)
        )


def skip_failed_sniffio_imports() -> None:
    """Stop httpcore from retrying `import sniffio` on every request.

    httpcore imports sniffio inside `current_async_library()`, called for each
    lock and event it makes; since anyio stopped depending on sniffio the import
    fails each time, and Python retries a failed import with a full sys.path scan
    (encode/httpcore#1103).  That alone cost ~0.5 ms of client CPU per request
    here.  We only run on asyncio, so answer the question once.
    """
    if importlib.util.find_spec("sniffio") is None:
        stub = types.ModuleType("sniffio")
        stub.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]
        sys.modules["sniffio"] = stub


def async_client(running: Running, connections: int, timeout: float = 30.0) -> httpx.AsyncClient:
    """HTTP/1.1, a pool of `connections`; plain HTTP, so no TLS context to build."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=running.url, limits=limits, timeout=timeout, verify=False)


@asynccontextmanager
async def client_pool(
    running: Running, callers: int, shared: bool, timeout: float = 30.0
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One client per concurrent caller, each with one connection (default), or one
    client whose pool is `callers` wide for all of them (`--client-pool shared`).

    Either way there are `callers` connections.  Per caller is the default because
    httpcore's pool does O(pool size) upkeep on every request (a liveness probe
    per idle connection; encode/httpcore#1035): with one pool of 32 the client
    used a whole core for ~350 req/s and set the pace, not the daemon.
    """
    clients = (
        [async_client(running, callers, timeout)] * callers
        if shared
        else [async_client(running, 1, timeout) for _ in range(callers)]
    )
    try:
        yield clients
    finally:
        for client in dict.fromkeys(clients):
            await client.aclose()


# --------------------------------------------------------------------------- a. submit throughput


async def submit_all(clients: list[httpx.AsyncClient], n: int) -> tuple[list[str], Counter[str], list[float]]:
    """`n` async submissions from one worker per client, sharing one counter."""
    pending = iter(range(n))
    job_ids: list[str] = []
    statuses: Counter[str] = Counter()
    replies_ms: list[float] = []

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in pending:
            started = time.perf_counter()
            try:
                response = await client.post("/invoke", params={"mode": "async"}, json=HELLO_BODY)
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
                continue
            replies_ms.append((time.perf_counter() - started) * 1000)
            statuses[str(response.status_code)] += 1
            if response.status_code == 202:
                job_ids.append(response.json()["job_id"])

    await asyncio.gather(*(worker(client) for client in clients))
    return job_ids, statuses, replies_ms


async def job_counts(client: httpx.AsyncClient) -> dict[str, int] | None:
    response = await client.get("/status")
    return response.json().get("jobs") if response.status_code == 200 else None


async def final_status(client: httpx.AsyncClient, job_id: str, wait: float) -> str:
    response = await client.get(f"/jobs/{job_id}", params={"wait": wait})
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    return str(response.json().get("status", "?"))


async def wait_drained(client: httpx.AsyncClient, last_job: str | None) -> None:
    """Long-poll the job whose 202 came last (the queue is FIFO, so it starts among the
    last), then poll /status until nothing is running or queued: every job has finished."""
    if last_job is not None:
        await final_status(client, last_job, DRAIN_WAIT_S)
    while (counts := await job_counts(client)) is not None and (counts["running"] or counts["queued"]):
        await asyncio.sleep(DRAIN_POLL_S)


async def sample_statuses(clients: list[httpx.AsyncClient], job_ids: list[str]) -> Counter[str]:
    """Final status of a random sample of jobs, long-polled in case one is still going."""
    sample = random.sample(job_ids, min(DRAIN_SAMPLE, len(job_ids)))
    chunks = [sample[i :: len(clients)] for i in range(len(clients))]

    async def check(client: httpx.AsyncClient, ids: list[str]) -> list[str]:
        return [await final_status(client, job_id, DRAIN_WAIT_S) for job_id in ids]

    results = await asyncio.gather(*(check(c, ids) for c, ids in zip(clients, chunks, strict=True)))
    return Counter(status for statuses in results for status in statuses)


async def bench_submit(running: Running, pid: int, n: int, concurrency: int, shared: bool) -> SubmitResult:
    async with client_pool(running, concurrency, shared) as clients:
        meter = CpuMeter(pid)
        started = time.perf_counter()
        job_ids, statuses, replies_ms = await submit_all(clients, n)
        elapsed = time.perf_counter() - started
        client_cpu, daemon_cpu = meter.read()
        backlog = await job_counts(clients[0])
        await wait_drained(clients[0], job_ids[-1] if job_ids else None)
        drain_s = time.perf_counter() - started - elapsed
        sample = await sample_statuses(clients, job_ids)
    return SubmitResult(
        submits=n,
        concurrency=concurrency,
        client_pool="shared" if shared else "per-worker",
        elapsed_s=round(elapsed, 3),
        per_s=round(n / elapsed, 1),
        statuses=dict(statuses),
        non_202=n - statuses.get("202", 0),
        reply_p50_ms=percentile(replies_ms, 50),
        reply_p99_ms=percentile(replies_ms, 99),
        backlog_at_end=backlog,
        drain_s=round(drain_s, 3) if job_ids else None,
        sample_statuses=dict(sample),
        client_cpu_pct=client_cpu,
        daemon_cpu_pct=daemon_cpu,
    )


# --------------------------------------------------------------------------- b. completion latency


async def submit_one(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post("/invoke", params={"mode": "async"}, json=body)
    if response.status_code != 202:
        raise RuntimeError(f"async submit answered {response.status_code}: {response.text[:200]}")
    return str(response.json()["job_id"])


async def via_long_poll(client: httpx.AsyncClient) -> bool:
    """Submit, then `GET /jobs/{id}?wait=`: done when the reply says completed."""
    job_id = await submit_one(client, HELLO_BODY)
    response = await client.get(f"/jobs/{job_id}", params={"wait": WAIT_S})
    return response.status_code == 200 and response.json().get("status") == "completed"


async def via_sse(client: httpx.AsyncClient) -> bool:
    """Submit, then follow `/stream/{id}`: done at the terminal event."""
    job_id = await submit_one(client, HELLO_BODY)
    async with aconnect_sse(client, "GET", f"/stream/{job_id}") as source:
        async for event in source.aiter_sse():
            if event.event in TERMINAL_EVENTS:
                return event.event == "run_completed"
    return False


async def measure_series(
    client: httpx.AsyncClient, via: str, probe: Callable[[httpx.AsyncClient], Awaitable[bool]], samples: int
) -> LatencySeries:
    """One round trip at a time: this is latency with an idle daemon, not under load."""
    timings_ms: list[float] = []
    not_completed = 0
    for index in range(LATENCY_WARMUP + samples):
        started = time.perf_counter()
        completed = await probe(client)
        if index < LATENCY_WARMUP:
            continue
        timings_ms.append((time.perf_counter() - started) * 1000)
        not_completed += not completed
    return LatencySeries(
        via=via,
        samples=samples,
        p50_ms=percentile(timings_ms, 50),
        p99_ms=percentile(timings_ms, 99),
        max_ms=max(timings_ms, default=None),
        not_completed=not_completed,
    )


async def bench_latency(running: Running, samples: int) -> list[LatencySeries]:
    async with async_client(running, 1) as client:  # one connection: sequential anyway
        return [
            await measure_series(client, f"GET /jobs/{{id}}?wait={WAIT_S:g}", via_long_poll, samples),
            await measure_series(client, "GET /stream/{id} (SSE)", via_sse, samples),
        ]


# --------------------------------------------------------------------------- c. SSE fan-out


@dataclass
class StreamLog:
    """What one subscriber saw, with wall-clock times comparable to the job record's."""

    status: int | None = None
    error: str | None = None
    connected_at: float | None = None
    seqs: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    terminal_at: float | None = None


async def follow(client: httpx.AsyncClient, job_id: str) -> StreamLog:
    log = StreamLog()
    try:
        async with aconnect_sse(client, "GET", f"/stream/{job_id}") as source:
            log.status = source.response.status_code
            log.connected_at = time.time()
            async for event in source.aiter_sse():
                log.seqs.append(int(event.id) if event.id and event.id.isdigit() else -1)
                log.types.append(event.event)
                if event.event in TERMINAL_EVENTS:
                    log.terminal_at = time.time()
                    break
    except (httpx.HTTPError, SSEError) as exc:
        log.error = type(exc).__name__
    return log


class Sampler:
    """Polls the daemon's VmRSS and open fds while the fan-out runs; keeps the peaks."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss_peak = rss_mib(pid)
        self.fds_peak = open_fds(pid)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        task = asyncio.create_task(self._loop())
        try:
            yield self
        finally:
            task.cancel()
            self._sample()

    def _sample(self) -> None:
        self.rss_peak = max(self.rss_peak, rss_mib(self.pid))
        self.fds_peak = max(self.fds_peak, open_fds(self.pid))

    async def _loop(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(RSS_SAMPLE_S)


def sequence_faults(logs: list[StreamLog], expected: int | None) -> tuple[int, int, int]:
    """Streams that got every seq 1..expected exactly once, and those with holes or repeats."""
    want = list(range(1, expected + 1)) if expected else None
    complete = missing = duplicate = 0
    for log in logs:
        if log.status != 200:
            continue
        seen = [s for s, t in zip(log.seqs, log.types, strict=True) if t != "gap"]
        if len(seen) != len(set(seen)):
            duplicate += 1
        if want is None or set(want) - set(seen):
            missing += 1
        if seen == want:
            complete += 1
    return complete, missing, duplicate


def terminal_delays(logs: list[StreamLog], finished_at: float | None) -> tuple[list[float], float | None]:
    """ms from the record's finished_at to each live stream's terminal event, and the spread.

    Only streams attached before the job finished count: for a late one the
    terminal event is history replay, and its delay measures connecting, not delivery.
    """
    live = [
        log
        for log in logs
        if log.terminal_at is not None and log.connected_at is not None and finished_at is not None
        if log.connected_at < finished_at
    ]
    delays = [(log.terminal_at - finished_at) * 1000 for log in live if log.terminal_at is not None]
    arrivals = [log.terminal_at for log in live if log.terminal_at is not None]
    spread = (max(arrivals) - min(arrivals)) * 1000 if arrivals else None
    return delays, spread


async def bench_fanout(
    running: Running, pid: int, streams: int, lead_in: float, shared: bool
) -> FanoutResult:
    rss_before, fds_before = rss_mib(pid), open_fds(pid)
    sampler = Sampler(pid)
    overflows = listen_overflows()
    async with client_pool(running, streams, shared, timeout=FANOUT_TIMEOUT_S) as clients:
        meter = CpuMeter(pid)
        async with sampler.running():
            job_id = await submit_one(clients[0], {"parameters": {"lead_in": lead_in}})
            opened = time.time()
            logs = await asyncio.wait_for(
                asyncio.gather(*(follow(client, job_id) for client in clients)), FANOUT_TIMEOUT_S
            )
        client_cpu, daemon_cpu = meter.read()
        overflows = listen_overflows() - overflows
        record = (await clients[0].get(f"/jobs/{job_id}")).json()
    await asyncio.sleep(0.5)  # let the daemon close the streams before the after-reading
    return summarize_fanout(
        logs,
        record,
        (streams, lead_in, opened, overflows),
        (rss_before, sampler, rss_mib(pid), fds_before, open_fds(pid)),
        (client_cpu, daemon_cpu),
    )


def summarize_fanout(
    logs: list[StreamLog],
    record: dict[str, Any],
    run: tuple[int, float, float, int],
    memory: tuple[float, Sampler, float, int, int],
    cpu: tuple[float, float],
) -> FanoutResult:
    streams, lead_in, opened, overflows = run
    rss_before, sampler, rss_after, fds_before, fds_after = memory
    finished_at = rfc3339_epoch(record["finished_at"]) if record.get("finished_at") else None
    terminal_seqs = [log.seqs[-1] for log in logs if log.terminal_at is not None]
    expected = max(terminal_seqs, default=None)
    complete, missing, duplicate = sequence_faults(logs, expected)
    delays, spread = terminal_delays(logs, finished_at)
    connected = [log.connected_at for log in logs if log.connected_at is not None]
    errors = Counter(log.error or f"HTTP {log.status}" for log in logs if log.status != 200)
    return FanoutResult(
        streams=streams,
        lead_in_s=lead_in,
        established=sum(log.status == 200 for log in logs),
        errors=dict(errors),
        connect_all_s=round(max(connected) - opened, 3) if connected else None,
        attached_before_finish=sum(1 for c in connected if finished_at is not None and c < finished_at),
        job_status=record.get("status"),
        events_expected=expected,
        events_per_stream={str(k): v for k, v in sorted(Counter(len(log.seqs) for log in logs).items())},
        complete_streams=complete,
        missing_seq_streams=missing,
        duplicate_seq_streams=duplicate,
        gap_events=sum(log.types.count("gap") for log in logs),
        terminal_after_finish_p50_ms=percentile(delays, 50),
        terminal_after_finish_max_ms=max(delays, default=None),
        terminal_spread_ms=spread,
        rss_before_mib=round(rss_before, 1),
        rss_peak_mib=round(sampler.rss_peak, 1),
        rss_after_mib=round(rss_after, 1),
        daemon_fds_before=fds_before,
        daemon_fds_peak=sampler.fds_peak,
        daemon_fds_after=fds_after,
        listen_overflows=overflows,
        client_cpu_pct=cpu[0],
        daemon_cpu_pct=cpu[1],
    )


# --------------------------------------------------------------------------- orchestration


async def run_sections(args: argparse.Namespace, report: Report) -> None:
    """Hello daemon for submit and latency; a fresh one for fan-out, so its
    memory baseline is not the thousands of job records the first one keeps."""
    if {"submit", "latency"} & set(args.sections):
        with daemon(HELLO_PIPELINE, report.settings, report) as (running, pid):
            if "submit" in args.sections:
                report.loadavg["submit"] = loadavg_1m()
                progress_note(f"  submit: {args.submits} async jobs at concurrency {args.concurrency}")
                report.submit = await bench_submit(
                    running, pid, args.submits, args.concurrency, args.client_pool == "shared"
                )
                check_alive(running, "died during submit")
            if "latency" in args.sections:
                report.loadavg["latency"] = loadavg_1m()
                progress_note(f"  latency: {args.samples} sequential submit->completion, twice")
                report.latency = await bench_latency(running, args.samples)
                check_alive(running, "died during latency")
    if "fanout" in args.sections:
        with daemon(FANOUT_PIPELINE, report.settings, report) as (running, pid):
            report.loadavg["fanout"] = loadavg_1m()
            progress_note(f"  fanout: {args.fanout} SSE streams of one job (lead-in {args.lead_in:g} s)")
            report.fanout = await bench_fanout(
                running, pid, args.fanout, args.lead_in, args.client_pool == "shared"
            )
            check_alive(running, "died during fan-out")


# --------------------------------------------------------------------------- reporting


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    return format(value, spec)


def print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def print_submit(s: SubmitResult) -> None:
    print_rows(
        f"a. async submit throughput ({s.submits} x POST /invoke?mode=async, concurrency {s.concurrency})",
        [
            ("submissions/s", _fmt(s.per_s, ".0f")),
            ("elapsed", f"{s.elapsed_s:.3f} s"),
            ("non-202 replies", f"{s.non_202} ({_fmt(s.statuses)})"),
            ("reply p50 / p99", f"{_fmt(s.reply_p50_ms, '.2f')} / {_fmt(s.reply_p99_ms, '.2f')} ms"),
            ("backlog at last reply", _fmt(s.backlog_at_end)),
            ("time to drain", f"{_fmt(s.drain_s, '.3f')} s after the last reply"),
            ("drain sample statuses", _fmt(s.sample_statuses)),
            ("CPU client / daemon", f"{s.client_cpu_pct:.0f} % / {s.daemon_cpu_pct:.0f} % of a core"),
        ],
    )


def print_latency(series: list[LatencySeries]) -> None:
    print("\nb. submit -> completion observed, sequential, idle daemon")
    print(f"  {'observed via':<28} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  not completed")
    for s in series:
        print(
            f"  {s.via:<28} {s.samples:>5} {_fmt(s.p50_ms, '.2f'):>8} {_fmt(s.p99_ms, '.2f'):>8} "
            f"{_fmt(s.max_ms, '.2f'):>8}  {s.not_completed}"
        )


def print_fanout(f: FanoutResult) -> None:
    print_rows(
        f"c. SSE fan-out ({f.streams} streams of one ~2 s job with progress, lead-in {f.lead_in_s:g} s)",
        [
            ("established", f"{f.established}/{f.streams}" + (f" ({_fmt(f.errors)})" if f.errors else "")),
            ("all connected after", f"{_fmt(f.connect_all_s, '.3f')} s"),
            ("attached before finish", f"{f.attached_before_finish}"),
            ("job status", _fmt(f.job_status)),
            ("events per stream", f"{_fmt(f.events_per_stream)} (expected {_fmt(f.events_expected)})"),
            ("full sequence", f"{f.complete_streams} streams"),
            ("missing / duplicate seq", f"{f.missing_seq_streams} / {f.duplicate_seq_streams} streams"),
            ("gap events", f"{f.gap_events}"),
            (
                "terminal after finished_at",
                f"p50 {_fmt(f.terminal_after_finish_p50_ms, '.1f')} ms, "
                f"max {_fmt(f.terminal_after_finish_max_ms, '.1f')} ms",
            ),
            ("terminal spread", f"{_fmt(f.terminal_spread_ms, '.1f')} ms (first to last stream)"),
            (
                "daemon RSS",
                f"before {f.rss_before_mib:.1f} MiB, peak {f.rss_peak_mib:.1f} MiB, "
                f"after {f.rss_after_mib:.1f} MiB",
            ),
            (
                "daemon open fds",
                f"before {f.daemon_fds_before}, peak {f.daemon_fds_peak}, "
                f"0.5 s after the last stream closed {f.daemon_fds_after}",
            ),
            ("listen queue overflows", f"{f.listen_overflows} (system-wide, during the fan-out)"),
            ("CPU client / daemon", f"{f.client_cpu_pct:.0f} % / {f.daemon_cpu_pct:.0f} % of a core"),
        ],
    )


def print_report(report: Report) -> None:
    settings = " ".join(f"{k}={v}" for k, v in report.settings.items())
    print(
        f"\njobs benchmark: {report.server}, runtime {report.runtime}, "
        f"daemon on core {SERVER_CORE}, client on core {LOAD_CORE}"
    )
    print(f"  settings: {settings}")
    print(f"  client: httpx, {report.client_pool} connection pool(s)")
    print(f"  1-min load average at section start: {_fmt(report.loadavg)}")
    if report.submit:
        print_submit(report.submit)
    if report.latency:
        print_latency(report.latency)
    if report.fanout:
        print_fanout(report.fanout)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=5000, help="async submissions (default 5000)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent submitters (default 32)")
    parser.add_argument(
        "--samples", type=int, default=200, help="latency round trips per method (default 200)"
    )
    parser.add_argument("--fanout", type=int, default=1000, help="SSE streams of one job (default 1000)")
    parser.add_argument(
        "--lead-in",
        type=float,
        default=0.0,
        help="seconds the fan-out job waits before its first tick (default 0)",
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma list from: {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default=SERVERS[0],
        help="the daemon's SERVING_SERVER (default hypercorn)",
    )
    parser.add_argument(
        "--client-pool",
        choices=("per-worker", "shared"),
        default="per-worker",
        help="one 1-connection client per worker/stream (default), or one shared pool",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if not args.sections or set(args.sections) - set(SECTIONS):
        parser.error(f"--sections: expected a comma list from {','.join(SECTIONS)}")
    for name in ("submits", "concurrency", "samples", "fanout"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def event_loop_runner() -> Callable[[Any], Any]:
    """uvloop when available: the client is Python too, and must not be the slower side."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not {0, 1} <= os.sched_getaffinity(0):
        print("error: cores 0 and 1 must both be available for pinning", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pin_to_load_core()
    raise_fd_limit(args.fanout + FD_HEADROOM)
    skip_failed_sniffio_imports()
    report = Report(server=args.server, settings=daemon_settings(args), client_pool=args.client_pool)
    try:
        event_loop_runner()(run_sections(args, report))
    except TargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.tail:
            print(f"--- output tail ---\n{exc.tail}", file=sys.stderr)
        return 1
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
