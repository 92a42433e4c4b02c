"""Two figures the test suite used to assert with a stopwatch: resident memory over a flood
of async jobs, and the time from SIGTERM to exit with a request and a job in flight.

Wall-clock and RSS limits fail on a loaded machine and pass on a broken build that is
fast enough, so tests/ checks the behaviour (records are trimmed to `max_jobs`; both the
request and the job are cut off and the daemon exits 0) and this script prints the
numbers. Expected on a quiet machine: RSS growth of ~2 MiB over 3000 jobs with
`max_jobs=100` (kept records would cost ~4.5 KiB each, ~13 MiB), and an exit about
`graceful_timeout` (2 s) after the signal, not twice that plus 5 s (the budget spent
once for requests and again for jobs).

Issue 17 added three more: what happens to the next request after 32 sync steps were
abandoned by their runs' 0.5 s timeout (items 2; it used to wait ~30 s for a thread),
the RSS that 20 finished jobs of 10,000 1 KB events hold with the count bound alone and
with the default byte bounds (item 5), and what 20 subscribers that never read cost,
SSE against WebSocket. Figures: bench/README.md, "Issue 17".

Usage: python bench/limits.py [--jobs 3000] [--server hypercorn|uvicorn]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HELLO = f"{ROOT / 'examples' / 'hello.py'}:hello"
SLOW = f"{ROOT / 'tests' / 'pipelines' / 'slow.py'}:slow"
CHATTY = f"{ROOT / 'tests' / 'pipelines' / 'chatty.py'}:chatty"
BLOCKING = f"{ROOT / 'tests' / 'pipelines' / 'blocking.py'}:blocking"
UNBOUNDED = str(10**15)  # byte bounds so large they never apply: the count bound alone
GUARD = 30.0


class Daemon:
    """`python -m serving` on a free port; `url` once it logged "listening"."""

    def __init__(self, pipeline: str, home: str, **settings: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
        env.update(SERVING_PIPELINE=pipeline, SERVING_HOME=home, SERVING_PORT="0", SERVING_LOG_FORMAT="json")
        env.update({f"SERVING_{k.upper()}": v for k, v in settings.items()})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith("{") and json.loads(line).get("event") == "listening":
                self.url = json.loads(line)["url"]
                break
        else:
            raise SystemExit(f"the daemon for {pipeline} exited before listening")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep the pipe drained
        with httpx.Client() as client:
            deadline = time.monotonic() + GUARD
            while client.get(f"{self.url}/readyz").status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("the daemon never became ready")
                time.sleep(0.02)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise SystemExit("no VmRSS in /proc")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(GUARD)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def flood(url: str, count: int, batch: int = 100, per_connection: int = 500) -> None:
    """POST `count` async invocations, pipelined on raw sockets (an HTTP client library
    would spend more time than the server); asserts every reply is 202."""
    parts = urllib.parse.urlsplit(url)
    body = b'{"parameters": {"name": "n"}}'
    request = (
        b"POST /invoke?mode=async HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    for first in range(0, count, per_connection):
        with socket.create_connection((parts.hostname, parts.port), timeout=GUARD) as sock:
            stream = sock.makefile("rb")
            for start in range(first, min(count, first + per_connection), batch):
                n = min(batch, count - start)
                sock.sendall(request * n)
                for _ in range(n):
                    status = int(stream.readline().split()[1])
                    assert status == 202, status
                    length = 0
                    while (line := stream.readline()) not in (b"\r\n", b""):
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    stream.read(length)


def flood_memory(jobs: int, server: str) -> None:
    with tempfile.TemporaryDirectory() as home:
        d = Daemon(HELLO, home, max_jobs="100", access_log="false", server=server)
        try:
            flood(d.url, 1000)  # warm up: the allocator's pools and caches fill
            before = d.rss_kib()
            flood(d.url, jobs)
            grown = d.rss_kib() - before
        finally:
            d.stop()
    print(f"flood memory ({server}): RSS grew {grown / 1024:.1f} MiB over {jobs} jobs, max_jobs=100")


def graceful_budget(server: str, budget: float = 2.0) -> None:
    with tempfile.TemporaryDirectory() as home:
        d = Daemon(SLOW, home, graceful_timeout=str(budget), server=server)
        try:
            httpx.post(f"{d.url}/invoke?mode=async", json={"parameters": {"seconds": 60}}).raise_for_status()
            marker = Path(home) / "sync-started"
            body = {"parameters": {"seconds": 60, "marker": str(marker)}}
            threading.Thread(
                target=lambda: httpx.post(f"{d.url}/invoke", json=body, timeout=90), daemon=True
            ).start()
            deadline = time.monotonic() + GUARD
            while not marker.exists():
                if time.monotonic() > deadline:
                    raise SystemExit("the sync request never started")
                time.sleep(0.01)
            started = time.monotonic()
            d.proc.send_signal(signal.SIGTERM)
            status = d.proc.wait(GUARD)
            took = time.monotonic() - started
        finally:
            d.stop()
    print(f"graceful budget ({server}): exit {status} {took:.2f}s after SIGTERM, graceful_timeout={budget}s")


def run_chatty(client: httpx.Client, url: str, count: int, size: int) -> str:
    r = client.post(
        f"{url}/invoke?mode=async", json={"parameters": {"count": count, "size": size}}, timeout=GUARD
    )
    r.raise_for_status()
    job_id: str = r.json()["job_id"]
    job = client.get(f"{url}/jobs/{job_id}", params={"wait": GUARD}, timeout=GUARD * 2).json()
    assert job["status"] == "completed", job
    return job_id


def event_memory(server: str, jobs: int = 20, events: int = 10_000, size: int = 1000) -> None:
    """RSS held by the event logs of finished jobs: the count bound alone (as before the
    byte bounds) against the default byte bounds."""
    for label, settings in (
        ("count bound only", {"job_events_max_bytes": UNBOUNDED, "events_memory_max": UNBOUNDED}),
        ("default byte bounds", {}),
    ):
        with tempfile.TemporaryDirectory() as home:
            d = Daemon(CHATTY, home, access_log="false", server=server, **settings)
            try:
                with httpx.Client() as client:
                    run_chatty(client, d.url, 100, size)  # warm up
                    before = d.rss_kib()
                    for _ in range(jobs):
                        run_chatty(client, d.url, events, size)
                    grown = d.rss_kib() - before
                    metrics = client.get(f"{d.url}/metrics").text
                retained = next(
                    float(line.split()[1])
                    for line in metrics.splitlines()
                    if line.startswith("serving_job_events_retained_bytes ")
                )
            finally:
                d.stop()
        print(
            f"event memory ({server}, {label}): {jobs} finished jobs of {events} x {size} B events:"
            f" RSS +{grown / 1024:.0f} MiB, retained {retained / 2**20:.0f} MiB reported"
        )


def _silent_socket(url: str) -> socket.socket:
    parts = urllib.parse.urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing
    sock.connect((parts.hostname, parts.port))
    return sock


def silent_subscribers(server: str, subscribers: int = 20, events: int = 10_000, size: int = 1000) -> None:
    """RSS that subscribers who never read cost the daemon, SSE against WebSocket."""
    for kind in ("sse", "websocket"):
        with tempfile.TemporaryDirectory() as home:
            d = Daemon(CHATTY, home, access_log="false", server=server)
            socks: list[socket.socket] = []
            try:
                with httpx.Client() as client:
                    run_chatty(client, d.url, 100, size)  # warm up
                    before = d.rss_kib()
                    r = client.post(
                        f"{d.url}/invoke?mode=async", json={"parameters": {"count": events, "size": size}}
                    )
                    job_id = r.json()["job_id"]  # subscribed to while it runs
                    for _ in range(subscribers):
                        sock = _silent_socket(d.url)
                        if kind == "sse":
                            sock.sendall(f"GET /stream/{job_id} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
                        else:
                            sock.sendall(
                                b"GET /stream HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\n"
                                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: "
                                b"permessage-deflate; client_max_window_bits\r\n\r\n"
                            )
                            reply = b""
                            while b"\r\n\r\n" not in reply:  # the 101, before the first frame
                                reply += sock.recv(1)
                            assert reply.startswith(b"HTTP/1.1 101"), reply
                            message = json.dumps({"type": "subscribe", "job_id": job_id}).encode()
                            mask = b"\x00\x00\x00\x00"  # a client frame must be masked; zeros keep it plain
                            sock.sendall(bytes([0x81, 0x80 | len(message)]) + mask + message)
                        socks.append(sock)
                    time.sleep(3)  # let the daemon fill every buffer it will (a benchmark, not a test)
                    grown = d.rss_kib() - before
            finally:
                for sock in socks:
                    sock.close()
                d.stop()
        print(
            f"silent subscribers ({server}, {kind}): {subscribers} that never read a job of"
            f" {events} x {size} B events: RSS +{grown / 1024:.1f} MiB"
        )


def abandoned_threads(server: str, runs: int = 32) -> None:
    """`runs` sync steps that block their thread, each run timed out (504) at 0.5 s; then
    one more request whose step returns at once: how long it takes and what it gets,
    with room for more runs (the defaults) and with every slot taken by the others."""
    for label, settings in (
        ("defaults", {}),
        (f"max_concurrency={runs}", {"max_concurrency": str(runs)}),
        (f"max_concurrency={runs} max_queue=0", {"max_concurrency": str(runs), "max_queue": "0"}),
    ):
        with tempfile.TemporaryDirectory() as home:
            release = Path(home) / "release"
            d = Daemon(BLOCKING, home, access_log="false", server=server, **settings)
            try:
                with httpx.Client(timeout=GUARD * 2) as client:
                    body = {"parameters": {"release": str(release)}, "timeout": 0.5}
                    post = functools.partial(client.post, f"{d.url}/invoke", json=body)
                    with ThreadPoolExecutor(runs) as pool:
                        futures = [pool.submit(post) for _ in range(runs)]
                        codes = [f.result().status_code for f in futures]
                    assert codes == [504] * runs, codes
                    state = client.get(f"{d.url}/status").json()
                    threads, slots = state.get("step_threads"), state["jobs"]
                    started = time.monotonic()
                    r = client.post(f"{d.url}/invoke", json={"parameters": {}})
                    took = time.monotonic() - started
            finally:
                release.touch()
                d.stop()
        print(
            f"abandoned threads ({server}, {label}): after {runs} 504s the next request got"
            f" {r.status_code} in {took:.3f}s; before it: jobs {slots}, step_threads {threads}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=3000, help="async jobs in the measured flood")
    parser.add_argument("--server", choices=("hypercorn", "uvicorn"), default="hypercorn")
    args = parser.parse_args()
    flood_memory(args.jobs, args.server)
    graceful_budget(args.server)
    abandoned_threads(args.server)
    event_memory(args.server)
    silent_subscribers(args.server)


if __name__ == "__main__":
    main()
