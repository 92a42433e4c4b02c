"""Capture sinks (SQLite with a real failure, JSON lines), `sink_from_url`, previews."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import msgspec
import pydantic
import pytest

from capture.records import Artifact, CodeRecord, LogLine, RunRecord, StepCode, StepRecord
from capture.redact import REDACTED, SECRET_WORDS, TRUNCATED, preview, preview_fields
from capture.sinks import CaptureURLError, JsonLinesSink, SchemaError, SQLiteSink, sink_from_url
from runtimes.visualize import Visualization, visualize


def run_record(run_id: str, *, steps: int = 1) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        run_name=f"p-{run_id}",
        pipeline="p",
        pipeline_version="v1",
        status="completed",
        started_at=1.0,
        finished_at=2.0,
        duration=1.0,
        parameters='{"a":1}',
        steps=[
            StepRecord(
                step_id=f"s{i}",
                step_name="s",
                status="completed",
                started_at=1.0,
                finished_at=2.0,
                duration=1.0,
                logs=[LogLine(1.5, "stdout", f"line {i}"), LogLine(1.6, "info", "two")],
                artifacts=[Artifact(name="v", kind="html", content="<i>x</i>")],
            )
            for i in range(steps)
        ],
    )


def code_record() -> CodeRecord:
    return CodeRecord(
        pipeline="p",
        pipeline_version="v1",
        steps=[StepCode(step_name="s", source="def s(): ...", docstring=None)],
    )


def table_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("runs", "step_runs", "step_logs", "artifacts", "code")
        }


def run_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY run_id")]


# -- SQLite ---------------------------------------------------------------------------------


def test_sqlite_sink_writes_every_table(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "folder" / "runs.db"
    sink = SQLiteSink(db)
    sink.open()  # creates the folders
    try:
        sink.write([run_record("a", steps=2), code_record(), code_record()])
    finally:
        sink.close()
    assert table_counts(db) == {"runs": 1, "step_runs": 2, "step_logs": 4, "artifacts": 2, "code": 1}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        logs = conn.execute(
            "SELECT step_id, seq, level, message FROM step_logs ORDER BY step_id, seq"
        ).fetchall()
    assert logs[:2] == [("s0", 0, "stdout", "line 0"), ("s0", 1, "info", "two")]


@pytest.mark.parametrize("size", [1, 3, 17, 63, 64, 65, 129, 255, 256, 257, 500, 1333])
def test_sqlite_sink_writes_batches_of_any_size(tmp_path: Path, size: int) -> None:
    """Batches are written a slice at a time, in statements of a few fixed sizes; no
    row may fall in a gap between them."""
    db = tmp_path / "runs.db"
    sink = SQLiteSink(db)
    sink.open()
    try:
        sink.write([run_record(f"r{i:05d}") for i in range(size)])
        sink.write([run_record("last")])
    finally:
        sink.close()
    assert run_ids(db) == sorted([f"r{i:05d}" for i in range(size)] + ["last"])


def test_sqlite_sink_stores_none_as_null_and_every_text_as_itself(tmp_path: Path) -> None:
    """None is bound as 0 and turned back into NULL by the statement (binding None is
    slow in the sqlite3 module): no text, not even "0" or "", may become NULL."""
    db = tmp_path / "runs.db"
    empty = msgspec.structs.replace(run_record("none"), parameters=None, steps=[])
    texts = [
        msgspec.structs.replace(
            run_record(f"text{i}"), parameters=t, output_preview=t, error=t, deployment=t, steps=[]
        )
        for i, t in enumerate(["0", "", "0.0", "NULL"])
    ]
    code = CodeRecord(
        pipeline="p",
        pipeline_version="v2",
        steps=[
            StepCode(step_name="a", source=None, docstring=None),
            StepCode(step_name="b", source="0", docstring=""),
        ],
    )
    sink = SQLiteSink(db)
    sink.open()
    try:
        sink.write([empty, *texts, code])
    finally:
        sink.close()
    columns = "parameters, output_preview, error, deployment"
    with sqlite3.connect(db) as conn:
        rows = dict((r[0], r[1:]) for r in conn.execute(f"SELECT run_id, {columns} FROM runs"))
        types = {r[0] for r in conn.execute("SELECT typeof(error) FROM runs WHERE run_id LIKE 'text%'")}
        code_rows = conn.execute(
            "SELECT step_name, source, docstring FROM code ORDER BY step_name"
        ).fetchall()
    assert rows["none"] == (None, None, None, None)
    for i, t in enumerate(["0", "", "0.0", "NULL"]):
        assert rows[f"text{i}"] == (t, t, t, t)
    assert types == {"text"}
    assert code_rows == [("a", None, None), ("b", "0", "")]


def test_sqlite_sink_stores_every_field_in_the_column_of_its_name(tmp_path: Path) -> None:
    """The sink builds rows as tuples in its INSERTs' column order: a value in the wrong
    place (three neighbouring floats, four neighbouring optional texts) would be stored
    without any error. Every field gets a value no other field has."""
    floats = iter(range(1, 100))
    run = RunRecord(
        **{
            f.name: float(next(floats)) if f.type is float else f"<{f.name}>"
            for f in msgspec.structs.fields(RunRecord)
            if f.name != "steps"
        },
        steps=[
            StepRecord(
                step_id="<step_id>",
                step_name="<step_name>",
                status="<status>",
                started_at=11.0,
                finished_at=12.0,
                duration=13.0,
                artifacts=[Artifact(name="<name>", kind="<kind>", content="<content>")],
            )
        ],
    )
    code = CodeRecord(
        pipeline="<pipeline>",
        pipeline_version="<pipeline_version>",
        steps=[StepCode(step_name="<step_name>", source="<source>", docstring="<docstring>")],
    )
    db = tmp_path / "runs.db"
    sink = SQLiteSink(db)
    sink.open()
    try:
        sink.write([run, code])
    finally:
        sink.close()
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        (stored,) = conn.execute("SELECT * FROM runs").fetchall()
        (artifact,) = conn.execute("SELECT * FROM artifacts").fetchall()
        (step_code,) = conn.execute("SELECT * FROM code").fetchall()
    for field in msgspec.structs.fields(RunRecord):
        if field.name != "steps":
            assert stored[field.name] == getattr(run, field.name), field.name
    assert json.loads(stored["steps"])[0]["step_id"] == "<step_id>"
    artifact_columns = ("step_id", "name", "kind", "content")
    assert dict(artifact) == {"run_id": run.run_id, **{k: f"<{k}>" for k in artifact_columns}}
    code_columns = ("pipeline", "pipeline_version", "step_name", "source", "docstring")
    assert dict(step_code) == {k: f"<{k}>" for k in code_columns}


def test_sqlite_sink_keeps_each_runs_pipeline_version_deployment_and_status(tmp_path: Path) -> None:
    """Pipeline, version and deployment are bound once per INSERT for the runs that
    share them: runs of several in one batch, interleaved (and equal texts that are
    not the same object), with statuses of their own, must each keep their own."""
    kinds = [
        ("p", "v1", None, "completed"),
        ("p", "v2", None, "completed"),
        ("q", "v1", "blue", "failed"),
        ("p", "v1", "blue", "completed"),
        ("p", "v1", None, "timed_out"),
    ]
    runs = [
        msgspec.structs.replace(
            run_record(f"r{i:03d}"),
            pipeline=f"pipeline-{kinds[i % 5][0]}",  # a new object each time, equal ones
            pipeline_version=kinds[i % 5][1],
            deployment=kinds[i % 5][2],
            status=kinds[i % 5][3],
        )
        for i in range(150)
    ]
    db = tmp_path / "runs.db"
    sink = SQLiteSink(db)
    sink.open()
    try:
        sink.write(runs[:7])
        sink.write(runs[7:])
    finally:
        sink.close()
    with sqlite3.connect(db) as conn:
        stored = conn.execute(
            "SELECT run_id, pipeline, pipeline_version, deployment, status FROM runs"
        ).fetchall()
    assert sorted(stored) == [
        (r.run_id, r.pipeline, r.pipeline_version, r.deployment, r.status) for r in runs
    ]


def test_step_and_run_records_refuse_positional_fields() -> None:
    """Built once per step and per run from values of the same types: by keyword only."""
    with pytest.raises(TypeError):
        StepRecord("s", "s", "completed", 1.0, 2.0, 1.0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        RunRecord("r", "n", "p", "v", "completed", 1.0, 2.0, 1.0)  # type: ignore[misc]


def test_sqlite_sink_keeps_steps_in_the_run_row_and_artifacts_apart(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    sink = SQLiteSink(db)
    sink.open()
    try:
        sink.write([run_record("a", steps=2)])
    finally:
        sink.close()
    with sqlite3.connect(db) as conn:
        (steps,) = conn.execute("SELECT steps FROM runs WHERE run_id = 'a'").fetchone()
        kinds = {row[0]: row[1] for row in conn.execute("SELECT name, type FROM sqlite_master")}
    stored = json.loads(steps)
    assert [s["step_id"] for s in stored] == ["s0", "s1"]
    assert all(s["artifacts"] == [] for s in stored)  # in their own table, not twice
    assert stored[0]["logs"] == [[1.5, "stdout", "line 0"], [1.6, "info", "two"]]
    assert kinds["step_runs"] == kinds["step_logs"] == "view"
    assert kinds["runs"] == kinds["artifacts"] == kinds["code"] == "table"


V1_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, run_name TEXT NOT NULL, pipeline TEXT NOT NULL,
    pipeline_version TEXT NOT NULL, status TEXT NOT NULL, started_at REAL NOT NULL,
    finished_at REAL NOT NULL, duration REAL NOT NULL, parameters TEXT,
    output_preview TEXT, error TEXT, deployment TEXT
);
CREATE INDEX runs_started ON runs (started_at);
CREATE INDEX runs_pipeline ON runs (pipeline, started_at);
CREATE TABLE step_runs (
    run_id TEXT NOT NULL, step_id TEXT NOT NULL, step_name TEXT NOT NULL,
    status TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL NOT NULL,
    duration REAL NOT NULL, attempts INTEGER NOT NULL, input_preview TEXT,
    output_preview TEXT, error TEXT, PRIMARY KEY (run_id, step_id)
);
CREATE TABLE step_logs (
    run_id TEXT NOT NULL, step_id TEXT NOT NULL, seq INTEGER NOT NULL,
    ts REAL NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL,
    PRIMARY KEY (run_id, step_id, seq)
);
CREATE TABLE artifacts (
    run_id TEXT NOT NULL, step_id TEXT NOT NULL, name TEXT NOT NULL,
    kind TEXT NOT NULL, content TEXT NOT NULL
);
CREATE TABLE code (
    pipeline TEXT NOT NULL, pipeline_version TEXT NOT NULL, step_name TEXT NOT NULL,
    source TEXT, docstring TEXT, PRIMARY KEY (pipeline_version, step_name)
);
INSERT INTO runs VALUES ('old', 'p-old', 'p', 'v0', 'failed', 1.0, 3.0, 2.0, '{"a":1}', NULL, 'boom', NULL);
INSERT INTO runs VALUES ('quiet', 'p-quiet', 'p', 'v0', 'completed', 4.0, 5.0, 1.0, '{}', '1', NULL, NULL);
INSERT INTO step_runs VALUES ('old', 'second', 'b', 'failed', 2.0, 3.0, 1.0, 2, '{"x":1}', NULL, 'boom');
INSERT INTO step_runs VALUES ('old', 'first', 'a', 'completed', 1.0, 2.0, 1.0, 1, '{}', '"x"', NULL);
INSERT INTO step_logs VALUES ('old', 'second', 1, 2.6, 'error', 'then this');
INSERT INTO step_logs VALUES ('old', 'second', 0, 2.5, 'stdout', 'first this');
INSERT INTO artifacts VALUES ('old', 'first', 'v', 'html', '<b>x</b>');
"""


