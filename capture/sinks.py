"""Where capture records end up. A `Sink` is called from one writer thread only.

- `SQLiteSink` (default): `$SERVING_HOME/runs.db`, WAL mode, one transaction per batch.
- `JsonLinesSink`: one JSON object per record, to a file or stdout.
- `PostgresSink` (`capture/postgres.py`): the same records in a PostgreSQL database
  that several replicas share.

`sink_from_url` reads `SERVING_CAPTURE_URL`: `sqlite:///path/runs.db` (or a bare path),
`jsonl:///path/runs.jsonl`, `jsonl:-` (stdout), `postgresql://user@host:port/db`
(or `postgres://`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import IO, Any, Protocol

import msgspec

from capture.records import CodeRecord, Record, RunRecord, StepRecord


class Sink(Protocol):
    name: str

    def open(self) -> None:
        """Prepare (create files, schema); called once, in the writer thread."""

    def write(self, batch: list[Record]) -> None:
        """Persist a batch, all or nothing; raises on failure."""

    def close(self) -> None: ...


SCHEMA_VERSION = 2

# A run is one row: its steps (with their log lines) are a JSON array in `runs.steps`,
# and `step_runs` / `step_logs` are views over it. One row per run instead of one per
# step and per log line is what keeps the writer within its budget (bench/README.md);
# the views keep them queryable as tables. Artifacts can be large, so they keep a
# table of their own rather than bloating the rows `serving runs list` scans.
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, run_name TEXT NOT NULL, pipeline TEXT NOT NULL,
    pipeline_version TEXT NOT NULL, status TEXT NOT NULL, started_at REAL NOT NULL,
    finished_at REAL NOT NULL, duration REAL NOT NULL, parameters TEXT,
    output_preview TEXT, error TEXT, deployment TEXT, steps TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL, step_id TEXT NOT NULL, name TEXT NOT NULL,
    kind TEXT NOT NULL, content TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_run ON artifacts (run_id);
CREATE TABLE IF NOT EXISTS code (
    pipeline TEXT NOT NULL, pipeline_version TEXT NOT NULL, step_name TEXT NOT NULL,
    source TEXT, docstring TEXT, PRIMARY KEY (pipeline_version, step_name)
);
CREATE VIEW IF NOT EXISTS step_runs AS
SELECT runs.run_id AS run_id,
       json_extract(s.value, '$.step_id') AS step_id,
       json_extract(s.value, '$.step_name') AS step_name,
       json_extract(s.value, '$.status') AS status,
       json_extract(s.value, '$.started_at') AS started_at,
       json_extract(s.value, '$.finished_at') AS finished_at,
       json_extract(s.value, '$.duration') AS duration,
       json_extract(s.value, '$.attempts') AS attempts,
       json_extract(s.value, '$.input_preview') AS input_preview,
       json_extract(s.value, '$.output_preview') AS output_preview,
       json_extract(s.value, '$.error') AS error
FROM runs, json_each(runs.steps) AS s;
CREATE VIEW IF NOT EXISTS step_logs AS
SELECT runs.run_id AS run_id,
       json_extract(s.value, '$.step_id') AS step_id,
       l.key AS seq,
       json_extract(l.value, '$[0]') AS ts,
       json_extract(l.value, '$[1]') AS level,
       json_extract(l.value, '$[2]') AS message
FROM runs, json_each(runs.steps) AS s, json_each(s.value, '$.logs') AS l;
"""

# Version 1 kept steps and log lines in tables of their own: fold them into runs.steps.
MIGRATE_FROM_V1 = """
ALTER TABLE runs ADD COLUMN steps TEXT NOT NULL DEFAULT '[]';
UPDATE runs SET steps = coalesce((
    SELECT json_group_array(json_object(
        'step_id', s.step_id, 'step_name', s.step_name, 'status', s.status,
        'started_at', s.started_at, 'finished_at', s.finished_at, 'duration', s.duration,
        'attempts', s.attempts, 'input_preview', s.input_preview,
        'output_preview', s.output_preview, 'error', s.error,
        'logs', json((SELECT coalesce(json_group_array(json_array(l.ts, l.level, l.message)), '[]')
                      FROM (SELECT * FROM step_logs AS l
                            WHERE l.run_id = s.run_id AND l.step_id = s.step_id ORDER BY l.seq) AS l)),
        'artifacts', json('[]')))
    FROM (SELECT * FROM step_runs AS s WHERE s.run_id = runs.run_id ORDER BY s.started_at) AS s
), '[]');
DROP TABLE step_runs;
DROP TABLE step_logs;
DROP INDEX IF EXISTS runs_pipeline;
"""


