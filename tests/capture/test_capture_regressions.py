"""Regressions found in review; each test failed before its fix."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from capture_helpers import realtime, rows

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


def test_values_json_cannot_carry_are_still_redacted() -> None:
    import pydantic

    from capture.redact import preview

    class Login(pydantic.BaseModel):
        user: str
        password: str

    shown = preview({"creds": Login(user="u", password="hunter2")}, 4000)
    assert "hunter2" not in shown and '"password":"***"' in shown
    assert "hunter2" not in preview({"client": object(), "password": "hunter2"}, 4000)


def test_cache_keys_carry_types_and_step_identity() -> None:
    import datetime

    cache = StepCache()
    assert cache.key(login, [["T", 1]], {}) != cache.key(login, [(1,)], {})
    assert cache.key(login, [{"a": 1}], {}) != cache.key(login, [[["a", 1]]], {})
    assert cache.key(login, [datetime.date(2020, 1, 2)], {}) != cache.key(login, ["2020-01-02"], {})

    def make(k: int) -> object:
        @step(name="scaled")
        def scaled(x: int) -> int:
            return x * k

        return scaled

    assert cache.key(make(2), [1], {}) != cache.key(make(3), [1], {})


def test_unfinished_printed_lines_stay_with_their_step() -> None:
    import asyncio
    import io

    from runtimes import logcapture
    from runtimes.progress import StepScope, current_step

    loop = asyncio.new_event_loop()
    try:
        tee = logcapture._Tee(io.StringIO(), "stdout")
        a = StepScope("a", "r1", None, loop, logs=[])
        b = StepScope("b", "r2", None, loop, logs=[])
        token = current_step.set(a)
        tee.write("secret-of-a ")
        current_step.reset(token)
        token = current_step.set(b)
        tee.write("line of b\n")
        current_step.reset(token)
        logcapture.flush_partial(a)
    finally:
        loop.close()
    assert [line.message for line in b.logs] == ["line of b"]
    assert [line.message for line in a.logs] == ["secret-of-a "]


@step
async def make_features(n: int) -> dict:
    return {"n": n, "scaled": False}


@step
async def scale_in_place(features: dict) -> dict:
    features["scaled"] = True  # changes the upstream step's output object
    features["n"] *= 10
    return features


@pytest.mark.anyio
async def test_previews_show_values_as_each_step_saw_them(tmp_path: Path) -> None:
    """Inputs are previewed before a step runs and outputs when it returns, on the loop,
    not later in the writer: a step that changes its input in place must not rewrite
    what the store says it (and the step before it) was given and returned."""

    @pipeline
    def p(n: int = 3):
        return scale_in_place(make_features(n))

    db = tmp_path / "runs.db"
    async with realtime(db) as runtime:
        result = await runtime.run(p, p.parse_parameters({}))
    assert result.ok
    steps = {r["step_id"]: r for r in rows(db, "SELECT * FROM step_runs")}
    assert json.loads(steps["make_features"]["output_preview"]) == {"n": 3, "scaled": False}
    assert json.loads(steps["scale_in_place"]["input_preview"]) == {"features": {"n": 3, "scaled": False}}
    assert json.loads(steps["scale_in_place"]["output_preview"]) == {"n": 30, "scaled": True}
