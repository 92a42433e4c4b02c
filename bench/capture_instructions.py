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

Needs valgrind on the PATH; takes about a minute per runtime.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
             "--child", runtime_name, spec, str(runs), home],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"no callgrind total in its output:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        runtime_name, spec, runs, home = sys.argv[2:6]
        asyncio.run(_drive(runtime_name, spec, int(runs), home))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="examples/hello.py:hello")
    parser.add_argument("--n1", type=int, default=1000)
    parser.add_argument("--n2", type=int, default=3000)
    parser.add_argument("--runtimes", default="memory,realtime")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("Error: valgrind not found on PATH", file=sys.stderr)
        return 1
    per_run = {}
    for name in args.runtimes.split(","):
        low, high = _count(name, args.pipeline, args.n1), _count(name, args.pipeline, args.n2)
        per_run[name] = (high - low) / (args.n2 - args.n1)
        print(f"{name:9s} {per_run[name] / 1000:7.1f}k instructions per run ({args.pipeline})")
    if "memory" in per_run and "realtime" in per_run:
        extra = per_run["realtime"] - per_run["memory"]
        print(f"capture   {extra / 1000:7.1f}k instructions per run (realtime - memory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
