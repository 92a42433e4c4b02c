"""`serving runs list|show` against a store a real daemon wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent
OBSERVED = f"{TESTS / 'pipelines' / 'observed.py'}:observed"


class Store:
    def __init__(self, home: Path, completed: list[str], failed: list[str]) -> None:
        self.home = home
        self.completed = completed
        self.failed = failed


def cli(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    environ.update(SERVING_HOME=str(home), COLUMNS="120", NO_COLOR="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "serving", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def store(module_daemon: Any, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Three completed and two failed runs of `observed`, flushed by a graceful stop."""
    home = tmp_path_factory.mktemp("runs-home")
    d = module_daemon(OBSERVED, SERVING_HOME=home)
    completed, failed = [], []
    with d.client() as client:
        for i in range(3):
            r = client.post("/invoke", json={"parameters": {"marker": f"cli-ok-{i}"}})
            assert r.json()["success"] is True, r.text
            completed.append(r.json()["metadata"]["run_id"])
        for i in range(2):
            r = client.post("/invoke", json={"parameters": {"marker": f"cli-bad-{i}", "fail": True}})
            assert r.json()["success"] is False, r.text
            failed.append(r.json()["metadata"]["run_id"])
    d.signal()
    assert d.wait(15) == 0, d.logs()
    return Store(home, completed, failed)


def test_runs_list_shows_every_run(store: Store) -> None:
    result = cli("runs", "list", home=store.home)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Runs (5 shown, newest first)" in out
    for column in ("RUN ID", "PIPELINE", "STATUS", "STARTED (UTC)", "DURATION"):
        assert column in out
    for run_id in store.completed + store.failed:
        assert run_id[-12:] in out
    assert out.count("completed") == 3
    assert out.count("failed") == 2
    lines = out.splitlines()
    assert all(len(line) <= 120 for line in lines)
    # Newest first: the last failed run comes before the first completed one.
    row = {
        rid: next(i for i, line in enumerate(lines) if rid[-12:] in line)
        for rid in store.completed + store.failed
    }
    assert row[store.failed[-1]] < row[store.completed[0]]


def test_runs_list_filters(store: Store) -> None:
    failed = cli("runs", "list", "--status", "failed", home=store.home)
    assert failed.returncode == 0, failed.stderr
    assert "Runs (2 shown" in failed.stdout
    assert all(rid[-12:] in failed.stdout for rid in store.failed)
    assert not any(rid[-12:] in failed.stdout for rid in store.completed)

    limited = cli("runs", "list", "--limit", "1", home=store.home)
    assert "Runs (1 shown" in limited.stdout and store.failed[-1][-12:] in limited.stdout

    # no match: a sentence naming the filter and the store, not an empty table
    other = cli("runs", "list", "--pipeline", "no-such-pipeline", "--status", "failed", home=store.home)
    assert other.returncode == 0, other.stderr
    [sentence] = other.stdout.splitlines()
    assert sentence.startswith("No run with status 'failed' and pipeline 'no-such-pipeline' in sqlite:")
    assert f"{store.home / 'runs.db'}; `serving runs list` shows every run." in sentence
    as_json = cli("runs", "list", "--pipeline", "no-such-pipeline", "--output", "json", home=store.home)
    assert json.loads(as_json.stdout) == []


