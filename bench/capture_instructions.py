"""Instructions per run of the runtime alone, MemoryOnly against Realtime with capture.

Server-level req/s on a shared VM moves by +-15 % between identical runs, too much to
judge a change of a few microseconds in the capture path. Instruction counts under
valgrind's callgrind are repeatable (to about +-3k per run here), so this is how the
capture path was tuned (bench/README.md, "Capture cost, second pass").

For each runtime it runs the pipeline N1 and then N2 times in a fresh process under
`valgrind --tool=callgrind`, and reports (count(N2) - count(N1)) / (N2 - N1): start-up,
imports and shutdown cancel out. The Realtime runtime writes to a real SQLite store in
a temporary folder; every 100 runs the loop sleeps 1 ms so the publisher's writer
thread gets to write (its instructions are counted too).

    .venv/bin/python bench/capture_instructions.py            # hello pipeline
    .venv/bin/python bench/capture_instructions.py --pipeline examples/fanout.py:fanout
    .venv/bin/python bench/capture_instructions.py --daemon hypercorn   # whole daemon, over HTTP

`--daemon SERVER` counts the whole serving process instead: `python -m serving` (that
server, the runtime under test, JSON logs, no access log) under callgrind, driven over
HTTP by a client in this process that sends N `POST /invoke` requests over 32
connections, then SIGTERM (the capture flush is counted too). Capture batches are
left to fill to their size, as under load, not cut every 0.25 s. Its memory/realtime
ratio of instructions per request is what the req/s ratio of `bench/run.py` would be
if every instruction cost the same, whatever the host does meanwhile.

Needs valgrind on the PATH; takes about a minute per runtime (two with --daemon).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]


async def _drive(runtime_name: str, spec: str, runs: int, home: str) -> None:
    sys.path.insert(0, str(ROOT))
    from runtimes.base import RuntimeOptions
    from runtimes.memory import MemoryOnlyRuntime
    from runtimes.realtime import RealtimeRuntime
    from serving.loader import load_pipeline

    pipeline = load_pipeline(spec)
    params = pipeline.parse_parameters({})
    options = RuntimeOptions(capture_url=f"sqlite:///{home}/runs.db")
    runtime = MemoryOnlyRuntime(options) if runtime_name == "memory" else RealtimeRuntime(options)
    await runtime.start()
    for i in range(runs):
        await runtime.run(pipeline, params, timeout=30)
        if i % 100 == 0:
            await asyncio.sleep(0.001)  # the writer thread's turn, as idle moments give it under load
    await runtime.stop()


def _count(runtime_name: str, spec: str, runs: int) -> int:
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run(
            [*CALLGRIND, sys.executable, __file__,
             "--child", runtime_name, spec, str(runs), home],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"no callgrind total in its output:\n{out.stderr[-2000:]}")
    return int(found.group(1))


DAEMON_CONNECTIONS = 32
REQUEST = {"parameters": {"name": "World"}}


def _count_daemon(server: str, runtime_name: str, spec: str, requests: int) -> int:
    """Instructions of a whole daemon process that served `requests` POST /invoke."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
        env.update(
            SERVING_RUNTIME=runtime_name, SERVING_PIPELINE=spec, SERVING_HOME=home,
            SERVING_HOST="127.0.0.1", SERVING_PORT=str(port), SERVING_SERVER=server,
            SERVING_LOG_FORMAT="json", SERVING_ACCESS_LOG="false",
            # Under callgrind the daemon serves ~30 requests/s, so a batch would leave every
            # 0.25 s with a handful of records; under real load batches are full (500).
            SERVING_CAPTURE_BATCH_INTERVAL="60",
        )  # fmt: skip
        proc = subprocess.Popen(
            [*CALLGRIND, sys.executable, "-m", "serving"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            asyncio.run(_send(f"http://127.0.0.1:{port}", requests))
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    found = re.search(r"Collected : (\d+)", err)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"daemon exited {proc.returncode}; valgrind said:\n{err[-2000:]}")
    return int(found.group(1))


async def _send(url: str, requests: int) -> None:
    """Wait for the daemon, then send `requests` POSTs over DAEMON_CONNECTIONS connections."""
    limits = httpx.Limits(max_connections=DAEMON_CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        for _ in range(6000):  # a daemon under callgrind takes 10-30 s to start, minutes on a busy host
            try:
                if (await client.get("/health")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise SystemExit(f"the daemon at {url} never became healthy")
        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                response = await client.post("/invoke", json=REQUEST)
                if response.status_code != 200:
                    raise SystemExit(f"POST /invoke: {response.status_code} {response.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(DAEMON_CONNECTIONS)))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        runtime_name, spec, runs, home = sys.argv[2:6]
        asyncio.run(_drive(runtime_name, spec, int(runs), home))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="examples/hello.py:hello")
    parser.add_argument("--n1", type=int, help="runs (requests with --daemon); default 1000 (500)")
    parser.add_argument("--n2", type=int, help="runs (requests with --daemon); default 3000 (2500)")
    parser.add_argument("--runtimes", default="memory,realtime")
    parser.add_argument(
        "--daemon",
        choices=["hypercorn", "uvicorn"],
        help="count the whole daemon on this server, over HTTP",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("Error: valgrind not found on PATH", file=sys.stderr)
        return 1
    n1 = args.n1 if args.n1 is not None else (500 if args.daemon else 1000)
    n2 = args.n2 if args.n2 is not None else (2500 if args.daemon else 3000)
    if not 0 < n1 < n2:
        parser.error(f"expected 0 < --n1 < --n2, got {n1} and {n2}")
    unit = "request" if args.daemon else "run"
    where = f"{args.pipeline}, the whole daemon on {args.daemon}" if args.daemon else args.pipeline
    per_run = {}
    for name in args.runtimes.split(","):
        if args.daemon:
            low, high = (_count_daemon(args.daemon, name, args.pipeline, n) for n in (n1, n2))
        else:
            low, high = _count(name, args.pipeline, n1), _count(name, args.pipeline, n2)
        per_run[name] = (high - low) / (n2 - n1)
        print(f"{name:9s} {per_run[name] / 1000:7.1f}k instructions per {unit} ({where})", flush=True)
    if "memory" in per_run and "realtime" in per_run:
        extra = per_run["realtime"] - per_run["memory"]
        print(f"capture   {extra / 1000:7.1f}k instructions per {unit} (realtime - memory)")
        ratio = per_run["memory"] / per_run["realtime"]
        print(f"memory/realtime instructions per {unit}: {ratio:.3f} (the req/s ratio at equal speed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
