"""Capture from a real daemon: the SQLite store in $SERVING_HOME, the flush on shutdown,
the circuit breaker around a sink that really fails, JSON lines, and what turns it off."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import wait_until
from prometheus_client.parser import text_string_to_metric_families

TESTS = Path(__file__).resolve().parent.parent
HELLO = f"{TESTS.parent / 'examples' / 'hello.py'}:hello"
OBSERVED = f"{TESTS / 'pipelines' / 'observed.py'}:observed"
QUIET = f"{TESTS / 'pipelines' / 'memory_only.py'}:quiet"
HANG_GUARD = 30.0
SECRETS = ("hunter2-secret-value", "tok-secret-value", "key-secret-value")


def query(db: Path, sql: str, *params: Any) -> list[sqlite3.Row]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def stored_run_ids(db: Path) -> set[str]:
    if not db.is_file():
        return set()
    try:
        return {r["run_id"] for r in query(db, "SELECT run_id FROM runs")}
    except sqlite3.OperationalError:  # created but the schema is not there yet
        return set()


def invoke(client: httpx.Client, **parameters: Any) -> str:
    """POST /invoke; asserts success and returns the run id."""
    r = client.post("/invoke", json={"parameters": parameters})
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True
    return r.json()["metadata"]["run_id"]


def metric_samples(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def stop(daemon: Any) -> None:
    daemon.signal()
    assert daemon.wait(15) == 0, daemon.logs()


# -- the default store ---------------------------------------------------------------------


def test_invocations_are_stored_in_serving_home(daemon: Any, tmp_path: Path) -> None:
    home = tmp_path / "serving-home"
    d = daemon(OBSERVED, SERVING_HOME=home)
    db = home / "runs.db"
    markers = [f"http-{i}" for i in range(5)]
    with d.client() as client:
        run_ids = [invoke(client, marker=m, n=i) for i, m in enumerate(markers)]
    wait_until(
        lambda: stored_run_ids(db) >= set(run_ids),
        "all runs in runs.db",
        timeout=HANG_GUARD,
        detail=d.stderr_detail,
    )

    for marker, run_id in zip(markers, run_ids, strict=True):
        (run,) = query(db, "SELECT * FROM runs WHERE run_id = ?", run_id)
        assert run["pipeline"] == "observed" and run["status"] == "completed"
        assert json.loads(run["parameters"])["password"] == "***"
        steps = query(db, "SELECT step_id, status FROM step_runs WHERE run_id = ?", run_id)
        assert len(steps) == 7 and {s["status"] for s in steps} <= {"completed", "cached"}
        logs = {
            (r["step_id"], r["message"])
            for r in query(db, "SELECT step_id, message FROM step_logs WHERE run_id = ?", run_id)
        }
        assert logs == {
            ("load", f"print-sync {marker}"),
            ("load", f"logging-sync {marker}"),
            ("total", f"print-async {marker}"),
            ("total", f"structlog-async marker={marker!r}"),
            ("total", f"logging-async {marker}"),
            ("spell", f"print-gen {marker}"),
            ("echo", f"print-agen {marker}"),
        }
        artifacts = query(db, "SELECT name FROM artifacts WHERE run_id = ? ORDER BY name", run_id)
        assert [a["name"] for a in artifacts] == ["attached", "returned"]
    versions = {r["pipeline_version"] for r in query(db, "SELECT pipeline_version FROM runs")}
    code = query(db, "SELECT pipeline_version, step_name FROM code")
    assert {c["pipeline_version"] for c in code} == versions and len(code) == 7
    stop(d)
    dump = "\n".join(line for line in sqlite3.connect(db).iterdump())
    for secret in SECRETS:
        assert secret not in dump


def test_shutdown_flushes_every_queued_run(daemon: Any, tmp_path: Path) -> None:
    home = tmp_path / "serving-home"
    # Nothing is written before the signal: batches of 500, or every hour.
    d = daemon(HELLO, SERVING_HOME=home, capture_batch_interval=3600)
    with d.client() as client:
        run_ids = [invoke(client, name=f"n{i}") for i in range(200)]
        capture = client.get("/status").json()["capture"]
    assert capture["queued"] == 201  # 200 runs and the pipeline's code
    assert capture["written"] == 0
    stop(d)
    db = home / "runs.db"
    assert stored_run_ids(db) == set(run_ids)
    assert len(query(db, "SELECT * FROM code")) == 1
    flushed = [e for e in d.log_events() if e.get("event") == "capture_flushed"]
    assert flushed and flushed[-1]["written"] == 201 and flushed[-1]["dropped"] == 0


# -- a sink that really fails -----------------------------------------------------------------


def test_breaker_opens_on_a_failing_store_and_capture_resumes(daemon: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    db = store / "runs.db"
    d = daemon(
        HELLO,
        capture_url=f"sqlite://{db}",
        capture_batch_interval=0.01,
        capture_breaker_cooldown=0.5,
    )
    with d.client() as client:
        first = invoke(client, name="before")
        wait_until(
            lambda: first in stored_run_ids(db),
            "the first run stored",
            timeout=HANG_GUARD,
            detail=d.stderr_detail,
        )
        shutil.rmtree(store)

        def breaker_open() -> bool:
            invoke(client, name="while-gone")  # every request still succeeds
            return client.get("/status").json()["capture"]["breaker"]["state"] == "open"

        wait_until(breaker_open, "the breaker to open", timeout=HANG_GUARD, detail=d.stderr_detail)
        status = client.get("/status").json()["capture"]
        assert "gone" in status["breaker"]["last_error"]
        samples = metric_samples(client)
        assert samples[("serving_capture_breaker_open", ())] == 1
        assert samples[("serving_capture_dropped_total", (("reason", "sink_error"),))] > 0
        assert not store.exists()  # nothing recreated it behind our back

        store.mkdir()

        def resumed() -> set[str]:
            run_id = invoke(client, name="after")
            state = client.get("/status").json()["capture"]["breaker"]["state"]
            return {run_id} & stored_run_ids(db) if state == "closed" else set()

        wait_until(
            resumed, "capture to resume into the new store", timeout=HANG_GUARD, detail=d.stderr_detail
        )
        assert client.get("/status").json()["capture"]["breaker"]["state"] == "closed"
        assert metric_samples(client)[("serving_capture_breaker_open", ())] == 0
    assert first not in stored_run_ids(db)  # a new database in the recreated folder
    events = [e.get("event") for e in d.log_events()]
    assert "capture_sink_failed" in events and "capture_sink_recovered" in events


# -- other sinks and switching capture off ----------------------------------------------------


def test_jsonl_capture_url_writes_json_lines(daemon: Any, tmp_path: Path) -> None:
    path = tmp_path / "out" / "runs.jsonl"
    home = tmp_path / "serving-home"
    d = daemon(HELLO, SERVING_HOME=home, capture_url=f"jsonl://{path}")
    with d.client() as client:
        run_ids = [invoke(client, name=f"j{i}") for i in range(3)]
    stop(d)
    objects = [json.loads(line) for line in path.read_text().splitlines()]
    runs = [o for o in objects if o["type"] == "run"]
    assert sorted(r["run_id"] for r in runs) == sorted(run_ids)
    assert all(r["pipeline"] == "hello" and r["steps"][0]["step_id"] == "say_hello" for r in runs)
    assert [o["pipeline"] for o in objects if o["type"] == "code"] == ["hello"]
    assert not (home / "runs.db").exists()


@pytest.mark.parametrize(
    ("pipeline", "settings"),
    [
        (HELLO, {"runtime": "memory"}),
        (QUIET, {}),
        (HELLO, {"capture_memory_only": "true"}),
    ],
    ids=["SERVING_RUNTIME=memory", "Capture(memory_only=True)", "SERVING_CAPTURE_MEMORY_ONLY"],
)
def test_memory_only_writes_nothing(
    daemon: Any, tmp_path: Path, pipeline: str, settings: dict[str, str]
) -> None:
    home = tmp_path / "serving-home"
    home.mkdir()
    d = daemon(pipeline, SERVING_HOME=home, **settings)
    with d.client() as client:
        assert client.get("/status").json()["runtime"] == "memory"
        assert "capture" not in client.get("/status").json()
        for _ in range(3):
            client.post("/invoke", json={}).raise_for_status()
    stop(d)
    assert list(home.iterdir()) == []


def test_capture_metadata_override(daemon: Any, tmp_path: Path) -> None:
    home = tmp_path / "serving-home"
    d = daemon(OBSERVED, SERVING_HOME=home, capture_metadata="false")
    with d.client() as client:
        run_id = invoke(client, marker="no-metadata")
    stop(d)
    db = home / "runs.db"
    (run,) = query(db, "SELECT parameters, output_preview FROM runs WHERE run_id = ?", run_id)
    assert tuple(run) == (None, None)
    steps = query(db, "SELECT input_preview, output_preview FROM step_runs WHERE run_id = ?", run_id)
    assert len(steps) == 7 and all(tuple(s) == (None, None) for s in steps)
    assert query(db, "SELECT count(*) AS n FROM step_logs")[0]["n"] == 7  # logs are still captured


@pytest.mark.parametrize("url", ["postgres://127.0.0.1:5432", "sqlite:///", "runs.txt"])
def test_bad_capture_url_is_one_line_and_exit_2(run_serving: Any, url: str) -> None:
    result = run_serving(HELLO, capture_url=url)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("serving: error: SERVING_CAPTURE_URL=")
    assert "expected" in lines[0]


def test_capture_store_from_a_newer_version_is_one_line_and_exit_2(run_serving: Any, tmp_path: Path) -> None:
    db = tmp_path / "newer" / "runs.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    result = run_serving(HELLO, capture_url=f"sqlite:///{db}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("serving: error: SERVING_CAPTURE_URL=")
    assert "schema version 99 is newer than this serving's (2)" in lines[0]
