"""The PostgreSQL run store: `SERVING_CAPTURE_URL=postgresql://user@host:port/database`.

Why PostgreSQL: replicas on several machines (or worker processes on one) write their
runs into one place, which a SQLite file on one disk cannot be. The records and their
layout are the SQLite store's (`capture/sinks.py`): one row per run with its steps (and
their log lines) as a JSON array in `runs.steps`, `step_runs` / `step_logs` views over
it, artifacts and step code in tables of their own. `runs.steps` is `json`, not
`jsonb`: the server keeps the text as sent instead of parsing it into a binary form on
every insert, and the readers decode that text themselves.

The sink runs in the publisher's one writer thread, with psycopg's sync API and one
connection it owns. A batch is one transaction of COPYs (runs, artifacts) and one
INSERT ... ON CONFLICT for code; any failure raises, so the circuit breaker counts it,
and a broken connection is dropped and made anew by the next batch.

psycopg is imported by this module only, and this module only for a PostgreSQL URL,
so a daemon on SQLite never loads it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict

from capture.readers import SQLRunReader
from capture.records import CodeRecord, Record, RunRecord
from capture.sinks import RUN_COLUMNS, SchemaError, StoreUnavailable, display_url, split_artifacts

SCHEMA_VERSION = 1
# One key for `pg_advisory_xact_lock`: replicas starting together migrate once, in turn.
_MIGRATION_LOCK = 0x5E57_1C0D_E5

# MIGRATIONS[n] takes a store from version n to n + 1; the version lives in a table of
# its own (PostgreSQL has no `PRAGMA user_version`).
MIGRATIONS: tuple[str, ...] = (
    """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, run_name TEXT NOT NULL, pipeline TEXT NOT NULL,
    pipeline_version TEXT NOT NULL, status TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION NOT NULL, duration DOUBLE PRECISION NOT NULL, parameters TEXT,
    output_preview TEXT, error TEXT, deployment TEXT, steps JSON NOT NULL DEFAULT '[]'
);
CREATE INDEX runs_started ON runs (started_at);
CREATE TABLE artifacts (
    run_id TEXT NOT NULL, step_id TEXT NOT NULL, name TEXT NOT NULL,
    kind TEXT NOT NULL, content TEXT NOT NULL
);
CREATE INDEX artifacts_run ON artifacts (run_id);
CREATE TABLE code (
    pipeline TEXT NOT NULL, pipeline_version TEXT NOT NULL, step_name TEXT NOT NULL,
    source TEXT, docstring TEXT, PRIMARY KEY (pipeline_version, step_name)
);
CREATE VIEW step_runs AS
SELECT runs.run_id AS run_id,
       s ->> 'step_id' AS step_id,
       s ->> 'step_name' AS step_name,
       s ->> 'status' AS status,
       (s ->> 'started_at')::double precision AS started_at,
       (s ->> 'finished_at')::double precision AS finished_at,
       (s ->> 'duration')::double precision AS duration,
       (s ->> 'attempts')::integer AS attempts,
       s ->> 'input_preview' AS input_preview,
       s ->> 'output_preview' AS output_preview,
       s ->> 'error' AS error
FROM runs, json_array_elements(runs.steps) AS s;
CREATE VIEW step_logs AS
SELECT runs.run_id AS run_id,
       s ->> 'step_id' AS step_id,
       (l.n - 1)::integer AS seq,
       (l.line ->> 0)::double precision AS ts,
       l.line ->> 1 AS level,
       l.line ->> 2 AS message
FROM runs, json_array_elements(runs.steps) AS s,
     json_array_elements(s -> 'logs') WITH ORDINALITY AS l(line, n);
