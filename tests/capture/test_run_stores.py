"""Both run stores, SQLite and PostgreSQL, through one test suite: each keeps the same
records and reads them back (through `capture.readers`) as the same values. Then what
only PostgreSQL has: its schema version table, migrations, and reconnecting after the
server ended the sink's connection."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from pgdb import query
from test_sinks import code_record, run_record

from capture import postgres
from capture.readers import ReaderError, RunReader, StoredArtifact, StoredRun, reader_from_url
from capture.records import Artifact, CodeRecord, LogLine, Record, RunRecord, StepCode, StepRecord
from capture.sinks import SchemaError, Sink, StoreUnavailable, sink_from_url


class Store:
    """One run store of either kind: its URL, and plain SQL on it for checks the
    readers do not cover (views, the code table)."""

    def __init__(self, kind: str, url: str, sql: Callable[[str], list[tuple[Any, ...]]]) -> None:
        self.kind, self.url, self.sql = kind, url, sql

    def write(self, *batches: list[Record]) -> None:
        sink: Sink = sink_from_url(self.url)
        sink.open()
        try:
            for batch in batches:
                sink.write(batch)
        finally:
            sink.close()

    def reader(self) -> RunReader:
        return reader_from_url(self.url)


def sqlite_sql(db: Path) -> Callable[[str], list[tuple[Any, ...]]]:
    def run(statement: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(db) as conn:
            return [tuple(r) for r in conn.execute(statement).fetchall()]

    return run


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        db = tmp_path / "runs.db"
        yield Store("sqlite", f"sqlite://{db}", sqlite_sql(db))
    else:
        url = request.getfixturevalue("pg_url")
        yield Store("postgresql", url, lambda statement: query(url, statement))


def varied_records() -> list[Record]:
    """Runs that exercise every field: NULLs and texts that look like them, several
    steps with logs and artifacts, failed steps, retries, unicode, and code twice."""
    failed = RunRecord(
        run_id="0002",
        run_name="p-failed",
        pipeline="p",
        pipeline_version="v1",
        status="failed",
        started_at=1712345678.123456,
        finished_at=1712345679.5,
        duration=1.376544,
        parameters='{"name":"ünïcode ✓","n":3}',
        output_preview=None,
        error="ValueError: boom\nsecond line",
        deployment="dep-1",
        steps=[
            StepRecord(
                step_id="late",
                step_name="b",
                status="failed",
                started_at=1712345679.0,
                finished_at=1712345679.5,
                duration=0.5,
                attempts=3,
                input_preview='{"x":1}',
                error="ValueError: boom",
                logs=[LogLine(1712345679.1, "error", "tab\\there, 'quotes' \"and\" \\N")],
            ),
            StepRecord(
                step_id="early",
                step_name="a",
                status="completed",
                started_at=1712345678.2,
                finished_at=1712345678.9,
                duration=0.7,
                output_preview='"0"',
                artifacts=[
                    Artifact(name="plot", kind="png", content="iVBORw=="),
                    Artifact(name="note", kind="markdown", content="# *hi*\n"),
                ],
            ),
        ],
    )
    texts = [
        msgspec.structs.replace(
            run_record(f"000{3 + i}"), parameters=t, output_preview=t, error=t, deployment=t, steps=[]
        )
        for i, t in enumerate(["0", "", "NULL"])
    ]
    nulls = msgspec.structs.replace(run_record("0001", steps=3), parameters=None, started_at=0.5)
    code = CodeRecord(
        pipeline="p",
        pipeline_version="v1",
        steps=[
            StepCode(step_name="a", source="def a():\n    return '0'\n", docstring=None),
            StepCode(step_name="b", source=None, docstring=""),
        ],
    )
    return [nulls, failed, code, *texts, code]


def dump(store: Store) -> dict[str, Any]:
    """Everything a store holds, read back the way `serving runs` and SQL users do."""
    reader = store.reader()
    try:
        runs = reader.runs(limit=1000)
        steps = {run.run_id: reader.steps(run.run_id) for run in runs}
        artifacts = {run.run_id: reader.artifacts(run.run_id) for run in runs}
    finally:
        reader.close()
    return {
        "runs": runs,
        "steps": steps,
        "artifacts": artifacts,
        "code": store.sql("SELECT * FROM code ORDER BY pipeline_version, step_name"),
        "step_runs": store.sql(
            "SELECT run_id, step_id, step_name, status, started_at, finished_at, duration, attempts,"
            " input_preview, output_preview, error FROM step_runs ORDER BY run_id, step_id"
        ),
        "step_logs": store.sql(
            "SELECT run_id, step_id, seq, ts, level, message FROM step_logs ORDER BY run_id, step_id, seq"
        ),
    }


def expected(records: list[Record]) -> dict[str, Any]:
    """What a store must give back for `records`, worked out from the records alone."""
    runs = sorted(
        (r for r in records if isinstance(r, RunRecord)), key=lambda r: (r.started_at, r.run_id), reverse=True
    )
    fields = [f.name for f in msgspec.structs.fields(StoredRun)]
    steps = {
        r.run_id: sorted(
            (msgspec.structs.replace(s, logs=list(s.logs), artifacts=[]) for s in r.steps),
            key=lambda s: s.started_at,
        )
        for r in runs
    }
    code = sorted(
        {
            (c.pipeline, c.pipeline_version, s.step_name, s.source, s.docstring)
            for c in records
            if isinstance(c, CodeRecord)
            for s in c.steps
        },
        key=lambda row: (row[1], row[2]),
    )
    return {
        "runs": [StoredRun(**{f: getattr(r, f) for f in fields}) for r in runs],
        "steps": steps,
        "artifacts": {
            r.run_id: sorted(
                (
                    StoredArtifact(step_id=s.step_id, name=a.name, kind=a.kind, size=len(a.content))
                    for s in r.steps
                    for a in s.artifacts
                ),
                key=lambda a: (a.step_id, a.name),
            )
            for r in runs
        },
        "code": code,
        "step_runs": sorted(
            (r.run_id, s.step_id, s.step_name, s.status, s.started_at, s.finished_at, s.duration, *tail)
            for r in runs
            for s in r.steps
            for tail in [(s.attempts, s.input_preview, s.output_preview, s.error)]
        ),
        "step_logs": sorted(
            (r.run_id, s.step_id, seq, line.ts, line.level, line.message)
            for r in runs
            for s in r.steps
            for seq, line in enumerate(s.logs)
        ),
    }


# -- both stores ------------------------------------------------------------------------------


def test_store_gives_back_every_record_as_it_was_written(store: Store) -> None:
    records = varied_records()
    store.write(records[:3], records[3:])
    assert dump(store) == expected(records)


def test_sqlite_and_postgresql_hold_the_same_for_the_same_runs(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "runs.db"
    stores = [
        Store("sqlite", f"sqlite://{db}", sqlite_sql(db)),
        Store("postgresql", pg_url, lambda statement: query(pg_url, statement)),
    ]
    records = varied_records()
    for s in stores:
        s.write(records)
    sqlite_dump, postgres_dump = (dump(s) for s in stores)
    assert sqlite_dump == postgres_dump


@pytest.mark.parametrize("size", [1, 63, 64, 65, 500, 1333])
def test_store_writes_batches_of_any_size(store: Store, size: int) -> None:
    store.write([run_record(f"r{i:05d}") for i in range(size)], [run_record("last")])
    ids = [row[0] for row in store.sql("SELECT run_id FROM runs ORDER BY run_id")]
    assert ids == sorted([f"r{i:05d}" for i in range(size)] + ["last"])


def test_store_batch_is_all_or_nothing(store: Store) -> None:
    sink = sink_from_url(store.url)
    sink.open()
    try:
        bad = run_record("bad")
        bad.run_name = None  # type: ignore[assignment]  # violates NOT NULL, after good records
        with pytest.raises((sqlite3.IntegrityError, psycopg.errors.NotNullViolation)):
            sink.write([run_record(f"good{i:03d}") for i in range(200)] + [code_record(), bad])
        sink.write([run_record("next")])
    finally:
        sink.close()
    assert store.sql("SELECT run_id FROM runs") == [("next",)]
    assert store.sql("SELECT count(*) FROM code") == [(0,)]


def test_reader_finds_runs_by_any_part_of_their_id(store: Store) -> None:
    store.write([run_record("abc123"), run_record("abd456"), run_record("xyz789")])
    reader = store.reader()
    try:
        assert [r.run_id for r in reader.find("abc123")] == ["abc123"]
        assert [r.run_id for r in reader.find("z78")] == ["xyz789"]
        assert sorted(r.run_id for r in reader.find("ab")) == ["abc123", "abd456"]
        assert reader.find("ab", limit=1)[0].run_id in ("abc123", "abd456")
        assert reader.find("nope") == []
        assert reader.steps("nope") == [] and reader.artifacts("nope") == []
        assert [r.run_id for r in reader.runs(status="failed")] == []
        assert len(reader.runs(pipeline="p", limit=2)) == 2
    finally:
        reader.close()


# -- PostgreSQL only --------------------------------------------------------------------------


def test_postgres_store_is_created_at_the_current_version_once(pg_url: str) -> None:
    opened = []

    def open_sink() -> None:
        sink = sink_from_url(pg_url)
        sink.open()
        opened.append(sink)

    # Replicas starting together: the advisory lock lets one create the tables.
    threads = [threading.Thread(target=open_sink) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for sink in opened:
        sink.close()
    assert len(opened) == 4
    assert query(pg_url, "SELECT version FROM run_store_version") == [(postgres.SCHEMA_VERSION,)]
    tables = query(
        pg_url,
        "SELECT table_name, table_type FROM information_schema.tables"
        " WHERE table_schema = 'public' ORDER BY table_name",
    )
    assert tables == [
        ("artifacts", "BASE TABLE"),
        ("code", "BASE TABLE"),
        ("run_store_version", "BASE TABLE"),
        ("runs", "BASE TABLE"),
        ("step_logs", "VIEW"),
        ("step_runs", "VIEW"),
    ]


def test_postgres_store_is_migrated_without_losing_a_row(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store("postgresql", pg_url, lambda s: []).write([run_record("old"), code_record()])
    # A later serving's migration (here: a made-up version 2) runs on open, once.
    later = "ALTER TABLE runs ADD COLUMN region TEXT NOT NULL DEFAULT 'eu'"
    monkeypatch.setattr(postgres, "MIGRATIONS", (*postgres.MIGRATIONS, later))
    monkeypatch.setattr(postgres, "SCHEMA_VERSION", postgres.SCHEMA_VERSION + 1)
    Store("postgresql", pg_url, lambda s: []).write([run_record("new")])
    Store("postgresql", pg_url, lambda s: []).write([])  # opened again: nothing to do
    assert query(pg_url, "SELECT version FROM run_store_version") == [(postgres.SCHEMA_VERSION,)]
    assert query(pg_url, "SELECT run_id, region FROM runs ORDER BY run_id") == [("new", "eu"), ("old", "eu")]
    assert query(pg_url, "SELECT count(*) FROM step_logs WHERE run_id = 'old'") == [(2,)]


def test_postgres_store_from_a_newer_version_is_refused(pg_url: str) -> None:
    query(pg_url, "CREATE TABLE run_store_version (version INTEGER NOT NULL)")
    query(pg_url, "INSERT INTO run_store_version VALUES (99)")
    sink = sink_from_url(pg_url)
    with pytest.raises(SchemaError, match=r"schema version 99 is newer than this serving's \(1\)"):
        sink.open()
    assert query(pg_url, "SELECT to_regclass('runs') IS NULL") == [(True,)]  # nothing created


def test_postgres_unreachable_is_one_line_without_the_password() -> None:
    sink = sink_from_url("postgresql://postgres:s3cret-pw@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreUnavailable) as caught:
        sink.open()
    message = str(caught.value)
    assert "\n" not in message and "s3cret-pw" not in message
    assert message.startswith("PostgreSQL: ")
    with pytest.raises(ReaderError) as unreadable:
        reader_from_url("postgresql://postgres:s3cret-pw@127.0.0.1:1/none?connect_timeout=2")
    assert "\n" not in str(unreadable.value) and "s3cret-pw" not in str(unreadable.value)
    assert "postgres:***@127.0.0.1:1" in str(unreadable.value)


def test_postgres_sink_reconnects_after_its_connection_is_terminated(pg_url: str) -> None:
    sink = sink_from_url(pg_url)
    sink.open()
    try:
        sink.write([run_record("before")])
        (terminated,) = query(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'serving'",
        )
        assert terminated == (True,)
        with pytest.raises(psycopg.OperationalError):
            sink.write([run_record("lost")])  # raises, so the breaker counts it
        sink.write([run_record("after")])  # a new connection
    finally:
        sink.close()
    assert query(pg_url, "SELECT run_id FROM runs ORDER BY run_id") == [("after",), ("before",)]


def test_reader_of_a_database_without_a_run_store(pg_url: str) -> None:
    with pytest.raises(ReaderError, match="no run store in"):
        reader_from_url(pg_url)
