"""Profile `POST /invoke` in-process: where the daemon's microseconds go, per request.

run.py says how much the daemon costs on top of a bare app; this says what that
cost is made of, so optimisation goes where the time is.  There is no server and
no socket: the ASGI app the daemon serves is built exactly as `serving.cli.serve`
builds it, and awaited directly with a synthetic `POST /invoke` scope, one request
after another on a uvloop loop pinned to one core (the daemon's setting).  What is
left is the daemon's own work plus a tiny driver that stands in for the server.

Method (also in bench/README.md):
1. Time N requests without a profiler: the real µs per request.
2. Run N requests under pyinstrument (statistical; records C calls too) and give
   every sample to the innermost frame that belongs to a component (COMPONENTS).
3. µs of a component = its share of the profiled time x the unprofiled µs/request.
   The profiler slows Python calls more than C code, so shares are approximate.

4. Cross-check: time the async variant, unprofiled, with a setting that switches
   one component off (SERVING_RUNTIME=memory: no capture; SERVING_CANCEL_ON_DISCONNECT
   =false: no watch timer) and compare the saving with that component's row.

The runtime is the daemon's default unless `--runtime` (or SERVING_RUNTIME) names
one; with `--runtime memory` there is no capture, and no capture cross-check.

Usage: python bench/profile_invoke.py [--requests 10000] [--repeats 3]
                                      [--interval 0.0001] [--html DIR] [--no-ablation]
                                      [--runtime realtime|memory]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
# Run as a script, bench/ is sys.path[0], and bench/jobs.py would shadow the
# daemon's `jobs` package; put the repository root there instead.
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

import msgspec  # noqa: E402

from runtimes import create_runtime  # noqa: E402
from serving.app import create_app  # noqa: E402
from serving.cli import runtime_name, runtime_options  # noqa: E402
from serving.loader import load_pipeline  # noqa: E402
from serving.logs import configure_logging  # noqa: E402
from serving.settings import load_settings  # noqa: E402

SERVER_CORE = 0  # same core as the daemon in run.py
RUNTIMES = ("realtime", "memory")
VARIANTS = {
    "async step": "examples/hello.py:hello",
    # A module name, not bench/hello_sync.py: see PIPELINES in run.py.
    "sync step": "bench.hello_sync:hello",
}
BODY = msgspec.json.encode({"parameters": {"name": "World"}})
EXPECTED = b'"greeting":"Hello World!"'
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]
WARMUP = 2000

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


# --------------------------------------------------------------------------- components

# (component, path suffix, function names or None for any) - first match wins.
# A frame that matches nothing inherits its caller's component, so C calls
# (msgspec encode, ContextVar.set, loop.call_later) count where they are made.
COMPONENTS: list[tuple[str, str, frozenset[str] | None]] = [
    ("Prometheus metrics (HTTP, invocations, steps)", "serving/metrics.py", None),
    ("Prometheus metrics (HTTP, invocations, steps)", "jobs/metrics.py", None),
    ("Prometheus metrics (HTTP, invocations, steps)", "prometheus_client/", None),
    ("middleware (request id, error guard)", "serving/middleware.py", None),
    ("middleware (request id, error guard)", "serving/app.py", frozenset({"__call__"})),
    ("body read + decode", "serving/invoke.py", frozenset({"read_body"})),
    # The decode itself is a C call made in `handle`; claim it (and the body's strip()) here.
    ("body read + decode", "<built-in>", frozenset({"Decoder.decode", "bytes.strip"})),
    ("response encode (result -> JSON bytes)", "serving/invoke.py", frozenset({"_reply", "_metadata"})),
    ("disconnect watch (timer per request)", "serving/invoke.py", frozenset({"_run_watching_disconnect"})),
    ("handler glue (Request, headers, checks)", "serving/invoke.py", None),
    ("handler glue (Request, headers, checks)", "starlette/requests.py", None),
    ("limiter (admission, job manager)", "jobs/manager.py", frozenset({"run_sync"})),
    ("limiter (admission, job manager)", "jobs/limits.py", None),
    ("step thread hand-off (submit side)", "runtimes/threads.py", None),
    ("capture (run record, previews, publish)", "runtimes/realtime.py", None),
    ("capture (run record, previews, publish)", "runtimes/logcapture.py", None),
    ("capture (run record, previews, publish)", "capture/", None),
    ("executor (runtime, DAG, run result)", "runtimes/", None),
    ("step body", "examples/hello.py", None),
    ("step body", "bench/hello_sync.py", None),
    (
        "Starlette Response build (headers)",
        "starlette/responses.py",
        frozenset({"__init__", "init_headers", "render"}),
    ),
    ("Starlette Response send (__call__)", "starlette/responses.py", None),
    ("driver (stands in for the server)", "bench/profile_invoke.py", None),
]
EVENT_LOOP = "event loop (scheduling; idle while a thread runs)"
ORDER = [
    *dict.fromkeys(name for name, _, _ in COMPONENTS),
    EVENT_LOOP,
]


def classify(frame: Any) -> str | None:
    path = (frame.file_path or "").replace(os.sep, "/")
    for name, suffix, functions in COMPONENTS:
        if (suffix in path) and (functions is None or frame.function in functions):
            return name
    return None


def attribute(frame: Any, current: str, totals: dict[str, float]) -> None:
    """Give each frame's self time to the innermost enclosing component."""
    current = classify(frame) or current
    children = list(frame.children)
    own = frame.time - sum(child.time for child in children)
    if own > 0:
        totals[current] += own
    for child in children:
        attribute(child, current, totals)