""",
)

_COPY_RUNS = f"COPY runs ({', '.join(RUN_COLUMNS)}) FROM STDIN"
_COPY_ARTIFACTS = "COPY artifacts (run_id, step_id, name, kind, content) FROM STDIN"
_INSERT_CODE = (
    "INSERT INTO code (pipeline, pipeline_version, step_name, source, docstring)"
    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"  # once per version; every replica sends it
)
_SLICE = 64  # records turned into rows between two offers of the CPU, as in the SQLite sink
_yield_cpu = getattr(os, "sched_yield", lambda: None)


class PostgresURLError(ValueError):
    """A `postgresql://` URL that names no database or cannot be parsed."""


def check_url(url: str) -> None:
    """Raise PostgresURLError unless `url` is a libpq URI that names a database."""
    expected = "expected postgresql://user@host:port/database"
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise PostgresURLError(f"{display_url(url)!r}: {one_line(exc)}; {expected}") from None
    if not params.get("dbname"):
        raise PostgresURLError(f"{display_url(url)!r}: no database named; {expected}")
    port = str(params.get("port") or "5432")
    if not all(p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
        raise PostgresURLError(f"{display_url(url)!r}: port {port!r} is not a port number; {expected}")


def one_line(exc: BaseException) -> str:
    """psycopg's messages span lines (libpq adds hints and tabs); errors here are one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A connection in autocommit mode (transactions are explicit), bounded in how long
    connecting may take unless the URL says otherwise: an unreachable server fails the
    start, or the batch, in seconds rather than after the kernel's TCP timeout."""
    params: dict[str, Any] = {} if "connect_timeout" in url else {"connect_timeout": 5}
    params.update(kwargs)
    return psycopg.connect(url, autocommit=True, application_name="serving", **params)


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction; raises SchemaError if newer.

    Waits for any other replica migrating the same database (an advisory lock), so
    replicas started together create the tables once."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS run_store_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM run_store_version").fetchone()
        version = row[0] if row else 0
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"run store schema version {version} is newer than this serving's ({SCHEMA_VERSION})"
            )
        if version == SCHEMA_VERSION:
            return
        for script in MIGRATIONS[version:]:
            conn.execute(script)  # several statements: allowed without parameters
        if row:
            conn.execute("UPDATE run_store_version SET version = %s", (SCHEMA_VERSION,))
        else:
            conn.execute("INSERT INTO run_store_version (version) VALUES (%s)", (SCHEMA_VERSION,))


class PostgresSink:
    """Runs (with their steps and logs), artifacts and code in one PostgreSQL database."""

    name = "postgresql"

    def __init__(self, url: str) -> None:
        check_url(url)
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._encode_steps = msgspec.json.Encoder().encode

    def open(self) -> None:
        """Connect and create or migrate the schema; raises StoreUnavailable or SchemaError."""
        try:
            self._connection()
        except psycopg.Error as exc:
            # The caller names the URL (SERVING_CAPTURE_URL=...): the reason is enough here.
            raise StoreUnavailable(f"PostgreSQL: {one_line(exc)}") from None

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._drop_connection()
        conn = connect(self.url)
        try:
            migrate(conn)  # also on a reconnect: the database may have been recreated
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def write(self, batch: list[Record]) -> None:
        """Write the batch in one transaction; raises (and drops a broken connection, so
        the next batch reconnects) on any failure."""
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                code: list[tuple[object, ...]] = []
                with cur.copy(_COPY_RUNS) as copy:
                    artifacts = self._copy_runs(copy, batch, code)
                if artifacts:
                    with cur.copy(_COPY_ARTIFACTS) as copy:
                        for row in artifacts:
                            copy.write_row(row)
                if code:
                    cur.executemany(_INSERT_CODE, code)
        except BaseException:
            if conn.broken or conn.closed:
                self._drop_connection()
            raise

    def _copy_runs(
        self, copy: Any, batch: list[Record], code: list[tuple[object, ...]]
    ) -> list[tuple[str, ...]]:
        """Send each run's row to the COPY; returns the artifact rows, fills `code`."""
        encode_steps = self._encode_steps
        write_row = copy.write_row
        artifacts: list[tuple[str, ...]] = []
        for i, record in enumerate(batch):
            if i and not i % _SLICE:
                _yield_cpu()  # the writer shares a core with the event loop
            if type(record) is RunRecord:
                steps = split_artifacts(record, artifacts)
                write_row(
                    (
                        record.run_id,
                        record.run_name,
                        record.pipeline,
                        record.pipeline_version,
                        record.status,
                        record.started_at,
                        record.finished_at,
                        record.duration,
                        record.parameters,
                        record.output_preview,
                        record.error,
                        record.deployment,
                        encode_steps(steps).decode(),
                    )
                )
            elif type(record) is CodeRecord:
                code.extend(
                    (record.pipeline, record.pipeline_version, c.step_name, c.source, c.docstring)
                    for c in record.steps
                )
        return artifacts

    def close(self) -> None:
        self._drop_connection()


class PostgresRunReader(SQLRunReader):
    """`serving runs` against a PostgreSQL store."""

    placeholder = "%s"
    contains = "strpos(run_id, %s) > 0"
    steps_text = "steps::text"

    def __init__(self, url: str) -> None:
        check_url(url)
        self.url = display_url(url)
        self._conn = connect(url)
        try:
            found = self._conn.execute("SELECT to_regclass('runs') IS NOT NULL").fetchone()
        except psycopg.Error:
            self._conn.close()
            raise
        if not (found and found[0]):
            self._conn.close()
            raise LookupError(
                f"no run store in {self.url} (nothing captured yet, or SERVING_CAPTURE_URL differs)"
            )

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self._conn.close()
