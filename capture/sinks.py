"""Where capture records end up. A `Sink` is called from one writer thread only.

- `SQLiteSink` (default): `$SERVING_HOME/runs.db`, WAL mode, one transaction per batch.
- `JsonLinesSink`: one JSON object per record, to a file or stdout.

`sink_from_url` reads `SERVING_CAPTURE_URL`: `sqlite:///path/runs.db` (or a bare path),
`jsonl:///path/runs.jsonl`, `jsonl:-` (stdout).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from pathlib import Path
from typing import IO, Protocol

import msgspec

from capture.records import CodeRecord, Record, RunRecord


class Sink(Protocol):
    name: str

    def open(self) -> None:
        """Prepare (create files, schema); called once, in the writer thread."""

    def write(self, batch: list[Record]) -> None:
        """Persist a batch, all or nothing; raises on failure."""

    def close(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, run_name TEXT NOT NULL, pipeline TEXT NOT NULL,
    pipeline_version TEXT NOT NULL, status TEXT NOT NULL, started_at REAL NOT NULL,
    finished_at REAL NOT NULL, duration REAL NOT NULL, parameters TEXT,
    output_preview TEXT, error TEXT, deployment TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_pipeline ON runs (pipeline, started_at);
CREATE TABLE IF NOT EXISTS step_runs (
    run_id TEXT NOT NULL, step_id TEXT NOT NULL, step_name TEXT NOT NULL,
    status TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL NOT NULL,
    duration REAL NOT NULL, attempts INTEGER NOT NULL, input_preview TEXT,
    output_preview TEXT, error TEXT, PRIMARY KEY (run_id, step_id)
);
CREATE TABLE IF NOT EXISTS step_logs (
    run_id TEXT NOT NULL, step_id TEXT NOT NULL, seq INTEGER NOT NULL,
    ts REAL NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL,
    PRIMARY KEY (run_id, step_id, seq)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL, step_id TEXT NOT NULL, name TEXT NOT NULL,
    kind TEXT NOT NULL, content TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS code (
    pipeline TEXT NOT NULL, pipeline_version TEXT NOT NULL, step_name TEXT NOT NULL,
    source TEXT, docstring TEXT, PRIMARY KEY (pipeline_version, step_name)
);
"""


_MAX_VARIABLES = 30_000  # below SQLite's default limit of 32766 bound parameters


def _insert_many(conn: sqlite3.Connection, insert: str, rows: list[tuple[object, ...]]) -> None:
    """Insert rows with multi-row VALUES statements: one step per few hundred rows.

    `executemany` steps once per row, and the sqlite3 module releases and re-takes the
    GIL around every step: on a single busy core each of those is a thread switch with
    the event loop, which cost the loop more than the writing itself.
    """
    if not rows:
        return
    width = len(rows[0])
    per_statement = max(1, _MAX_VARIABLES // width)
    row_sql = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        params = [value for row in chunk for value in row]
        conn.execute(f"{insert} VALUES {','.join([row_sql] * len(chunk))}", params)


class SQLiteSink:
    """Runs, step runs, logs, artifacts and code in one SQLite file.

    Before each batch it checks that the file it has open is still the one at `path`;
    a removed or replaced database is reopened, and if it cannot be, the batch fails
    (and the circuit breaker takes over) instead of vanishing into an unlinked file.
    """

    name = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
        except sqlite3.Error:
            conn.close()
            raise
        st = os.stat(self.path)
        self._conn, self._identity = conn, (st.st_dev, st.st_ino)
        return conn

    def _connection(self) -> sqlite3.Connection:
        try:
            st = os.stat(self.path)
            same = self._identity == (st.st_dev, st.st_ino)
        except OSError:
            same = False
        if self._conn is not None and same:
            return self._conn
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        if not self.path.parent.is_dir():
            raise OSError(f"capture database folder {self.path.parent} is gone")
        return self._connect()

    def write(self, batch: list[Record]) -> None:
        conn = self._connection()
        runs, steps, logs, artifacts, code = [], [], [], [], []
        for record in batch:
            if isinstance(record, RunRecord):
                runs.append(
                    (record.run_id, record.run_name, record.pipeline, record.pipeline_version,
                     record.status, record.started_at, record.finished_at, record.duration,
                     record.parameters, record.output_preview, record.error, record.deployment)
                )  # fmt: skip
                for s in record.steps:
                    steps.append(
                        (record.run_id, s.step_id, s.step_name, s.status, s.started_at, s.finished_at,
                         s.duration, s.attempts, s.input_preview, s.output_preview, s.error)
                    )  # fmt: skip
                    logs.extend(
                        (record.run_id, s.step_id, i, line.ts, line.level, line.message)
                        for i, line in enumerate(s.logs)
                    )
                    artifacts.extend(
                        (record.run_id, s.step_id, a.name, a.kind, a.content) for a in s.artifacts
                    )
            elif isinstance(record, CodeRecord):
                code.extend(
                    (record.pipeline, record.pipeline_version, c.step_name, c.source, c.docstring)
                    for c in record.steps
                )
        with conn:  # one transaction per batch
            conn.execute("BEGIN")
            _insert_many(conn, "INSERT INTO runs", runs)  # a run is written once: no conflict check
            _insert_many(conn, "INSERT OR REPLACE INTO step_runs", steps)
            _insert_many(conn, "INSERT OR REPLACE INTO step_logs", logs)
            _insert_many(conn, "INSERT INTO artifacts", artifacts)
            _insert_many(conn, "INSERT OR IGNORE INTO code", code)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None


class JsonLinesSink:
    """One JSON object per record (`{"type": "run", ...}`), flushed per batch."""

    name = "jsonl"

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._file: IO[bytes] | None = None
        self._encoder = msgspec.json.Encoder()

    def open(self) -> None:
        if self.path is None:
            self._file = sys.stdout.buffer
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the process life

    def write(self, batch: list[Record]) -> None:
        assert self._file is not None, "sink not opened"
        buf = bytearray()
        for record in batch:
            self._encoder.encode_into(record, buf, len(buf))
            buf += b"\n"
        self._file.write(buf)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None and self.path is not None:
            self._file.close()
        self._file = None


class CaptureURLError(ValueError):
    pass


def sink_from_url(url: str) -> Sink:
    """Build the sink `SERVING_CAPTURE_URL` names; raises CaptureURLError when unreadable."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if not path or path == "/":
            raise CaptureURLError(f"{url!r}: expected sqlite:///path/to/runs.db")
        return SQLiteSink(path)
    if url in ("jsonl:-", "jsonl://-", "stdout"):
        return JsonLinesSink(None)
    if url.startswith("jsonl:"):
        path = url[len("jsonl://") :] if url.startswith("jsonl://") else url[len("jsonl:") :]
        if not path.strip():
            raise CaptureURLError(f"{url!r}: expected jsonl:///path/to/runs.jsonl or jsonl:- (stdout)")
        return JsonLinesSink(path)
    if "://" not in url and url.endswith((".db", ".sqlite", ".sqlite3")):
        return SQLiteSink(url)
    if "://" not in url and url.endswith((".jsonl", ".ndjson")):
        return JsonLinesSink(url)
    raise CaptureURLError(
        f"{url!r}: expected sqlite:///path/runs.db, jsonl:///path/runs.jsonl or jsonl:- (stdout)"
    )