class SchemaError(Exception):
    """The database was written by a newer version of serving, or is not a run store."""


class StoreUnavailable(Exception):
    """The store cannot be reached or opened (a networked one: refused, unknown host,
    bad credentials); one line, without the URL's password."""


_Row = tuple[object, ...]
# Bound in place of None, and turned back into NULL by the statement's
# `CASE ? WHEN 0 THEN NULL ELSE ? END`. The sqlite3 module binds str, int and float
# directly but sends None through its adapter lookup, two failed attribute lookups that
# cost more than binding the rest of the row (about 3k instructions each, two or more
# per run). These columns only ever hold text, and text never equals the integer 0 in
# SQLite, so no value is changed. Not `nullif(?, 0)`: a function's result is a copy of
# a text argument, copied once more into the row, two allocations per text per row.
_NULL = 0


class _Insert:
    """One table's INSERT, made from its column names.

    The statement names its columns, so the order of the table's own columns (in
    SCHEMA, or as a migration left them) never matters, and the placeholders of the
    nullable ones get their `CASE ? WHEN 0 THEN NULL ...` from the same names.
    `shared` columns get one value per statement, bound once as ?1, ?2, ... and
    named again by every row: binding a text copies it into memory SQLite allocates
    (and frees at the next bind), several hundred instructions each, and a daemon's
    runs nearly all have the same values there (`_RUN_SHARED`). The other `columns`
    get a value per row, in order, numbered on from there. `SQLiteSink._rows` lays
    the parameters out in that order, field by field from the record field of the
    same name, straight into one flat list (tests/capture/test_sinks.py holds each
    column to its field).
    """

    __slots__ = ("_statements", "columns", "head", "nullable", "shared")

    def __init__(
        self,
        verb: str,
        table: str,
        columns: tuple[str, ...],
        *,
        shared: tuple[str, ...] = (),
        nullable: tuple[str, ...] = (),
    ) -> None:
        self.head = f"{verb} {table} ({', '.join(shared + columns)})"
        self.columns = columns
        self.shared = shared
        self.nullable = frozenset(nullable)
        self._statements: dict[int, str] = {}

    def statement(self, rows: int) -> str:
        """The INSERT of `rows` rows (made once per size: `_CHUNKS` keeps them few)."""
        sql = self._statements.get(rows)
        if sql is None:
            shared = [self._placeholder(name, n) for n, name in enumerate(self.shared, 1)]
            numbers = iter(range(len(self.shared) + 1, len(self.shared) + rows * len(self.columns) + 1))
            values = (
                "("
                + ",".join(shared + [self._placeholder(name, next(numbers)) for name in self.columns])
                + ")"
                for _ in range(rows)
            )
            sql = self._statements[rows] = f"{self.head} VALUES {','.join(values)}"
        return sql

    def _placeholder(self, name: str, number: int) -> str:
        return (
            f"CASE ?{number} WHEN 0 THEN NULL ELSE ?{number} END" if name in self.nullable else f"?{number}"
        )


