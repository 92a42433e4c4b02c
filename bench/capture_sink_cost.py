"""What the capture writer thread spends per run: PostgreSQL sink against SQLite sink.

The sink runs in the publisher's one writer thread, beside the event loop; its CPU
time is what a run store costs the daemon (the database server's own work happens in
another process, on PostgreSQL, and is reported apart as wall time). For each sink it
writes the same N runs in batches of the publisher's default size (500) from one
thread, and reads that thread's CPU clock (`time.thread_time`) around each `write`.
Each sink writes into a fresh store: SQLite in a temporary folder, PostgreSQL in a
temporary database (created and dropped through the `postgres` maintenance database).

    .venv/bin/python bench/capture_sink_cost.py                 # 20,000 runs, 3 rounds
    .venv/bin/python bench/capture_sink_cost.py --runs 5000 --steps 7 --rounds 5
    .venv/bin/python bench/capture_sink_cost.py --postgres postgresql://postgres@127.0.0.1:5432/postgres

Prints, per sink, the median over rounds of CPU and wall microseconds per run, and
the PostgreSQL/SQLite ratio of each. Exit status 1 if PostgreSQL is unreachable.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capture.records import CodeRecord, LogLine, Record, RunRecord, StepCode, StepRecord  # noqa: E402
from capture.sinks import Sink, sink_from_url  # noqa: E402


def records(runs: int, steps: int) -> list[Record]:
    """Runs shaped like a daemon's: time-ordered ids, a parameter and output preview,
    `steps` steps each with an input/output preview and two log lines; code once."""
    now = time.time()
    out: list[Record] = [
        CodeRecord(
            pipeline="bench",
            pipeline_version="v1",
            steps=[
                StepCode(step_name=f"s{i}", source=f"def s{i}(x):\n    return x\n", docstring=None)
                for i in range(steps)
            ],
        )
    ]
    for n in range(runs):
        t = now + n * 0.001
        out.append(
            RunRecord(
                run_id=f"{int(t * 1000):012x}{secrets.token_hex(10)}",
                run_name=f"bench-{n}",
                pipeline="bench",
                pipeline_version="v1",
                status="completed",
                started_at=t,
                finished_at=t + 0.0004,
                duration=0.0004,
                parameters=f'{{"name":"user-{n}"}}',
                output_preview=f'{{"greeting":"Hello user-{n}!"}}',
                steps=tuple(
                    StepRecord(
                        step_id=f"s{i}",
                        step_name=f"s{i}",
                        status="completed",
                        started_at=t,
                        finished_at=t + 0.0001,
                        duration=0.0001,
                        input_preview=f'{{"x":"user-{n}"}}',
                        output_preview=f'"Hello user-{n}!"',
                        logs=(LogLine(t, "stdout", f"step s{i} for user-{n}"), LogLine(t, "info", "done")),
                    )
                    for i in range(steps)
                ),
            )
        )
    return out


def measure(sink: Sink, batches: list[list[Record]]) -> tuple[float, float]:
    """(CPU seconds of the writing thread, wall seconds) to write every batch."""

    def write_all() -> tuple[float, float]:
        sink.open()
        cpu = wall = 0.0
        try:
            for batch in batches:
                c0, w0 = time.thread_time(), time.perf_counter()
                sink.write(batch)
                cpu += time.thread_time() - c0
                wall += time.perf_counter() - w0
        finally:
            sink.close()
        return cpu, wall

    with ThreadPoolExecutor(1, thread_name_prefix="capture-writer") as writer:  # as the publisher does
        return writer.submit(write_all).result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=1, help="steps per run (hello: 1, observed: 7)")
    parser.add_argument("--batch", type=int, default=500, help="records per write (the publisher's default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    try:
        maintenance = psycopg.connect(args.postgres, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL at {args.postgres} is unreachable: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    results: dict[str, list[tuple[float, float]]] = {"sqlite": [], "postgresql": []}
    with maintenance, tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            recs = records(args.runs, args.steps)
            batches = [recs[i : i + args.batch] for i in range(0, len(recs), args.batch)]
            cpu, wall = measure(sink_from_url(f"sqlite://{tmp}/runs{r}.db"), batches)
            results["sqlite"].append((cpu, wall))
            name = f"serving_bench_{secrets.token_hex(4)}"
            maintenance.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            try:
                url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
                results["postgresql"].append(measure(sink_from_url(url), batches))
            finally:
                maintenance.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    per_run = {
        kind: (
            statistics.median(c for c, _ in rounds) / args.runs * 1e6,
            statistics.median(w for _, w in rounds) / args.runs * 1e6,
        )
        for kind, rounds in results.items()
    }
    print(
        f"{args.runs} runs of {args.steps} step(s), batches of {args.batch}, median of {args.rounds} rounds"
    )
    print(f"{'sink':<12}{'writer CPU us/run':>20}{'wall us/run':>14}")
    for kind, (cpu, wall) in per_run.items():
        print(f"{kind:<12}{cpu:>20.1f}{wall:>14.1f}")
    (sc, sw), (pc, pw) = per_run["sqlite"], per_run["postgresql"]
    print(f"{'pg/sqlite':<12}{pc / sc:>19.2f}x{pw / sw:>13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
