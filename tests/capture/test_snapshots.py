"""Previews taken on the event loop (`snapshot`) and finished in the writer thread.

The loop's snapshot must be the value as it was when taken (the writer may run a batch
interval later, after the caller and later steps changed the objects), finishing it in
the writer must give the text a preview made on the spot gives, and no sink may ever
see a preview that is not finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
from capture_helpers import RecordingSink, realtime, rows

from capture.records import RunRecord
from capture.redact import REDACTED, TRUNCATED, finish, preview, snapshot, snapshot_fields
from runtimes import pipeline, step

pytestmark = pytest.mark.anyio


@step
async def build(n: int) -> Annotated[dict, "features"]:
    return {"n": n, "tags": ["a"]}


@pipeline
def features(n: int = 3):
    return build(n)


async def test_previews_are_the_values_when_taken_not_when_written(tmp_path: Path) -> None:
    """The run's outputs and the step's output are the same dict the caller gets back.
    The writer finishes the record a batch interval later; the caller changing that
    dict in place meanwhile must not change what the store says the run returned."""
    db = tmp_path / "runs.db"
    async with realtime(db, capture_batch_interval=3600) as runtime:
        result = await runtime.run(features, features.parse_parameters({}))
        assert result.ok and result.outputs is not None
        assert runtime.publisher.queued == 2  # code and run, not written yet: the batch waits for stop()
        out = result.outputs["features"]
        out["n"] = 999
        out["tags"].append("changed later")
        out["password"] = "hunter2"
    (run,) = rows(db, "SELECT output_preview FROM runs")
    (step_run,) = rows(db, "SELECT output_preview FROM step_runs")
    assert json.loads(run["output_preview"]) == {"features": {"n": 3, "tags": ["a"]}}
    assert json.loads(step_run["output_preview"]) == {"n": 3, "tags": ["a"]}


class Login(msgspec.Struct):
    user: str
    password: str


class Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("password", '"password"'),  # a value, not a key: kept
        (42, "42"),
        (
            {"token": "t", "nested": [{"API-Key": 1, "key": 2}]},
            '{"token":"***","nested":[{"API-Key":"***","key":2}]}',
        ),
        (Login(user="ada", password="x"), '{"user":"ada","password":"***"}'),
        ({1: "one"}, '{"1":"one"}'),
        (Opaque(), '"Opaque()"'),
        (2**80, "1208925819614629174706176"),  # msgspec encodes big ints as they are
    ],
)
def test_a_finished_snapshot_is_the_preview(value: Any, expected: str) -> None:
    assert finish(snapshot(value, 4096), 4096) == expected
    assert preview(value, 4096) == expected


def test_fields_by_name_are_redacted_in_the_writer() -> None:
    names = ("user", "password")
    taken = snapshot_fields(names, ["ada", "hunter2"], 4096)
    assert isinstance(taken, bytes)  # on the loop: one encode, nothing else
    assert finish(taken, 4096) == '{"user":"ada","password":"***"}'
    assert finish(snapshot_fields(("a", "a"), [1, 2], 4096), 4096) == '{"a":2}'  # a dict's answer


def test_a_long_value_is_finished_on_the_loop() -> None:
    """A queued run holds at most `max_bytes` per preview, whatever a step returned."""
    taken = snapshot({"secret": "s", "blob": "x" * 100_000}, 64)
    assert isinstance(taken, str) and taken.endswith(TRUNCATED)
    assert len(taken.removesuffix(TRUNCATED).encode()) <= 64
    assert '"secret":"***"' in taken
    assert finish(taken, 64) == taken
    assert finish(snapshot(["y" * 1000], 64), 64) == '["' + "y" * 62 + TRUNCATED


def test_an_unreadable_snapshot_is_hidden() -> None:
    assert finish(b'{"password": ', 4096) == REDACTED


@step
async def echo_config(config: dict) -> Annotated[dict, "config"]:
    return config


@pipeline
def configured(config: dict | None = None):
    return echo_config(config)


async def test_sinks_only_ever_see_finished_previews(tmp_path: Path) -> None:
    """A dict's snapshot leaves the loop as JSON bytes; the sink gets the redacted text."""
    sink = RecordingSink()
    params = configured.parse_parameters({"config": {"token": "t0k3n", "region": "eu"}})
    async with realtime(tmp_path / "unused.db", sink=sink) as runtime:
        assert (await runtime.run(configured, params)).ok
    (run,) = [r for r in sink.records if isinstance(r, RunRecord)]
    (step_run,) = run.steps
    previews = [run.parameters, run.output_preview, step_run.input_preview, step_run.output_preview]
    assert all(type(p) is str for p in previews), previews
    assert json.loads(step_run.input_preview or "") == {"config": {"token": REDACTED, "region": "eu"}}
    assert json.loads(run.output_preview or "") == {"config": {"token": REDACTED, "region": "eu"}}
    assert not any("t0k3n" in (p or "") for p in previews)
