"""Two figures the test suite used to assert with a stopwatch: resident memory over a flood
of async jobs, and the time from SIGTERM to exit with a request and a job in flight.

Wall-clock and RSS limits fail on a loaded machine and pass on a broken build that is
fast enough, so tests/ checks the behaviour (records are trimmed to `max_jobs`; both the
request and the job are cut off and the daemon exits 0) and this script prints the
numbers. Expected on a quiet machine: RSS growth of ~2 MiB over 3000 jobs with
`max_jobs=100` (kept records would cost ~4.5 KiB each, ~13 MiB), and an exit about
`graceful_timeout` (2 s) after the signal, not twice that plus 5 s (the budget spent
once for requests and again for jobs).

Usage: python bench/limits.py [--jobs 3000] [--server hypercorn|uvicorn]
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HELLO = f"{ROOT / 'examples' / 'hello.py'}:hello"
SLOW = f"{ROOT / 'tests' / 'pipelines' / 'slow.py'}:slow"
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=3000, help="async jobs in the measured flood")
    parser.add_argument("--server", choices=("hypercorn", "uvicorn"), default="hypercorn")
    args = parser.parse_args()
    flood_memory(args.jobs, args.server)
    graceful_budget(args.server)


if __name__ == "__main__":
    main()
