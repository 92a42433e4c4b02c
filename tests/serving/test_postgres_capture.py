"""Run history in PostgreSQL, from real daemons: two replicas writing one store and
`serving runs` (a real CLI process) reading it back, the server ending the sink's
connection mid-run, and start-up and CLI errors for stores that are not there."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pgdb import query
from polling import wait_until
from test_capture_http import HELLO, OBSERVED, invoke, metric_samples
from test_runs_cli import cli

HANG_GUARD = 30.0


def stored(url: str) -> set[str]:
    try:
        return {row[0] for row in query(url, "SELECT run_id FROM runs")}
    except Exception:  # the daemon has not created the schema yet
        return set()


def runs_json(home: Path, *args: str, **env: str) -> list[dict[str, Any]]:
    result = cli("runs", "list", "--output", "json", *args, home=home, **env)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert isinstance(runs, list)
    return runs


def test_two_replicas_write_one_store_and_runs_list_reads_all(
    daemon: Any, pg_url: str, tmp_path: Path
) -> None:
    replicas = [daemon(HELLO, wait=False, capture_url=pg_url) for _ in range(2)]
    for d in replicas:
        d.wait_ready()
    sent: dict[str, str] = {}
    for i in range(3):
        for r, d in enumerate(replicas):
            with d.client() as client:
                name = f"replica{r}-{i}"
                sent[invoke(client, name=name)] = name
    for d in replicas:
        d.signal()
    for d in replicas:
        assert d.wait(15) == 0, d.logs()  # a graceful stop flushes capture

    runs = runs_json(tmp_path, "--url", pg_url, "--limit", "100")
    assert {r["run_id"]: r["parameters"] for r in runs} == {rid: {"name": n} for rid, n in sent.items()}
    assert all(
        set(r) == {"run_id", "pipeline", "status", "started_at", "duration", "parameters"} for r in runs
    )
    assert {(r["pipeline"], r["status"]) for r in runs} == {("hello", "completed")}
    started = [r["started_at"] for r in runs]
    assert started == sorted(started, reverse=True)  # newest first
    # The same through SERVING_CAPTURE_URL, with --limit; and one run shown in full.
    assert runs_json(tmp_path, "--limit", "2", SERVING_CAPTURE_URL=pg_url) == runs[:2]
    shown = cli("runs", "show", runs[-1]["run_id"][-10:], home=tmp_path, SERVING_CAPTURE_URL=pg_url)
    assert shown.returncode == 0, shown.stderr
    assert runs[-1]["run_id"] in shown.stdout and "say_hello" in shown.stdout
    assert query(pg_url, "SELECT count(*) FROM code") == [(1,)]  # once per version, not per replica


def test_runs_show_on_postgres_matches_sqlite(daemon: Any, pg_url: str, tmp_path: Path) -> None:
    """The same pipeline run into both stores: `runs show` prints the same run."""
    outputs = []
    for url in (pg_url, f"sqlite://{tmp_path / 'runs.db'}"):
        d = daemon(OBSERVED, capture_url=url)
        with d.client() as client:
            run_id = invoke(client, marker="both-stores")
        d.signal()
        assert d.wait(15) == 0, d.logs()
        result = cli("runs", "show", run_id, home=tmp_path, SERVING_CAPTURE_URL=url)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout.replace(run_id, "<id>"))
    pg_out, sqlite_out = outputs
    for needle in (
        "print-sync both-stores",
        "logging-async both-stores",
        "Visualizations",
        '"password":"***"',
    ):
        assert needle in pg_out
    # Two runs, not one: concurrent steps (and their log lines) may start in either
    # order from one run to the next, so the lines are compared as a multiset.
    assert sorted(normalized(pg_out)) == sorted(normalized(sqlite_out))


def normalized(shown: str) -> list[str]:
    """`runs show` without what differs between two runs of the same input: times,
    durations, the run's name (it holds its start time), and the padding they cause."""
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<ts>", shown)
    text = re.sub(r"observed-\d{8}T[\d.]+Z", "<name>", text)
    text = re.sub(r"\d+(\.\d+)? (ms|s)\b", "<t>", text)
    text = re.sub(r"[─━═]+", "-", text)
    return [" ".join(line.split()) for line in text.splitlines()]