# --------------------------------------------------------------------------- the app


def build_app(spec: str, home: str, overrides: dict[str, Any] | None = None) -> tuple[ASGIApp, str]:
    """The daemon's app and runtime name, built as `serving.cli.serve` builds them:
    default settings, access log off (as in run.py), captured runs kept in `home`."""
    settings = load_settings(
        {}, pipeline=spec, access_log=False, log_format="json", home=home, **(overrides or {})
    )
    configure_logging(settings.log_level, settings.log_format)
    pipeline = load_pipeline(spec)
    runtime = create_runtime(runtime_name(settings, pipeline), runtime_options(settings))
    app: ASGIApp = create_app(pipeline, runtime, settings)
    return app, runtime.name


class Lifespan:
    """Drive the ASGI lifespan protocol so the runtime and job manager start as in the daemon."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lifespan:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self._step("lifespan.startup")
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._step("lifespan.shutdown")
        if self.task is not None:
            await self.task

    async def _step(self, message: str) -> None:
        await self.inbox.put({"type": message})
        reply = await self.outbox.get()
        if reply["type"] != f"{message}.complete":
            raise RuntimeError(f"{message} failed: {reply}")


def invoke_scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/invoke",
        "raw_path": b"/invoke",
        "root_path": "",
        "query_string": b"",
        "headers": HEADERS,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


class Exchange:
    """One request's receive/send: the body once, then block (as a server does
    until the client disconnects); keep what is sent, to check the reply."""

    __slots__ = ("body", "delivered", "status")

    def __init__(self) -> None:
        self.delivered = False
        self.status = 0
        self.body = b""

    async def receive(self) -> dict[str, Any]:
        if not self.delivered:
            self.delivered = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.get_running_loop().create_future()  # never resolves
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.body += message.get("body", b"")


async def drive(app: ASGIApp, requests: int) -> float:
    """Run `requests` requests back to back; returns seconds.  Checks the first and last reply.

    Yields to the loop once per request, as a server does between socket events:
    with an async step nothing else ever suspends, and background tasks (the
    capture publisher's writer) would never run, which no real server allows.
    """
    started = time.perf_counter()
    for index in range(requests):
        exchange = Exchange()
        await app(invoke_scope(), exchange.receive, exchange.send)
        if (index == 0 or index == requests - 1) and (
            exchange.status != 200 or EXPECTED not in exchange.body
        ):
            raise RuntimeError(f"unexpected reply {exchange.status}: {exchange.body[:200]!r}")
        await asyncio.sleep(0)
    return time.perf_counter() - started


# --------------------------------------------------------------------------- measuring


THREAD_GROUPS = (("capture-writer", "capture writer"), ("serving-step", "step workers"))


def thread_group(thread: threading.Thread) -> str:
    if thread is threading.main_thread():
        return "event-loop thread"
    return next((label for prefix, label in THREAD_GROUPS if thread.name.startswith(prefix)), "other threads")


def thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by each group of this process's threads.

    The profiler samples only the event-loop thread; the capture writer and the
    sync step's workers run on the same (pinned) core and take their time from it.
    """
    used: dict[str, float] = defaultdict(float)
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            used[thread_group(thread)] += time.clock_gettime(clock)
        except (OSError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return used


@dataclass
class VariantProfile:
    name: str
    spec: str
    runtime: str
    us_per_request: float
    profiled_us_per_request: float
    shares: dict[str, float]
    capture: dict[str, Any] | None  # publisher status after the runs (realtime runtime)
    thread_us: dict[str, float]  # CPU µs per request by thread group, unprofiled

    def us(self, component: str) -> float:
        return self.shares.get(component, 0.0) * self.us_per_request


def runtime_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Settings overrides for the chosen runtime; none means the daemon's default."""
    return {"runtime": args.runtime} if args.runtime else {}


async def measure(name: str, spec: str, args: argparse.Namespace) -> VariantProfile:
    with tempfile.TemporaryDirectory(prefix="bench-home-") as home:
        return await _measure(name, spec, home, args)


async def _measure(name: str, spec: str, home: str, args: argparse.Namespace) -> VariantProfile:
    from pyinstrument import Profiler

    app, runtime = build_app(spec, home, runtime_overrides(args))
    async with Lifespan(app):
        await drive(app, WARMUP)
        before = thread_cpu()
        runs = [await drive(app, args.requests) for _ in range(args.repeats)]
        after = thread_cpu()
        profiler = Profiler(interval=args.interval, async_mode="disabled")
        profiler.start()
        profiled = await drive(app, args.requests)
        profiler.stop()
        capture = capture_status(app)
    session = profiler.last_session
    if args.html:
        args.html.mkdir(parents=True, exist_ok=True)
        (args.html / f"invoke-{name.replace(' ', '-')}.html").write_text(profiler.output_html())
    totals: dict[str, float] = defaultdict(float)
    root = session.root_frame()
    if root is not None:
        attribute(root, EVENT_LOOP, totals)
    whole = sum(totals.values()) or 1.0
    return VariantProfile(
        name=name,
        spec=spec,
        runtime=runtime,
        us_per_request=statistics.median(runs) / args.requests * 1e6,
        profiled_us_per_request=profiled / args.requests * 1e6,
        shares={k: v / whole for k, v in totals.items()},
        capture=capture,
        thread_us={
            group: (after[group] - before.get(group, 0.0)) / (args.requests * args.repeats) * 1e6
            for group in after
        },
    )


# Settings that switch one component off: timing the app without it, unprofiled,
# checks the profile's share for that component.
ABLATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "SERVING_RUNTIME=memory": ({"runtime": "memory"}, "capture (run record, previews, publish)"),
    "SERVING_CANCEL_ON_DISCONNECT=false": (
        {"cancel_on_disconnect": False},
        "disconnect watch (timer per request)",
    ),
}


async def time_with(spec: str, overrides: dict[str, Any], args: argparse.Namespace) -> float:
    """Unprofiled µs per request with some settings changed."""
    with tempfile.TemporaryDirectory(prefix="bench-home-") as home:
        app, _ = build_app(spec, home, {**runtime_overrides(args), **overrides})
        async with Lifespan(app):
            await drive(app, WARMUP)
            runs = [await drive(app, args.requests) for _ in range(args.repeats)]
    return statistics.median(runs) / args.requests * 1e6


async def ablations(spec: str, args: argparse.Namespace, runtime: str) -> dict[str, float]:
    """Each ablation that changes something: on the memory runtime there is no capture to drop."""
    return {
        label: await time_with(spec, overrides, args)
        for label, (overrides, _) in ABLATIONS.items()
        if overrides.get("runtime") != runtime
    }


def print_ablations(baseline: VariantProfile, timed: dict[str, float]) -> None:
    print(f"\ncross-check, {baseline.name}, unprofiled: the total without one component")
    for label, us in timed.items():
        component = ABLATIONS[label][1]
        print(
            f"  {label:<36} {us:6.1f} µs: saves {baseline.us_per_request - us:5.1f} µs; "
            f"profile share of '{component}': {baseline.us(component):.1f} µs"
        )


def capture_status(app: Any) -> dict[str, Any] | None:
    """Written and dropped capture records: the in-process loop makes runs faster than the
    capture writer stores them, and a dropped record costs less than a queued one."""
    status = getattr(app.state.runtime, "status", None)
    capture = status().get("capture") if status is not None else None
    return {k: capture.get(k) for k in ("written", "dropped", "queued")} if capture else None


# --------------------------------------------------------------------------- reporting


def print_table(profiles: list[VariantProfile]) -> None:
    width = max(len(c) for c in ORDER)
    head = "".join(f" {p.name:>12}" for p in profiles)
    print(f"\n{'µs per request':<{width}}{head}")
    for component in ORDER:
        if all(p.shares.get(component, 0.0) == 0 for p in profiles):
            continue
        cells = "".join(f" {p.us(component):>12.1f}" for p in profiles)
        print(f"{component:<{width}}{cells}")
    print(
        f"{'total (unprofiled, measured)':<{width}}"
        + "".join(f" {p.us_per_request:>12.1f}" for p in profiles)
    )
    print(
        f"{'  same loop under the profiler':<{width}}"
        + "".join(f" {p.profiled_us_per_request:>12.1f}" for p in profiles)
    )


def print_threads(profiles: list[VariantProfile]) -> None:
    """Where the CPU went by thread; on one core, wall minus all CPU is time nothing ran."""
    print("\nCPU µs per request by thread (unprofiled; all threads share one core):")
    for p in profiles:
        groups = ", ".join(f"{name} {us:.1f}" for name, us in sorted(p.thread_us.items()))
        idle = p.us_per_request - sum(p.thread_us.values())
        print(f"  {p.name:<11} {groups}; idle {idle:.1f}")


def print_handoff(profiles: list[VariantProfile]) -> None:
    """The sync step's extra cost, from the profile and from the plain difference."""
    by_name = {p.name: p for p in profiles}
    sync, asyn = by_name.get("sync step"), by_name.get("async step")
    if not (sync and asyn):
        return
    submit = sync.us("step thread hand-off (submit side)")
    waiting = sync.us(EVENT_LOOP) - asyn.us(EVENT_LOOP)
    print(
        f"\nstep thread hand-off (sync step): submit side {submit:.1f} µs + extra event-loop time "
        f"(waiting for the worker, waking up) {waiting:.1f} µs = {submit + waiting:.1f} µs;"
        f"\n  plain difference of the measured totals, sync - async: "
        f"{sync.us_per_request - asyn.us_per_request:.1f} µs"
    )


def _fmt_counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10000, help="requests per timed run (default 10000)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="unprofiled timed runs, median taken (default 3)"
    )
    parser.add_argument(
        "--interval", type=float, default=0.0001, help="pyinstrument sampling interval, s (default 0.0001)"
    )
    parser.add_argument("--html", type=Path, metavar="DIR", help="also write pyinstrument HTML profiles here")
    parser.add_argument(
        "--no-ablation", action="store_true", help="skip the unprofiled runs with one component off"
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=os.environ.get("SERVING_RUNTIME") or None,
        help="the daemon's runtime (default: SERVING_RUNTIME, else the daemon's default, realtime)",
    )
    args = parser.parse_args(argv)
    if args.runtime is not None and args.runtime not in RUNTIMES:
        parser.error(f"SERVING_RUNTIME={args.runtime!r}: expected one of {', '.join(RUNTIMES)}")
    return args


def run_loop(main: Awaitable[list[VariantProfile]]) -> list[VariantProfile]:
    """uvloop, as the daemon runs on it."""
    import uvloop

    return uvloop.run(main)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)  # pipeline specs are relative to the repository root
    if SERVER_CORE in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {SERVER_CORE})  # one core, like the daemon: threads share it

    timed: dict[str, float] = {}

    async def all_variants() -> list[VariantProfile]:
        profiles = [await measure(name, spec, args) for name, spec in VARIANTS.items()]
        if not args.no_ablation:
            timed.update(await ablations(VARIANTS["async step"], args, profiles[0].runtime))
        return profiles

    profiles = run_loop(all_variants())
    runtimes = ", ".join(sorted({p.runtime for p in profiles}))
    print(
        f"POST /invoke in-process, {args.requests} requests per run, runtime {runtimes}, "
        f"python {sys.version.split()[0]}"
    )
    print_table(profiles)
    print_threads(profiles)
    print_handoff(profiles)
    if timed:
        print_ablations(profiles[0], timed)
    for profile in profiles:
        if profile.capture:
            print(f"capture, {profile.name}: {_fmt_counts(profile.capture)} (before lifespan shutdown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