# The columns of a run's row, in the order the PostgreSQL sink COPYs them.
RUN_COLUMNS = (
    "run_id",
    "run_name",
    "pipeline",
    "pipeline_version",
    "status",
    "started_at",
    "finished_at",
    "duration",
    "parameters",
    "output_preview",
    "error",
    "deployment",
    "steps",
)
# A daemon's runs share their pipeline, version and deployment: bound once per statement
# (see `_Insert`). Not the status, though most runs end alike: a failed run among them
# splits the slice into more statements, which cost more than the texts saved.
_RUN_SHARED = ("pipeline", "pipeline_version", "deployment")
_RunShared = tuple[str, str, str | None]
_RUNS = _Insert(
    "INSERT INTO",  # a run is written once: no conflict check
    "runs",
    tuple(c for c in RUN_COLUMNS if c not in _RUN_SHARED),
    shared=_RUN_SHARED,
    nullable=("parameters", "output_preview", "error", "deployment"),
)
_ARTIFACTS = _Insert("INSERT INTO", "artifacts", ("run_id", "step_id", "name", "kind", "content"))
_CODE = _Insert(
    "INSERT OR IGNORE INTO",  # once per pipeline version; every daemon serving it sends it
    "code",
    ("pipeline", "pipeline_version", "step_name", "source", "docstring"),
    nullable=("source", "docstring"),
)
_SLICE = 64  # records turned into rows and inserted between two offers of the CPU
# Rows per INSERT statement. Each statement executed costs about 20k instructions beyond
# its rows (Python cursor, statement journal, b-tree cursors sought anew), about a run's
# whole row: powers of two take any count up to `_SLICE` in at most seven (base 4 took
# up to nine). A statement of exactly the slice's size would take one, but each of the
# 64 sizes is prepared once per connection (about 100k instructions per row), which a
# daemon's first thousands of runs pay for.
_CHUNKS = (64, 32, 16, 8, 4, 2, 1)
_yield_cpu = getattr(os, "sched_yield", lambda: None)


def split_artifacts(record: RunRecord, rows: list[Any]) -> Sequence[StepRecord]:
    """A run's steps as `runs.steps` keeps them, without their artifacts, which go to
    `rows` as `artifacts` table rows instead (both stores keep them in a table of their
    own: they can be large). Returns the steps unchanged when none has an artifact."""
    with_artifacts = False
    for step in record.steps:
        if step.artifacts:
            with_artifacts = True
            rows.extend((record.run_id, step.step_id, a.name, a.kind, a.content) for a in step.artifacts)
    if not with_artifacts:
        return record.steps
    return [msgspec.structs.replace(step, artifacts=()) for step in record.steps]


def _insert_many(
    conn: sqlite3.Connection, insert: _Insert, shared: list[object], values: list[object]
) -> None:
    """Insert rows (`values`, row after row) with multi-row statements of a few fixed sizes.

    `executemany` steps once per row, and the sqlite3 module releases and re-takes the
    GIL around every step: on a single busy core each of those is a thread switch with
    the event loop, which cost the loop more than the writing itself. A statement per
    batch size would be prepared anew for every partial batch (milliseconds for a few
    hundred rows); these few sizes are prepared once and then come from the
    connection's statement cache.
    """
    width = len(insert.columns)
    start, end = 0, len(values)
    for size in _CHUNKS:
        sql, step = insert.statement(size), size * width
        while end - start >= step:
            conn.execute(sql, shared + values[start : start + step])
            start += step