def test_postgres_ending_the_connection_opens_the_breaker_and_capture_recovers(
    daemon: Any, pg_url: str
) -> None:
    d = daemon(
        HELLO,
        capture_url=pg_url,
        capture_batch_interval=0.01,
        capture_breaker_failures=1,
        capture_breaker_cooldown=0.5,
    )
    with d.client() as client:
        first = invoke(client, name="before")
        wait_until(lambda: first in stored(pg_url), "the first run stored", timeout=HANG_GUARD)
        terminated = query(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'serving'",
        )
        assert terminated == [(True,)], "the sink's one connection"

        def dropped() -> bool:
            invoke(client, name="while-gone")  # every request still succeeds
            return client.get("/status").json()["capture"]["dropped"] > 0

        wait_until(dropped, "a batch dropped", timeout=HANG_GUARD, detail=d.stderr_detail)
        status = client.get("/status").json()["capture"]
        assert status["sink"] == "postgresql"
        assert status["breaker"]["times_opened"] >= 1
        assert "terminat" in status["breaker"]["last_error"]
        assert metric_samples(client)[("serving_capture_dropped_total", (("reason", "sink_error"),))] > 0

        def resumed() -> set[str]:
            run_id = invoke(client, name="after")
            state = client.get("/status").json()["capture"]["breaker"]["state"]
            return {run_id} & stored(pg_url) if state == "closed" else set()

        wait_until(
            resumed, "capture to resume on a new connection", timeout=HANG_GUARD, detail=d.stderr_detail
        )
    events = [e.get("event") for e in d.log_events()]
    assert "capture_sink_failed" in events and "capture_sink_recovered" in events


# -- errors -----------------------------------------------------------------------------------


def test_unreachable_postgres_fails_the_start_with_one_line(run_serving: Any) -> None:
    url = "postgresql://postgres:s3cret-pw@127.0.0.1:1/runs?connect_timeout=2"
    result = run_serving(HELLO, capture_url=url)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("serving: error: SERVING_CAPTURE_URL='postgresql://postgres:***@127.0.0.1:1/")
    assert "Connection refused" in lines[0] and "s3cret-pw" not in result.stderr


def test_postgres_store_from_a_newer_version_fails_the_start(run_serving: Any, pg_url: str) -> None:
    query(pg_url, "CREATE TABLE run_store_version (version INTEGER NOT NULL)")
    query(pg_url, "INSERT INTO run_store_version VALUES (99)")
    result = run_serving(HELLO, capture_url=pg_url)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("serving: error: SERVING_CAPTURE_URL=")
    assert "schema version 99 is newer than this serving's (1)" in lines[0]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://postgres@127.0.0.1:1/runs?connect_timeout=2", "cannot reach the capture store"),
        ("postgresql://postgres@127.0.0.1:5432", "no database named"),
        ("postgres://h:port/runs", "is not a port number"),
        ("jsonl:-", "not SQLite or PostgreSQL"),
    ],
)
def test_runs_list_bad_store_url_is_one_line(tmp_path: Path, url: str, message: str) -> None:
    result = cli("runs", "list", "--output", "json", "--url", url, home=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("serving: error: ") and message in line


def test_runs_list_of_a_database_without_runs(tmp_path: Path, pg_url: str) -> None:
    result = cli("runs", "list", "--url", pg_url, home=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "no run store in" in line and "nothing captured yet" in line


def test_status_and_health_name_the_sink(daemon: Any, pg_url: str) -> None:
    d = daemon(HELLO, capture_url=pg_url)
    with httpx.Client(base_url=d.url) as client:
        assert client.get("/status").json()["capture"]["sink"] == "postgresql"
