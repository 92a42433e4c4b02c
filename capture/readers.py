"""Reading a run store back: what `serving runs list|show` needs, the same for every store.

A `RunReader` answers in records (`StoredRun`, `StepRecord`, `StoredArtifact`), so the
CLI never sees SQL and has no branch per store. Both stores keep a run's steps as a
JSON array in `runs.steps`; a reader decodes it with the same Struct the sinks encoded
it from, which is what makes a run read back from SQLite and from PostgreSQL equal.
What differs between the two dialects (placeholders, a substring test, reading JSON as
text) is three class attributes of `SQLRunReader`'s subclasses.

`reader_from_url` takes the same URLs as `SERVING_CAPTURE_URL`; everything it and the
readers raise for the user is a `ReaderError` whose message is one line.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, ClassVar, Protocol

import msgspec

from capture.records import StepRecord


class StoredRun(msgspec.Struct, kw_only=True, frozen=True):
    """One row of `runs`, without its steps (`RunReader.steps` reads those)."""

    run_id: str
    run_name: str
    pipeline: str
    pipeline_version: str
    status: str
    started_at: float
    finished_at: float
    duration: float
    parameters: str | None = None
    output_preview: str | None = None
    error: str | None = None
    deployment: str | None = None


class StoredArtifact(msgspec.Struct, kw_only=True, frozen=True):
    """An artifact without its content: `runs show` lists them with their size."""

    step_id: str
    name: str
    kind: str
    size: int


class ReaderError(Exception):
    """One clear line for the user: no store there, an unreadable one, a failed query."""


class RunReader(Protocol):
    def runs(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        limit: int = 20,
        before: tuple[float, str] | None = None,
    ) -> list[StoredRun]:
        """Runs newest first (by start time), filtered by status and pipeline; with
        `before` (a run's start time and id), only the runs listed after that one."""

    def find(self, part: str, limit: int = 6) -> list[StoredRun]:
        """The run whose id is `part`, else up to `limit` runs whose id contains it."""

    def steps(self, run_id: str) -> list[StepRecord]:
        """A run's steps, in the order they started, each with its log lines."""

    def artifacts(self, run_id: str) -> list[StoredArtifact]: ...

    def close(self) -> None: ...


_COLUMNS = ", ".join(f.name for f in msgspec.structs.fields(StoredRun))
_decode_steps = msgspec.json.Decoder(list[StepRecord]).decode


class SQLRunReader:
    """The queries of both stores, written once; a subclass names its dialect and connects."""

    placeholder: ClassVar[str]  # how a parameter is written in SQL
    contains: ClassVar[str]  # "run_id contains the parameter"
    steps_text: ClassVar[str]  # runs.steps as JSON text
    errors: ClassVar[tuple[type[Exception], ...]]  # what the driver raises
    url: str

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        try:
            return self._query(sql.replace("?", self.placeholder), params)
        except self.errors as exc:
            raise ReaderError(
                f"cannot read the capture store {self.url}: {' '.join(str(exc).split())}"
            ) from None

    def runs(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        limit: int = 20,
        before: tuple[float, str] | None = None,
    ) -> list[StoredRun]:
        where: list[str] = []
        params: list[object] = []
        if status:
            where.append("status = ?")
            params.append(status)
        if pipeline:
            where.append("pipeline = ?")
            params.append(pipeline)
        if before is not None:
            # Keyset paging in the listing's own order: stable while new runs land.
            where.append("(started_at < ? OR (started_at = ? AND run_id < ?))")
            params.extend((before[0], before[0], before[1]))
        sql = f"SELECT {_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, run_id DESC LIMIT ?"
        return self._runs(sql, *params, limit)

    def find(self, part: str, limit: int = 6) -> list[StoredRun]:
        # A whole id is found through the primary key; a part of one (any part: the
        # first 12 digits are the time, the last 20 random) needs a scan of the ids.
        found = self._runs(f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?", part)
        if found:
            return found
        return self._runs(f"SELECT {_COLUMNS} FROM runs WHERE {self.contains} LIMIT ?", part, limit)

    def _runs(self, sql: str, *params: object) -> list[StoredRun]:
        names = [f.name for f in msgspec.structs.fields(StoredRun)]
        return [StoredRun(**dict(zip(names, row, strict=True))) for row in self._rows(sql, *params)]

    def steps(self, run_id: str) -> list[StepRecord]:
        rows = self._rows(f"SELECT {self.steps_text} FROM runs WHERE run_id = ?", run_id)
        if not rows:
            return []
        try:
            steps = _decode_steps(rows[0][0])
        except msgspec.DecodeError as exc:
            raise ReaderError(f"run {run_id} has unreadable steps in {self.url}: {exc}") from None
        return sorted(steps, key=lambda s: s.started_at)

    def artifacts(self, run_id: str) -> list[StoredArtifact]:
        rows = self._rows(
            "SELECT step_id, name, kind, length(content) FROM artifacts"
            " WHERE run_id = ? ORDER BY step_id, name",
            run_id,
        )
        return [StoredArtifact(step_id=r[0], name=r[1], kind=r[2], size=r[3]) for r in rows]


class SQLiteRunReader(SQLRunReader):
    """`serving runs` against a SQLite store, opened read-only (reading never creates one)."""

    placeholder = "?"
    contains = "instr(run_id, ?) > 0"
    steps_text = "steps"
    errors = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self.url = str(path)
        if not path.is_file():
            raise ReaderError(
                f"no capture store at {path} (nothing captured yet, or SERVING_CAPTURE_URL differs)"
            )
        try:
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise ReaderError(f"cannot open the capture store {path}: {exc}") from None

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self._conn.close()


def reader_from_url(url: str) -> RunReader:
    """A reader for the store `url` names (the forms `SERVING_CAPTURE_URL` takes).

    Connects (PostgreSQL) or opens (SQLite) before returning; raises ReaderError when
    there is no store there, it cannot be reached, or it is not one a reader can read."""
    if url.startswith(("postgresql://", "postgres://")):
        return _postgres_reader(url)
    if (why := unreadable(url)) is not None:
        raise ReaderError(why)
    return SQLiteRunReader(sqlite_path(url))


def unreadable(url: str) -> str | None:
    """Why no reader can read the store `url` names back (JSON lines, stdout), or None."""
    if url.startswith(("postgresql://", "postgres://", "sqlite://")):
        return None
    if "://" in url or url.startswith("jsonl:") or url == "stdout" or url.endswith((".jsonl", ".ndjson")):
        return f"the capture store {url!r} is not SQLite or PostgreSQL; runs are read back only from those"
    return None


def sqlite_path(url: str) -> Path:
    """The file a SQLite store URL (or a bare path) names."""
    path = url[len("sqlite://") :] if url.startswith("sqlite://") else url
    return Path(path).expanduser().resolve()


def _postgres_reader(url: str) -> RunReader:
    try:
        import psycopg

        from capture.postgres import PostgresRunReader, PostgresURLError, one_line
        from capture.sinks import display_url
    except ImportError:
        raise ReaderError(
            "a PostgreSQL capture store needs the extra: pip install 'serving[postgres]'"
        ) from None
    try:
        return PostgresRunReader(url)
    except (PostgresURLError, LookupError) as exc:
        raise ReaderError(str(exc)) from None
    except psycopg.Error as exc:
        raise ReaderError(f"cannot reach the capture store {display_url(url)}: {one_line(exc)}") from None
