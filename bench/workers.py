"""SERVING_WORKERS=2 vs 1: req/s of the hello pipeline (MemoryOnly, Hypercorn) under wrk.

    .venv/bin/python bench/workers.py [--conns 32] [--duration 10] [--rounds 3]

Each round starts a one-worker and a two-worker daemon in turn (real processes), warms
each up, then runs `wrk -t1 -c32` against it; the ratio is taken within the round so a
busy neighbour affects both sides alike. wrk is not pinned: on a 2-core machine pinning
it to a core would take that core from one of the two workers; unpinned, the load
generator shares both cores with the daemon in both configurations. Two workers need a
shared job store (SERVING_JOB_STORE), which sync /invoke never touches; the URL only
satisfies the start-up check.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = f"{ROOT / 'examples' / 'hello.py'}:hello"
POST_LUA = ROOT / "bench" / "post.lua"
RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(workers: int, home: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env.update(
        SERVING_PIPELINE=PIPELINE,
        SERVING_PORT=str(port),
        SERVING_HOME=home,
        SERVING_RUNTIME="memory",
        SERVING_SERVER="hypercorn",
        SERVING_ACCESS_LOG="false",
        SERVING_LOG_LEVEL="warning",
        SERVING_WORKERS=str(workers),
        SERVING_JOB_STORE="memory" if workers == 1 else "redis://127.0.0.1:6379/15",
    )
    proc = subprocess.Popen([sys.executable, "-m", "serving"], env=env, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    seen: set[int] = set()
    while len(seen) < workers:  # ready, and every worker answered at least once
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"daemon with {workers} worker(s) did not start")
        try:
            with httpx.Client(timeout=2) as client:
                if client.get(f"{url}/readyz").status_code == 200:
                    seen.add(client.get(f"{url}/health").json()["pid"])
        except httpx.TransportError:
            time.sleep(0.05)
    return proc, url


def wrk(url: str, conns: int, duration: float) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "-s", str(POST_LUA), f"{url}/invoke"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = RPS.search(out)
    if match is None or "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk reported errors:\n{out}")
    return float(match.group(1))


def measure(workers: int, conns: int, duration: float) -> float:
    with tempfile.TemporaryDirectory() as home:
        proc, url = start(workers, home)
        try:
            wrk(url, conns, 2)  # warm-up
            return wrk(url, conns, duration)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ratios = []
    for n in range(args.rounds):
        one = measure(1, args.conns, args.duration)
        two = measure(2, args.conns, args.duration)
        ratios.append(two / one)
        print(f"round {n + 1}: 1 worker {one:8.0f} req/s, 2 workers {two:8.0f} req/s, ratio {two / one:.2f}")
    print(f"median ratio {statistics.median(ratios):.2f} (cores: {os.cpu_count()}, load: {os.getloadavg()})")


if __name__ == "__main__":
    main()
