"""Regressions found in review (daemon and CLI level); each test failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = f"{EXAMPLES / 'hello.py'}:hello"


@pytest.mark.parametrize("url", ["jsonl://", "jsonl:", "sqlite:///dev/null/store/runs.db"])
def test_unopenable_capture_store_is_one_line_and_exit_2(run_serving: Any, url: str) -> None:
    done = run_serving(HELLO, capture_url=url)
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert "SERVING_CAPTURE_URL" in lines[0]
    assert "Traceback" not in done.stderr


def test_metrics_speak_the_scrapers_format(daemon: Any) -> None:
    d = daemon(HELLO)
    plain = httpx.get(f"{d.url}/metrics")
    assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    om = httpx.get(f"{d.url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")


def test_runs_cli_errors_are_one_line_however_long(tmp_path: Path) -> None:
    home = tmp_path / ("very-long-folder-name-" * 6) / "home"
    env = {**os.environ, "SERVING_HOME": str(home), "COLUMNS": "60"}
    done = subprocess.run(
        [sys.executable, "-m", "serving", "runs", "list"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_file_next_to_the_pipeline_cannot_shadow_the_daemon(daemon: Any, tmp_path: Path) -> None:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "hello.py").write_text((EXAMPLES / "hello.py").read_text())
    (folder / "jobs.py").write_text("")  # a user module named like one of ours
    d = daemon(f"{folder / 'hello.py'}:hello")
    assert httpx.post(f"{d.url}/invoke", json={}).json()["outputs"] == {"greeting": "Hello World!"}


def test_hypercorn_listens_with_a_deep_backlog(daemon: Any) -> None:
    """Hypercorn re-listened with its default backlog of 100; 1000 SSE clients overflowed it."""
    d = daemon(HELLO)
    port = int(d.url.rsplit(":", 1)[1])
    rows = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
    assert rows, f"no listening socket on port {port}"
    assert int(rows[2]) >= 2048  # Send-Q of a listening socket is its backlog
