"""`serving runs list|show`: read the capture store back as readable tables (or JSON).

Every store is read through `capture.readers.RunReader`, so these verbs say what to
show and never how a store is queried: SQLite and PostgreSQL look the same here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.table import Table

from capture.readers import ReaderError, RunReader, StoredRun, reader_from_url
from capture.sinks import display_url
from serving.cli_common import EXIT_FAILED, EXIT_OK, fail, int_at_least, styled_status, when
from serving.settings import Settings


class RunsError(Exception):
    """One clear line for the user; the CLI exits 1."""


@contextlib.contextmanager
def _reader(settings: Settings, override: str | None) -> Iterator[RunReader]:
    reader = reader_from_url(override or settings.effective_capture_url)
    try:
        yield reader
    finally:
        reader.close()


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _as_json(run: StoredRun) -> dict[str, Any]:
    """The table's fields plus the parameters, for scripts: the whole run id, unix times
    in seconds, and the parameters as the JSON object they were captured as (their
    preview text when it is not JSON, i.e. cut at SERVING_CAPTURE_MAX_BYTES)."""
    parameters: Any = run.parameters
    if parameters is not None:
        with contextlib.suppress(ValueError):
            parameters = json.loads(parameters)
    return {
        "run_id": run.run_id,
        "pipeline": run.pipeline,
        "status": run.status,
        "started_at": run.started_at,
        "duration": run.duration,
        "parameters": parameters,
    }


def list_runs(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    with _reader(settings, args.url) as reader:
        rows = reader.runs(status=args.status, pipeline=args.pipeline, limit=args.limit)
    if args.output == "json":
        print(json.dumps([_as_json(run) for run in rows], ensure_ascii=False))
        return EXIT_OK
    if not rows:  # a sentence, not an empty table a reader has to decode
        console.print(_no_runs(args, settings), markup=False, soft_wrap=True)
        return EXIT_OK
    table = Table(title=f"Runs ({len(rows)} shown, newest first)", title_justify="left")
    table.add_column("RUN ID", no_wrap=True)
    table.add_column("PIPELINE")
    table.add_column("STATUS")
    table.add_column("STARTED (UTC)", no_wrap=True)
    table.add_column("DURATION", justify="right")
    for run in rows:
        table.add_row(
            "…" + run.run_id[-12:],
            run.pipeline,
            styled_status(run.status),
            when(run.started_at, zone=False),
            _secs(run.duration),
        )
    console.print(table)
    return EXIT_OK


def _no_runs(args: argparse.Namespace, settings: Settings) -> str:
    store = display_url(args.url or settings.effective_capture_url)
    filters = [f"{k} {getattr(args, k)!r}" for k in ("status", "pipeline") if getattr(args, k)]
    if filters:
        return f"No run with {' and '.join(filters)} in {store}; `serving runs list` shows every run."
    return f"No runs in {store} yet; invoke a pipeline and its runs show here."


def show_run(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    # What `runs list` shows is the id's last 12 digits after an ellipsis; take it as pasted.
    wanted = args.run_id.strip().lstrip("…").strip().lower()
    if not wanted:
        raise RunsError("give a run id, or any unique part of one (`serving runs list` shows them)")
    with _reader(settings, args.url) as reader:
        runs = reader.find(wanted)
        if not runs:
            raise RunsError(f"no run with id {args.run_id!r}")
        if len(runs) > 1:
            some = ", ".join(r.run_id for r in runs[:5]) + (", ..." if len(runs) > 5 else "")
            raise RunsError(f"{args.run_id!r} matches more than one run ({some}); give more of the id")
        run = runs[0]
        steps = reader.steps(run.run_id)
        artifacts = reader.artifacts(run.run_id)
    logs = sorted(
        ((line.ts, seq, step.step_id, line) for step in steps for seq, line in enumerate(step.logs)),
        key=lambda entry: entry[:2],
    )
    head = Table.grid(padding=(0, 2))
    for label, value in (
        ("Run", f"{run.run_name} ({run.run_id})"),
        ("Pipeline", f"{run.pipeline} (version {run.pipeline_version})"),
        ("Status", styled_status(run.status)),
        ("Started", when(run.started_at)),
        ("Duration", _secs(run.duration)),
        ("Parameters", run.parameters or "-"),
        ("Outputs", run.output_preview or "-"),
        ("Error", run.error or "-"),
    ):
        head.add_row(f"[bold]{label}[/]", value)
    console.print(head)
    table = Table(title="Steps", title_justify="left")
    for column in ("STEP", "STATUS", "DURATION", "ATTEMPTS", "ERROR"):
        table.add_column(column)
    for s in steps:
        table.add_row(s.step_id, styled_status(s.status), _secs(s.duration), str(s.attempts), s.error or "")
    console.print(table)
    if logs:
        log_table = Table(title="Logs", title_justify="left")
        for column in ("STEP", "TIME (UTC)", "LEVEL", "MESSAGE"):
            log_table.add_column(column)
        for ts, _, step_id, line in logs:
            log_table.add_row(step_id, when(ts, zone=False), line.level, line.message)
        console.print(log_table)
    if artifacts:
        art = Table(title="Visualizations", title_justify="left")
        for column in ("STEP", "NAME", "KIND", "SIZE"):
            art.add_column(column)
        for a in artifacts:
            art.add_row(a.step_id, a.name, a.kind, f"{a.size} B")
        console.print(art)
    return EXIT_OK


STORE_HELP = (
    "capture store: sqlite:///path, a path, or postgresql://user@host:port/db"
    " (default: SERVING_CAPTURE_URL, else $SERVING_HOME/runs.db)"
)


def add_parser(sub: Any) -> None:
    runs = sub.add_parser("runs", help="inspect captured runs (a SQLite or PostgreSQL capture store)")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    ls = runs_sub.add_parser("list", help="recent runs, newest first")
    ls.add_argument("--limit", type=int_at_least(1), default=20, help="how many (default 20)")
    ls.add_argument(
        "--status", choices=["completed", "failed", "timed_out", "canceled"], help="only runs that ended so"
    )
    ls.add_argument("--pipeline", help="only this pipeline")
    ls.add_argument("--url", "--db", dest="url", help=STORE_HELP)
    ls.add_argument("--output", choices=["table", "json"], default="table", help="table (default) or json")
    show = runs_sub.add_parser("show", help="one run: steps, timings, logs, errors")
    show.add_argument("run_id", help="run id (any unique part of it, e.g. what `runs list` shows)")
    show.add_argument("--url", "--db", dest="url", help=STORE_HELP)


def main(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    try:
        if args.runs_command == "list":
            return list_runs(args, settings, console)
        return show_run(args, settings, console)
    except (RunsError, ReaderError) as exc:
        return fail(str(exc), EXIT_FAILED)
