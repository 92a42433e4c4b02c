"""RuntimeOptions built outside the daemon: the default capture store is a real path."""

from __future__ import annotations

from pathlib import Path

import pytest

from capture.sinks import SQLiteSink, sink_from_url
from runtimes import RuntimeOptions
from serving.settings import load_settings


def test_default_capture_url_is_under_the_expanded_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SERVING_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    url = RuntimeOptions().capture_url
    assert url == f"sqlite://{tmp_path.resolve()}/.serving/runs.db"
    sink = sink_from_url(url)
    assert isinstance(sink, SQLiteSink) and sink.path == tmp_path.resolve() / ".serving" / "runs.db"


@pytest.mark.parametrize("home", ["{tmp}/elsewhere", "~/x", "  {tmp}/padded  "])
def test_default_capture_url_follows_serving_home_as_the_daemon_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home: str
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SERVING_HOME", home.format(tmp=tmp_path))
    assert "~" not in RuntimeOptions().capture_url
    assert RuntimeOptions().capture_url == load_settings().effective_capture_url


def test_empty_serving_home_means_the_default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SERVING_HOME", " ")
    assert RuntimeOptions().capture_url == f"sqlite://{tmp_path.resolve()}/.serving/runs.db"


def test_an_explicit_capture_url_is_kept() -> None:
    assert RuntimeOptions(capture_url="jsonl:-").capture_url == "jsonl:-"