def test_runs_list_db_option(store: Store, tmp_path: Path) -> None:
    result = cli("runs", "list", "--db", str(store.home / "runs.db"), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Runs (5 shown" in result.stdout


def test_runs_show_a_completed_run(store: Store) -> None:
    run_id = store.completed[1]
    result = cli("runs", "show", run_id[-8:], home=store.home)  # any unique part
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert run_id in out
    assert "observed (version" in out
    for step in ("load", "total", "chart", "square", "spell", "echo", "summarize"):
        assert step in out
    assert "print-sync cli-ok-1" in out and "logging-async cli-ok-1" in out
    assert "cli-ok-0" not in out and "cli-ok-2" not in out
    assert "Visualizations" in out and "attached" in out and "returned" in out
    assert '"password":"***"' in out
    assert "hunter2-secret-value" not in out


def test_runs_show_a_failed_run(store: Store) -> None:
    result = cli("runs", "show", store.failed[0], home=store.home)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "failed" in out
    assert "failure requested" in out  # the run's and the step's error
    assert out.count("failure requested") >= 2


def test_runs_show_unknown_id(store: Store) -> None:
    result = cli("runs", "show", "zzzz", home=store.home)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["serving: error: no run with id 'zzzz'"]


def test_runs_show_ambiguous_part(store: Store) -> None:
    every = store.completed + store.failed
    shared = every[0]  # time-ordered ids made seconds apart share their first digits
    while not all(rid.startswith(shared) for rid in every):
        shared = shared[:-1]
    assert shared
    result = cli("runs", "show", shared, home=store.home)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"serving: error: {shared!r} matches more than one run (")
    assert line.endswith("give more of the id")
    assert sum(rid in line for rid in every) == 5


def test_runs_show_whole_id_and_pasted_ellipsis(store: Store) -> None:
    run_id = store.completed[0]
    whole = cli("runs", "show", run_id.upper(), home=store.home)
    assert whole.returncode == 0, whole.stderr
    assert run_id in whole.stdout
    pasted = cli("runs", "show", "…" + run_id[-12:], home=store.home)  # as `runs list` prints it
    assert pasted.returncode == 0, pasted.stderr
    assert run_id in pasted.stdout


@pytest.mark.parametrize("given", ["", "  ", "…"])
def test_runs_show_needs_an_id(store: Store, given: str) -> None:
    result = cli("runs", "show", given, home=store.home)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "serving: error: give a run id, or any unique part of one (`serving runs list` shows them)"
    ]


@pytest.mark.parametrize("limit", ["0", "-1", "ten"])
def test_runs_list_refuses_a_bad_limit(store: Store, limit: str) -> None:
    result = cli("runs", "list", "--limit", limit, home=store.home)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--limit" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_store(tmp_path: Path) -> None:
    result = cli("runs", "list", home=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("serving: error: no capture store at ")
    assert "runs.db" in result.stderr
    assert not (tmp_path / "runs.db").exists()  # reading never creates a store


def test_errors_are_one_line_however_long_the_path(tmp_path: Path) -> None:
    home = tmp_path / ("very-long-folder-name-" * 6) / "home"
    env = {**os.environ, "SERVING_HOME": str(home), "COLUMNS": "60"}
    done = subprocess.run(
        [sys.executable, "-m", "serving", "runs", "list"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_non_sqlite_store_is_refused(tmp_path: Path) -> None:
    result = cli("runs", "list", home=tmp_path, SERVING_CAPTURE_URL="jsonl:-")
    assert result.returncode == 1
    assert "not SQLite or PostgreSQL" in result.stderr


def test_runs_list_output_json(store: Store) -> None:
    result = cli("runs", "list", "--output", "json", home=store.home)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    every = store.completed + store.failed
    assert [r["run_id"] for r in runs] == every[::-1]  # newest first
    assert [r["status"] for r in runs] == ["failed"] * 2 + ["completed"] * 3
    for run in runs:
        assert set(run) == {"run_id", "pipeline", "status", "started_at", "duration", "parameters"}
        assert run["pipeline"] == "observed" and run["duration"] > 0
        assert isinstance(run["started_at"], float)
    assert runs[0]["parameters"]["marker"] == "cli-bad-1" and runs[0]["parameters"]["fail"] is True
    assert runs[-1]["parameters"]["marker"] == "cli-ok-0"
    failed = json.loads(cli("runs", "list", "--output", "json", "--status", "failed", home=store.home).stdout)
    assert [r["run_id"] for r in failed] == store.failed[::-1]
    empty = cli("runs", "list", "--output", "json", "--pipeline", "none", home=store.home)
    assert empty.returncode == 0 and json.loads(empty.stdout) == []
