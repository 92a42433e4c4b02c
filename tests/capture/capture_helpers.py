"""Helpers for the in-process capture tests: the `observed` pipeline, a Realtime runtime
writing to a temporary SQLite store, store readers, a recording sink, and step log
capture made test-safe (fixtures, exported by conftest.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import structlog

from runtimes import RuntimeOptions, logcapture
from runtimes.realtime import RealtimeRuntime

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
TABLES = ("runs", "step_runs", "step_logs", "artifacts", "code")


def load_module(name: str) -> ModuleType:
    """Import tests/pipelines/<name>.py once per session under a private module name."""
    key = f"_capture_tests_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, PIPELINES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def observed_module() -> ModuleType:
    return load_module("observed")


@pytest.fixture
def step_log_capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`logcapture.install()` wraps sys.stdout once per process, but pytest swaps sys.stdout
    around every test; re-install for this test and undo it (streams, root handler) after."""
    root = logging.getLogger()
    before = list(root.handlers)
    for handler in before:
        if isinstance(handler, logcapture._StepLogHandler):
            root.removeHandler(handler)
    monkeypatch.setattr(logcapture, "_installed", False)
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    old = structlog.get_config()
    # As the daemon does: the capture processor in the chain; output is discarded here.
    structlog.configure(
        processors=[logcapture.structlog_processor, structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**old)
        for handler in list(root.handlers):
            if isinstance(handler, logcapture._StepLogHandler) and handler not in before:
                root.removeHandler(handler)
        for handler in before:
            if handler not in root.handlers:
                root.addHandler(handler)


@contextlib.asynccontextmanager
async def realtime(db: Path, sink: Any = None, **options: Any) -> AsyncIterator[RealtimeRuntime]:
    """A started Realtime runtime capturing to `db`; stopping it flushes everything."""
    runtime = RealtimeRuntime(RuntimeOptions(capture_url=f"sqlite://{db}", **options), sink=sink)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


def rows(db: Path, sql: str, *params: Any) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def counts(db: Path) -> dict[str, int]:
    return {t: rows(db, f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in TABLES}


class RecordingSink:
    """A sink that keeps every batch in memory (optionally failing or blocking)."""

    name = "recording"

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.opened = self.closed = False
        self.fail: BaseException | None = None

    @property
    def records(self) -> list[Any]:
        return [r for b in self.batches for r in b]

    def open(self) -> None:
        self.opened = True

    def write(self, batch: list[Any]) -> None:
        if self.fail is not None:
            raise self.fail
        self.batches.append(list(batch))

    def close(self) -> None:
        self.closed = True
