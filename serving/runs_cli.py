"""`serving runs list|show`: read the capture store back as readable tables."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from serving.cli_common import EXIT_FAILED, EXIT_OK, fail, int_at_least, styled_status, when
from serving.settings import Settings


class RunsError(Exception):
    """One clear line for the user; the CLI exits 1."""


def _db_path(settings: Settings, override: str | None) -> Path:
    url = override or settings.effective_capture_url
    if url.startswith("sqlite://"):
        url = url[len("sqlite://") :]
    elif "://" in url or url.startswith("jsonl:"):
        raise RunsError(f"the capture store {url!r} is not SQLite; `serving runs` reads SQLite stores only")
    path = Path(url).expanduser().resolve()
    if not path.is_file():
        raise RunsError(f"no capture store at {path} (nothing captured yet, or SERVING_CAPTURE_URL differs)")
    return path


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    conn.row_factory = sqlite3.Row
    return conn


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def list_runs(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    where, params = [], []
    if args.status:
        where.append("status = ?")
        params.append(args.status)
    if args.pipeline:
        where.append("pipeline = ?")
        params.append(args.pipeline)
    sql = "SELECT run_id, run_name, pipeline, status, started_at, duration, error FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY started_at DESC LIMIT ?"
    params.append(args.limit)
    with _connect(_db_path(settings, args.db)) as conn:
        rows = conn.execute(sql, params).fetchall()
    table = Table(title=f"Runs ({len(rows)} shown, newest first)", title_justify="left")
    table.add_column("RUN ID", no_wrap=True)
    table.add_column("PIPELINE")
    table.add_column("STATUS")
    table.add_column("STARTED (UTC)", no_wrap=True)
    table.add_column("DURATION", justify="right")
    for row in rows:
        short_id = "…" + row["run_id"][-12:]
        table.add_row(
            short_id,
            row["pipeline"],
            styled_status(row["status"]),
            when(row["started_at"], zone=False),
            _secs(row["duration"]),
        )
    console.print(table)
    return EXIT_OK


def show_run(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    # What `runs list` shows is the id's last 12 digits after an ellipsis; take it as pasted.
    wanted = args.run_id.strip().lstrip("…").strip().lower()
    if not wanted:
        raise RunsError("give a run id, or any unique part of one (`serving runs list` shows them)")
    with _connect(_db_path(settings, args.db)) as conn:
        # A whole id is found through the primary key; a part of one (any part: the
        # first 12 digits are the time, the last 20 random) needs a scan of the ids.
        runs = conn.execute("SELECT * FROM runs WHERE run_id = ?", (wanted,)).fetchall()
        if not runs:
            runs = conn.execute("SELECT * FROM runs WHERE instr(run_id, ?) > 0 LIMIT 6", (wanted,)).fetchall()
        if not runs:
            raise RunsError(f"no run with id {args.run_id!r}")
        if len(runs) > 1:
            some = ", ".join(r["run_id"] for r in runs[:5]) + (", ..." if len(runs) > 5 else "")
            raise RunsError(f"{args.run_id!r} matches more than one run ({some}); give more of the id")
        run = runs[0]
        steps = conn.execute(
            "SELECT * FROM step_runs WHERE run_id = ? ORDER BY started_at", (run["run_id"],)
        ).fetchall()
        logs = conn.execute(
            "SELECT step_id, ts, level, message FROM step_logs WHERE run_id = ? ORDER BY ts, seq",
            (run["run_id"],),
        ).fetchall()
        artifacts = conn.execute(
            "SELECT step_id, name, kind, length(content) AS size FROM artifacts WHERE run_id = ?",
            (run["run_id"],),
        ).fetchall()
    head = Table.grid(padding=(0, 2))
    for label, value in (
        ("Run", f"{run['run_name']} ({run['run_id']})"),
        ("Pipeline", f"{run['pipeline']} (version {run['pipeline_version']})"),
        ("Status", styled_status(run["status"])),
        ("Started", when(run["started_at"])),
        ("Duration", _secs(run["duration"])),
        ("Parameters", run["parameters"] or "-"),
        ("Outputs", run["output_preview"] or "-"),
        ("Error", run["error"] or "-"),
    ):
        head.add_row(f"[bold]{label}[/]", value)
    console.print(head)
    table = Table(title="Steps", title_justify="left")
    for column in ("STEP", "STATUS", "DURATION", "ATTEMPTS", "ERROR"):
        table.add_column(column)
    for s in steps:
        table.add_row(
            s["step_id"],
            styled_status(s["status"]),
            _secs(s["duration"]),
            str(s["attempts"]),
            s["error"] or "",
        )
    console.print(table)
    if logs:
        log_table = Table(title="Logs", title_justify="left")
        for column in ("STEP", "TIME (UTC)", "LEVEL", "MESSAGE"):
            log_table.add_column(column)
        for line in logs:
            log_table.add_row(line["step_id"], when(line["ts"], zone=False), line["level"], line["message"])
        console.print(log_table)
    if artifacts:
        art = Table(title="Visualizations", title_justify="left")
        for column in ("STEP", "NAME", "KIND", "SIZE"):
            art.add_column(column)
        for a in artifacts:
            art.add_row(a["step_id"], a["name"], a["kind"], f"{a['size']} B")
        console.print(art)
    return EXIT_OK


def add_parser(sub: Any) -> None:
    runs = sub.add_parser("runs", help="inspect captured runs (the SQLite capture store)")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    ls = runs_sub.add_parser("list", help="recent runs, newest first")
    ls.add_argument("--limit", type=int_at_least(1), default=20, help="how many (default 20)")
    ls.add_argument("--status", choices=["completed", "failed", "timed_out", "canceled"])
    ls.add_argument("--pipeline", help="only this pipeline")
    ls.add_argument("--db", help="capture store (default: SERVING_CAPTURE_URL or $SERVING_HOME/runs.db)")
    show = runs_sub.add_parser("show", help="one run: steps, timings, logs, errors")
    show.add_argument("run_id", help="run id (any unique part of it, e.g. what `runs list` shows)")
    show.add_argument("--db", help="capture store (default: SERVING_CAPTURE_URL or $SERVING_HOME/runs.db)")


def main(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    try:
        if args.runs_command == "list":
            return list_runs(args, settings, console)
        return show_run(args, settings, console)
    except RunsError as exc:
        return fail(str(exc), EXIT_FAILED)
    except sqlite3.Error as exc:
        return fail(f"cannot read the capture store: {exc}", EXIT_FAILED)