def test_sqlite_sink_migrates_a_version_1_store_without_losing_a_row(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(V1_SCHEMA)
    sink = SQLiteSink(db)
    sink.open()
    try:
        sink.write([run_record("new")])
    finally:
        sink.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        steps = conn.execute(
            "SELECT run_id, step_id, status, attempts, input_preview, output_preview, error "
            "FROM step_runs ORDER BY run_id, started_at"
        ).fetchall()
        logs = conn.execute(
            "SELECT run_id, step_id, seq, level, message FROM step_logs ORDER BY run_id, seq"
        ).fetchall()
        runs = conn.execute("SELECT run_id, status, error FROM runs ORDER BY run_id").fetchall()
        artifacts = conn.execute("SELECT run_id, name FROM artifacts ORDER BY run_id").fetchall()
    assert steps == [
        ("new", "s0", "completed", 1, None, None, None),
        ("old", "first", "completed", 1, "{}", '"x"', None),
        ("old", "second", "failed", 2, '{"x":1}', None, "boom"),
    ]
    assert logs == [
        ("new", "s0", 0, "stdout", "line 0"),
        ("new", "s0", 1, "info", "two"),
        ("old", "second", 0, "stdout", "first this"),
        ("old", "second", 1, "error", "then this"),
    ]
    assert runs == [("new", "completed", None), ("old", "failed", "boom"), ("quiet", "completed", None)]
    assert artifacts == [("new", "v"), ("old", "v")]


def test_sqlite_sink_refuses_a_store_from_a_newer_version(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    sink = SQLiteSink(db)
    with pytest.raises(SchemaError, match="schema version 99 is newer"):
        sink.open()


def test_sqlite_sink_fails_while_its_folder_is_gone_and_recovers(tmp_path: Path) -> None:
    store = tmp_path / "store"
    db = store / "runs.db"
    sink = SQLiteSink(db)
    sink.open()
    try:
        sink.write([run_record("before")])
        shutil.rmtree(store)
        with pytest.raises(OSError, match="gone"):
            sink.write([run_record("lost")])
        assert not store.exists()  # a failing write does not recreate anything
        store.mkdir()
        sink.write([run_record("after")])
    finally:
        sink.close()
    assert run_ids(db) == ["after"]  # a fresh database in the recreated folder


def test_sqlite_sink_reopens_a_removed_database_file(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    sink = SQLiteSink(db)
    sink.open()
    try:
        sink.write([run_record("one")])
        for path in tmp_path.glob("runs.db*"):
            path.unlink()
        sink.write([run_record("two")])
    finally:
        sink.close()
    assert run_ids(db) == ["two"]


def test_sqlite_sink_batch_is_all_or_nothing(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    sink = SQLiteSink(db)
    sink.open()
    try:
        bad = run_record("bad")
        bad.run_name = None  # type: ignore[assignment]  # violates NOT NULL, after a good record
        with pytest.raises(sqlite3.IntegrityError):
            sink.write([run_record("good"), bad])
        # The same when the bad record is in a later slice than good ones already inserted.
        with pytest.raises(sqlite3.IntegrityError):
            sink.write([run_record(f"good{i:03d}") for i in range(200)] + [bad])
        sink.write([run_record("next")])
    finally:
        sink.close()
    assert run_ids(db) == ["next"]


# -- JSON lines -----------------------------------------------------------------------------


def test_json_lines_sink_writes_one_object_per_record(tmp_path: Path) -> None:
    path = tmp_path / "out" / "runs.jsonl"
    sink = JsonLinesSink(path)
    sink.open()
    try:
        sink.write([run_record("a"), code_record()])
        sink.write([run_record("b")])
    finally:
        sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    objects = [json.loads(line) for line in lines]
    assert [o["type"] for o in objects] == ["run", "code", "run"]
    assert [o.get("run_id") for o in objects] == ["a", None, "b"]
    assert objects[0]["steps"][0]["logs"][0] == [1.5, "stdout", "line 0"]
    assert objects[1]["steps"] == [{"step_name": "s", "source": "def s(): ...", "docstring": None}]


def test_json_lines_sink_appends(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    for run_id in ("a", "b"):
        sink = JsonLinesSink(path)
        sink.open()
        sink.write([run_record(run_id)])
        sink.close()
    assert [json.loads(line)["run_id"] for line in path.read_text().splitlines()] == ["a", "b"]


# -- sink_from_url --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind", "path"),
    [
        ("sqlite:///var/data/runs.db", SQLiteSink, "/var/data/runs.db"),
        ("sqlite://relative/runs.db", SQLiteSink, "relative/runs.db"),
        ("runs.db", SQLiteSink, "runs.db"),
        ("/srv/runs.sqlite3", SQLiteSink, "/srv/runs.sqlite3"),
        ("jsonl:///var/log/runs.jsonl", JsonLinesSink, "/var/log/runs.jsonl"),
        ("jsonl:runs.jsonl", JsonLinesSink, "runs.jsonl"),
        ("/tmp/runs.ndjson", JsonLinesSink, "/tmp/runs.ndjson"),
        ("jsonl:-", JsonLinesSink, None),
        ("jsonl://-", JsonLinesSink, None),
        ("stdout", JsonLinesSink, None),
    ],
)
def test_sink_from_url_accepts(url: str, kind: type, path: str | None) -> None:
    sink = sink_from_url(url)
    assert type(sink) is kind
    assert sink.path == (Path(path) if path is not None else None)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "http://x/runs.db",
        "runs.txt",
        "",
        "jsonl",
        "postgres://db",  # no database named
        "postgresql://",
        "postgresql://u@h:port/runs",
        "postgresql://u@h:70000/runs",
        "postgresql://[::1/runs",
        "postgresql://h/runs?no_such_option=1",
    ],
)
def test_sink_from_url_rejects(url: str) -> None:
    with pytest.raises(CaptureURLError, match="expected"):
        sink_from_url(url)


def test_stdout_sink_does_not_close_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    sink = JsonLinesSink(None)
    sink.open()
    sink.write([run_record("to-stdout")])
    sink.close()
    out = capfd.readouterr().out
    assert json.loads(out.splitlines()[-1])["run_id"] == "to-stdout"


# -- previews -------------------------------------------------------------------------------


def test_preview_redacts_secret_looking_keys_at_any_depth() -> None:
    value = {
        "password": "p",
        "passwd": "p",
        "Token": "t",
        "access_token": "t",
        "client_secret": "s",
        "api_key": "k",
        "API-KEY": "k",
        "apiKey": "k",
        "Authorization": "Bearer x",
        "user": "ada",
        "nested": [{"secret": 1, "region": "eu"}, ("ok", {"private_key": "pk"})],
    }
    out = json.loads(preview(value, 10_000))
    for key in ("password", "passwd", "Token", "access_token", "client_secret", "api_key", "API-KEY"):
        assert out[key] == REDACTED, key
    assert out["apiKey"] == out["Authorization"] == REDACTED
    assert out["user"] == "ada"
    assert out["nested"] == [{"secret": REDACTED, "region": "eu"}, ["ok", {"private_key": REDACTED}]]


def secret_words() -> list[str]:
    """Every alternative of capture.redact.SECRET_WORDS as words, in the spellings
    names take (case, separators, embedded in a longer name)."""
    words = []
    for stem, before in SECRET_WORDS:
        for word in [stem] if not before else [b + sep + stem for b in before for sep in ("", "-", "_")]:
            words += [word, word.upper(), word.title(), f"my_{word}_2", f"x{word.capitalize()}"]
    return words


@pytest.mark.parametrize("word", secret_words())
def test_preview_redacts_every_secret_word_on_every_path(word: str) -> None:
    """Each path to a preview decides about names differently (a substring pre-check
    over the JSON text, names once per tuple, Struct fields once per type, redaction
    after a cut or of values JSON cannot carry); none may let a secret word through."""
    short, cut = 10_000, 40
    assert json.loads(preview({word: "hunter2", "user": "ada"}, short)) == {word: REDACTED, "user": "ada"}
    assert json.loads(preview([{"nested": {word: "hunter2"}}], short)) == [{"nested": {word: REDACTED}}]
    assert "hunter2" not in preview({"filler": "x" * 50, word: "hunter2"}, cut)
    assert json.loads(preview_fields((word, "user"), ["hunter2", "ada"], short)) == {
        word: REDACTED,
        "user": "ada",
    }
    shape = msgspec.defstruct("Shape", [("field", str)], rename={"field": word})
    assert json.loads(preview(shape("hunter2"), short)) == {word: REDACTED}
    described = json.loads(preview({word: "hunter2", "client": object()}, short))  # not JSON as it is
    assert described[word] == REDACTED


def test_preview_needs_the_word_before_a_stem_that_is_no_secret_alone() -> None:
    assert json.loads(preview({"key": "k", "monkey": "m"}, 1000)) == {"key": "k", "monkey": "m"}


def test_preview_redacts_letters_that_fold_to_a_secret_word() -> None:
    """ "password" with a long s (U+017F) matched the regex (re.I) but not the lowered
    stem "pass" the pre-check looked for, so alone in a dict it was shown in clear."""
    word = "pa\u017f\u017fword"
    assert json.loads(preview({word: "hunter2"}, 1000)) == {word: REDACTED}
    assert json.loads(preview({"\u212aey_api": "k", "API\u212aEY": "k"}, 1000)) == {  # the Kelvin sign
        "\u212aey_api": "k",
        "API\u212aEY": REDACTED,
    }


def test_preview_of_structs_redacts_by_field_name_and_nested_keys() -> None:
    """Structs of scalar fields skip the scan (their verdict is cached per type); a
    secret-looking field name, or a nested value that can hold keys, still redacts."""

    class Flat(msgspec.Struct):
        name: str
        count: int | None = None

    class WithSecret(msgspec.Struct):
        name: str
        api_key: str | None = None

    class Renamed(msgspec.Struct, rename={"word": "password"}):
        word: str

    class Nested(msgspec.Struct):
        name: str
        headers: dict[str, str]

    for _ in range(2):  # the second time from the per-type cache
        assert preview(Flat("token-shaped value", 3), 1000) == '{"name":"token-shaped value","count":3}'
        assert json.loads(preview(WithSecret("a", "k"), 1000)) == {"name": "a", "api_key": REDACTED}
        assert json.loads(preview(Renamed("w"), 1000)) == {"password": REDACTED}
        assert json.loads(preview(Nested("a", {"Authorization": "Bearer x"}), 1000)) == {
            "name": "a",
            "headers": {"Authorization": REDACTED},
        }


def test_preview_of_scalars_never_redacts_and_big_ints_are_described() -> None:
    assert preview("my password is hunter2", 1000) == '"my password is hunter2"'
    assert preview(2**70, 1000) == str(2**70)  # beyond 64 bits: shown as its repr
    assert preview(None, 1000) == "null"


def test_preview_redacts_a_cut_value_that_holds_a_secret() -> None:
    text = preview({"filler": "x" * 50, "password": "hunter2"}, 30)
    assert "hunter2" not in text and text.endswith(TRUNCATED)


@pytest.mark.parametrize(
    ("names", "values"),
    [
        (("name",), ["World"]),
        (("a", "b", "c", "d", "e"), [1, 2.5, True, None, "x"]),
        (("password",), ["hunter2"]),  # a secret-looking name
        (("user", "api_key"), ["ada", "k-123"]),
        (("config",), [{"token": "t", "depth": {"password": "p"}}]),  # a container value
        (("items",), [[1, 2, {"secret": 3}]]),
        (("big",), [2**80]),  # beyond 64 bits: described, not encoded
        (("text",), ["é" * 100]),  # cut at max_bytes
        (("a-b", "class", "ключ", ""), [1, 2, 3, 4]),  # keys that are not identifiers
        (("note",), ["my password is hunter2"]),  # a secret in a value, not a key
        (("nan",), [float("nan")]),
        ((0, "a"), [1, 2]),  # a name that is not a str (an extra positional's index)
        (("a", "a"), [1, 2]),  # repeated names: the dict keeps the last
    ],
)
def test_preview_fields_is_preview_of_the_dict(names: tuple[object, ...], values: list[object]) -> None:
    """The fast path for fixed names must give exactly what preview() gives."""
    for max_bytes in (16, 4096):
        assert preview_fields(names, values, max_bytes) == preview(
            dict(zip(names, values, strict=True)), max_bytes
        )
        assert preview_fields(names, values, max_bytes) == preview_fields(names, values, max_bytes)  # cached


def test_preview_redacts_values_json_cannot_carry() -> None:
    class Login(pydantic.BaseModel):
        user: str
        password: str

    shown = preview({"creds": Login(user="u", password="hunter2")}, 4000)
    assert "hunter2" not in shown and '"password":"***"' in shown
    assert "hunter2" not in preview({"client": object(), "password": "hunter2"}, 4000)


def test_preview_truncates_by_bytes_without_breaking_characters() -> None:
    text = preview("é" * 100, 11)
    assert text.endswith(TRUNCATED)
    head = text.removesuffix(TRUNCATED)
    assert len(head.encode()) <= 11 and head.startswith('"é')
    assert preview("short", 11) == '"short"'
    assert preview("x" * 9, 11) == '"' + "x" * 9 + '"'  # exactly max_bytes: kept whole


def test_preview_never_raises() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    assert preview(Opaque(), 100) == '"<opaque>"'  # described as a JSON string
    assert preview({1: "int key"}, 100) == '{"1":"int key"}'
    assert preview(float("nan"), 100) == "null"


# -- visualizations -------------------------------------------------------------------------


def test_visualization_artifacts() -> None:
    png = Visualization(kind="png", content=b"\x89PNG", name="plot").artifact()
    assert (png.name, png.kind, png.content) == ("plot", "png", "iVBORw==")
    svg = Visualization(kind="svg", content=b"<svg/>").artifact()
    assert (svg.name, svg.kind, svg.content) == ("visualization", "svg", "<svg/>")


def test_visualize_outside_a_run_does_nothing_and_checks_its_kind() -> None:
    visualize("<b>x</b>")  # no run: nothing to attach to, no error
    with pytest.raises(ValueError, match="kind"):
        visualize("x", kind="pdf")  # type: ignore[arg-type]
