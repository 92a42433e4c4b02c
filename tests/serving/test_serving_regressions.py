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
