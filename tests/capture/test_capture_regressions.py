"""Regressions found in review; each test failed before its fix."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runtimes import RuntimeOptions, pipeline, step
from runtimes.cache import StepCache
from runtimes.realtime import RealtimeRuntime


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@step
def login(user: str, password: str) -> str:
    return f"{user} logged in"


@pytest.mark.anyio
async def test_secret_passed_positionally_is_redacted(tmp_path: Path) -> None:
    @pipeline
    def p(user: str = "ada", password: str = "hunter2"):
        return login(user, password)

    runtime = RealtimeRuntime(RuntimeOptions(capture_url=f"sqlite://{tmp_path}/runs.db"))
    await runtime.start()
    try:
        result = await runtime.run(p, p.parse_parameters({}))
    finally:
        await runtime.stop()
    assert result.ok
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        (preview,) = conn.execute("SELECT input_preview FROM step_runs").fetchone()
        (params,) = conn.execute("SELECT parameters FROM runs").fetchone()
    assert "hunter2" not in preview
    assert '"user":"ada"' in preview and '"password":"***"' in preview
    assert "hunter2" not in params


def test_cache_keys_tell_tuples_from_lists() -> None:
    cache = StepCache()
    assert cache.key(login, [(1, 2)], {}) != cache.key(login, [[1, 2]], {})
    assert cache.key(login, [[1, 2]], {}) == cache.key(login, [[1, 2]], {})