def _execute_each(conn: sqlite3.Connection, script: str) -> None:
    """Run a script's statements inside the open transaction (executescript would commit)."""
    for statement in script.split(";\n"):
        if statement.strip():
            conn.execute(statement)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction; raises SchemaError if newer."""
    conn.execute("BEGIN IMMEDIATE")  # two daemons opening one file migrate it once
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"run store schema version {version} is newer than this serving's ({SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION:
            old_steps = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'step_runs'"
            ).fetchone()
            if old_steps:
                _execute_each(conn, MIGRATE_FROM_V1)
            _execute_each(conn, SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class SQLiteSink:
    """Runs (with their steps and logs), artifacts and code in one SQLite file.

    Before each batch it checks that the file it has open is still the one at `path`;
    a removed or replaced database is reopened, and if it cannot be, the batch fails
    (and the circuit breaker takes over) instead of vanishing into an unlinked file.
    """

    name = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        # A run's steps are encoded into this one buffer, over and over: `encode` would
        # make a fresh bytes object per run, grown twice on the way for a one-step run.
        self._encode_steps_into = msgspec.json.Encoder().encode_into
        self._steps_json = bytearray()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            _migrate(conn)
        except (sqlite3.Error, SchemaError):
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
        with conn:  # one transaction per batch
            conn.execute("BEGIN")
            # The writer shares a core with the event loop, and the scheduler lets it run
            # a whole time slice (2-3 ms here) before a request that just arrived gets
            # the core: p99 at 1 connection went from 0.26 to 2.2 ms with capture on. A
            # slice of records at a time, with the CPU offered back in between, keeps
            # that wait under a millisecond (bench/README.md, "Capture cost, second pass").
            for start in range(0, len(batch), _SLICE):
                if start:
                    _yield_cpu()
                runs, artifacts, code = self._rows(batch[start : start + _SLICE])
                for (pipeline, version, deployment), values in runs.items():
                    shared: list[object] = [pipeline, version, _NULL if deployment is None else deployment]
                    _insert_many(conn, _RUNS, shared, values)
                _insert_many(conn, _ARTIFACTS, [], list(chain.from_iterable(artifacts)))
                _insert_many(conn, _CODE, [], code)

    def _rows(self, records: list[Record]) -> tuple[dict[_RunShared, list[object]], list[_Row], list[object]]:
        """The values of `_RUNS` (per value of its shared columns) and `_CODE`, row
        after row in each one's `columns` order, and the rows of `_ARTIFACTS` (rare:
        `split_artifacts` makes them)."""
        encode_steps_into, steps_json = self._encode_steps_into, self._steps_json
        runs: dict[_RunShared, list[object]] = {}
        artifacts: list[_Row] = []
        code: list[object] = []
        # The rows of the last run's shared values: the next run nearly always has the
        # same (the very same objects), found again by identity instead of a tuple and
        # a lookup per run.
        pipeline: str | None = None
        version: str | None = None
        deployment: str | None = None
        values: list[object] = []
        for record in records:
            if type(record) is RunRecord:
                steps = record.steps
                for step in steps:
                    if step.artifacts:  # rare: no call per record for the test
                        steps = split_artifacts(record, artifacts)
                        break
                if (
                    record.pipeline is not pipeline
                    or record.pipeline_version is not version
                    or record.deployment is not deployment
                ):
                    pipeline, version = record.pipeline, record.pipeline_version
                    deployment = record.deployment
                    values = runs.setdefault((pipeline, version, deployment), [])
                parameters, output, error = record.parameters, record.output_preview, record.error
                encode_steps_into(steps, steps_json)  # from offset 0: replaces the last run's
                values += (
                    record.run_id,
                    record.run_name,
                    record.status,
                    record.started_at,
                    record.finished_at,
                    record.duration,
                    _NULL if parameters is None else parameters,
                    _NULL if output is None else output,
                    _NULL if error is None else error,
                    steps_json.decode(),
                )
            elif type(record) is CodeRecord:
                for c in record.steps:
                    code += (
                        record.pipeline,
                        record.pipeline_version,
                        c.step_name,
                        _NULL if c.source is None else c.source,
                        _NULL if c.docstring is None else c.docstring,
                    )
        return runs, artifacts, code

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


POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_EXPECTED = (
    "expected sqlite:///path/runs.db, postgresql://user@host:port/database, "
    "jsonl:///path/runs.jsonl or jsonl:- (stdout)"
)


def display_url(url: str) -> str:
    """The URL as errors and logs may show it: a PostgreSQL password becomes `***`."""
    if url.startswith(POSTGRES_SCHEMES):
        from urllib.parse import urlsplit, urlunsplit

        with contextlib.suppress(ValueError):
            parts = urlsplit(url)
            if parts.password:
                netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
                return urlunsplit(parts._replace(netloc=netloc))
    return url


def sink_from_url(url: str) -> Sink:
    """Build the sink `SERVING_CAPTURE_URL` names; raises CaptureURLError when unreadable.

    Nothing is opened or connected here: `Sink.open` does that, in the writer thread."""
    if url.startswith(POSTGRES_SCHEMES):
        try:
            from capture.postgres import PostgresSink, PostgresURLError
        except ImportError:
            raise CaptureURLError(
                f"{display_url(url)!r}: a PostgreSQL store needs the extra: pip install 'serving[postgres]'"
            ) from None
        try:
            return PostgresSink(url)
        except PostgresURLError as exc:
            raise CaptureURLError(str(exc)) from None
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
    raise CaptureURLError(f"{url!r}: {_EXPECTED}")
