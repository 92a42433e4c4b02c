"""The Realtime runtime's capture, in-process: what is recorded follows the pipeline's
Capture options (never what a run computes), previews, redaction, step logs, code,
visualizations and the step cache."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import msgspec
import pytest
from capture_helpers import RecordingSink, counts, realtime, rows
from prometheus_client import REGISTRY

from capture.records import CodeRecord, RunRecord
from capture.redact import TRUNCATED
from runtimes import RunStatus, logcapture, pipeline, step
from runtimes.memory import MemoryOnlyRuntime
from runtimes.progress import StepScope, current_step
from runtimes.realtime import pipeline_version

pytestmark = pytest.mark.anyio

FLAGS = ("code", "logs", "metadata", "visualizations", "metrics", "memory_only")
COMBINATIONS = list(itertools.product((False, True), repeat=len(FLAGS)))
STEPS = {"load", "total", "chart", "square", "spell", "echo", "summarize"}
SECRETS = ("hunter2-secret-value", "tok-secret-value", "key-secret-value")


def _combo_id(combo: tuple[bool, ...]) -> str:
    return "-".join(f for f, on in zip(FLAGS, combo, strict=True) if on) or "none"


def _step_samples(step: str) -> float:
    return REGISTRY.get_sample_value("serving_step_duration_seconds_count", {"step": step}) or 0.0


def _store_text(db: Path) -> str:
    """Every value in every table, as one string (to look for leaked secrets)."""
    parts = []
    for table in ("runs", "step_runs", "step_logs", "artifacts", "code"):
        for row in rows(db, f"SELECT * FROM {table}"):
            parts.extend(str(v) for v in tuple(row))
    return "\n".join(parts)


async def _memory_outputs(pipe: Any, params: msgspec.Struct) -> dict[str, Any]:
    runtime = MemoryOnlyRuntime()
    await runtime.start()
    try:
        result = await runtime.run(pipe, params)
    finally:
        await runtime.stop()
    assert result.status is RunStatus.completed, result.error
    assert result.outputs is not None
    return result.outputs


# -- Capture options change what is recorded, never what is computed --------------------


@pytest.mark.parametrize("combo", COMBINATIONS, ids=[_combo_id(c) for c in COMBINATIONS])
async def test_capture_options_never_change_outputs(
    combo: tuple[bool, ...], observed_module: ModuleType, tmp_path: Path, step_log_capture: None
) -> None:
    options = dict(zip(FLAGS, combo, strict=True))
    pipe = observed_module.observed
    params = pipe.parse_parameters({"marker": f"combo-{_combo_id(combo)}", "n": 5})
    expected = await _memory_outputs(pipe, params)
    samples_before = _step_samples("load")
    db = tmp_path / "runs.db"

    async with realtime(db, capture_overrides=options) as runtime:
        result = await runtime.run(pipe, params)

    assert result.status is RunStatus.completed, result.error
    assert result.outputs == expected
    stored = counts(db)
    if options["memory_only"]:
        assert stored == dict.fromkeys(stored, 0)
        assert _step_samples("load") == samples_before
        return

    (run,) = rows(db, "SELECT * FROM runs")
    assert run["run_id"] == result.run_id
    assert run["status"] == "completed"
    steps = rows(db, "SELECT * FROM step_runs")
    assert {s["step_id"] for s in steps} == STEPS
    assert all(s["status"] == "completed" for s in steps)

    if options["metadata"]:
        assert json.loads(run["parameters"])["n"] == 5
        assert json.loads(run["output_preview"])["numbers"] == [0, 1, 2, 3, 4]
        # Every output under its own key, scalars and containers mixed (summary holds
        # redacted secrets, so only its key is compared).
        outputs = json.loads(run["output_preview"])
        assert result.outputs is not None and list(outputs) == list(result.outputs)
        assert {k: outputs[k] for k in ("numbers", "word", "square")} == {
            k: result.outputs[k] for k in ("numbers", "word", "square")
        }
        assert all(s["input_preview"] is not None and s["output_preview"] is not None for s in steps)
    else:
        assert run["parameters"] is None
        assert run["output_preview"] is None
        assert all(s["input_preview"] is None and s["output_preview"] is None for s in steps)

    logged_steps = {r["step_id"] for r in rows(db, "SELECT step_id FROM step_logs")}
    assert logged_steps == ({"load", "total", "spell", "echo"} if options["logs"] else set())

    code = rows(db, "SELECT * FROM code")
    if options["code"]:
        assert {c["step_name"] for c in code} == STEPS
        assert {c["pipeline_version"] for c in code} == {run["pipeline_version"]}
    else:
        assert code == []

    artifacts = rows(db, "SELECT step_id, name, kind FROM artifacts ORDER BY name")
    if options["visualizations"]:
        assert [tuple(a) for a in artifacts] == [("chart", "attached", "html"), ("chart", "returned", "svg")]
    else:
        assert artifacts == []

    assert (_step_samples("load") > samples_before) is options["metrics"]


# -- previews and redaction ---------------------------------------------------------------


async def test_previews_are_truncated_at_capture_max_bytes(
    observed_module: ModuleType, tmp_path: Path
) -> None:
    pipe = observed_module.observed
    db = tmp_path / "runs.db"
    async with realtime(db, capture_max_bytes=64) as runtime:
        result = await runtime.run(pipe, pipe.parse_parameters({"blob": "x" * 5000, "n": 2}))
    assert result.status is RunStatus.completed

    (run,) = rows(db, "SELECT parameters, output_preview FROM runs")
    assert run["parameters"].endswith(TRUNCATED)
    assert len(run["parameters"].removesuffix(TRUNCATED).encode()) <= 64
    summarize = rows(db, "SELECT input_preview FROM step_runs WHERE step_id = 'summarize'")[0]
    assert summarize["input_preview"].endswith(TRUNCATED)
    assert len(summarize["input_preview"].removesuffix(TRUNCATED).encode()) <= 64
    # Small values are stored whole, without the marker.
    square = rows(db, "SELECT input_preview, output_preview FROM step_runs WHERE step_id = 'square'")[0]
    assert list(json.loads(square["input_preview"]).values()) == [2]
    assert square["output_preview"] == "4"


async def test_secret_looking_keys_are_redacted(observed_module: ModuleType, tmp_path: Path) -> None:
    pipe = observed_module.observed
    db = tmp_path / "runs.db"
    params = pipe.parse_parameters({"config": {"api_key": "key-secret-value", "region": "eu"}})
    async with realtime(db) as runtime:
        result = await runtime.run(pipe, params)
    assert result.status is RunStatus.completed
    assert result.outputs is not None and result.outputs["summary"]["region"] == "eu"

    (run,) = rows(db, "SELECT parameters FROM runs")
    parameters = json.loads(run["parameters"])
    assert parameters["password"] == "***"
    assert parameters["token"] == "***"
    assert parameters["config"] == {"api_key": "***", "region": "eu"}
    assert parameters["marker"] == "m"
    step = rows(db, "SELECT input_preview FROM step_runs WHERE step_id = 'summarize'")[0]
    inputs = json.loads(step["input_preview"])
    assert inputs["password"] == inputs["token"] == "***"
    assert inputs["config"] == {"api_key": "***", "region": "eu"}
    text = _store_text(db)
    for secret in SECRETS:
        assert secret not in text


@step
def login(user: str, password: str) -> str:
    return f"{user} logged in"


async def test_a_secret_passed_positionally_is_redacted(tmp_path: Path) -> None:
    @pipeline
    def p(user: str = "ada", password: str = "hunter2"):
        return login(user, password)

    db = tmp_path / "runs.db"
    async with realtime(db) as runtime:
        result = await runtime.run(p, p.parse_parameters({}))
    assert result.ok
    (step_run,) = rows(db, "SELECT input_preview FROM step_runs")
    (run,) = rows(db, "SELECT parameters FROM runs")
    assert "hunter2" not in step_run["input_preview"]
    assert '"user":"ada"' in step_run["input_preview"] and '"password":"***"' in step_run["input_preview"]
    assert "hunter2" not in run["parameters"]


@step
async def make_features(n: int) -> dict:
    return {"n": n, "scaled": False}


@step
async def scale_in_place(features: dict) -> dict:
    features["scaled"] = True  # changes the upstream step's output object
    features["n"] *= 10
    return features


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


@step
async def greet_all(name: str, times: int) -> str:
    return f"hello {name} x{times}"


@step
async def append_in_place(items: list[int]) -> int:
    items.append(99)  # changes the run's own parameter value
    return len(items)


@step
async def count_items(items: list[int]) -> int:
    return len(items)


async def test_a_step_taking_every_parameter_previews_them_as_the_run_does(tmp_path: Path) -> None:
    """The input preview of a step given all the parameters, in order and by name, is the
    run's parameters preview (taken once when the run starts): the same JSON as before."""

    @pipeline
    def p(name: str = "ada", times: int = 2):
        return greet_all(name, times)

    db = tmp_path / "runs.db"
    async with realtime(db) as runtime:
        result = await runtime.run(p, p.parse_parameters({"name": "Grace"}))
    assert result.ok
    (run,) = rows(db, "SELECT parameters FROM runs")
    (step_run,) = rows(db, "SELECT input_preview FROM step_runs")
    assert json.loads(run["parameters"]) == {"name": "Grace", "times": 2}
    assert step_run["input_preview"] == run["parameters"]


async def test_previews_of_a_list_parameter_changed_in_place_show_each_moment(tmp_path: Path) -> None:
    """A list parameter is not shared between previews: the run's parameters preview
    shows the request as it came, and a later step's input preview shows the list as
    that step received it, after an earlier step appended to it."""

    @pipeline
    def p(items: list[int] = [1, 2]):  # a pipeline's default is copied for each run
        first = append_in_place(items)
        return count_items(items, after=[first])

    db = tmp_path / "runs.db"
    async with realtime(db) as runtime:
        result = await runtime.run(p, p.parse_parameters({}))
    assert result.ok and result.outputs == {"output": 3}
    (run,) = rows(db, "SELECT parameters FROM runs")
    steps = {r["step_id"]: r for r in rows(db, "SELECT * FROM step_runs")}
    assert json.loads(run["parameters"]) == {"items": [1, 2]}
    assert json.loads(steps["append_in_place"]["input_preview"]) == {"items": [1, 2]}
    assert json.loads(steps["count_items"]["input_preview"]) == {"items": [1, 2, 99]}


@step
async def echo_value(value: Any) -> Annotated[Any, "answer"]:
    return value


@step
async def echo_token(value: Any) -> Annotated[Any, "token"]:
    return value


@pytest.mark.parametrize(
    "value",
    ['say "hi"\n\tback\\slash', 42, 2.5, True, None, "naïve café", "x" * 5000],
    ids=["escapes", "int", "float", "bool", "none", "non-ascii", "long"],
)
async def test_a_single_outputs_preview_is_the_json_of_its_mapping(value: Any, tmp_path: Path) -> None:
    """A pipeline whose one output is its last step's whole value previews its outputs
    from that step's output preview: the stored text must be what encoding
    `{"answer": value}` (cut at SERVING_CAPTURE_MAX_BYTES) gives."""

    @pipeline
    def p(value: Any = None):
        return echo_value(value)

    db = tmp_path / "runs.db"
    async with realtime(db, capture_max_bytes=4096) as runtime:
        result = await runtime.run(p, p.parse_parameters({"value": value}))
    assert result.ok and result.outputs == {"answer": value}
    (run,) = rows(db, "SELECT output_preview FROM runs")
    expected = msgspec.json.encode({"answer": value})
    if len(expected) <= 4096:
        assert run["output_preview"] == expected.decode()
        assert json.loads(run["output_preview"]) == {"answer": value}
    else:
        assert run["output_preview"] == expected[:4096].decode(errors="ignore") + TRUNCATED


async def test_a_single_output_under_a_secret_looking_key_is_still_redacted(tmp_path: Path) -> None:
    @pipeline
    def p(value: str = "abc"):
        return echo_token(value)

    db = tmp_path / "runs.db"
    async with realtime(db) as runtime:
        result = await runtime.run(p, p.parse_parameters({"value": "hunter2-secret"}))
    assert result.ok
    (run,) = rows(db, "SELECT output_preview FROM runs")
    assert json.loads(run["output_preview"]) == {"token": "***"}


@pytest.mark.parametrize(("sample", "low", "high"), [(0.0, 0, 0), (1.0, 400, 400), (0.5, 120, 280)])
async def test_capture_sample_records_that_fraction_of_runs(
    sample: float, low: int, high: int, tmp_path: Path
) -> None:
    """SERVING_CAPTURE_SAMPLE (opt-in, default 1): each run is drawn at random; runs left
    out still run and answer as before. For 0.5 over 400 runs the count is binomial
    (mean 200, sd 10): outside 120..280 is an 8-sigma event, not bad luck."""

    @pipeline
    def p(name: str = "ada", times: int = 2):
        return greet_all(name, times)

    db = tmp_path / "runs.db"
    async with realtime(db, capture_sample=sample) as runtime:
        results = [await runtime.run(p, p.parse_parameters({})) for _ in range(400)]
    assert all(r.ok and r.outputs == {"output": "hello ada x2"} for r in results)
    stored = rows(db, "SELECT run_id FROM runs")
    assert low <= len(stored) <= high
    assert {r["run_id"] for r in stored} <= {r.run_id for r in results}


# -- step logs ----------------------------------------------------------------------------


def _expected_logs(marker: str) -> set[tuple[str, str, str]]:
    return {
        ("load", "stdout", f"print-sync {marker}"),
        ("load", "warning", f"logging-sync {marker}"),
        ("total", "stdout", f"print-async {marker}"),
        ("total", "info", f"structlog-async marker={marker!r}"),
        ("total", "warning", f"logging-async {marker}"),
        ("spell", "stdout", f"print-gen {marker}"),
        ("echo", "stdout", f"print-agen {marker}"),
    }


async def test_print_logging_and_structlog_lines_are_tied_to_their_step(
    observed_module: ModuleType, tmp_path: Path, step_log_capture: None
) -> None:
    pipe = observed_module.observed
    db = tmp_path / "runs.db"
    async with realtime(db) as runtime:
        result = await runtime.run(pipe, pipe.parse_parameters({"marker": "only-run"}))
    logs = rows(db, "SELECT run_id, step_id, level, message, seq FROM step_logs")
    assert {r["run_id"] for r in logs} == {result.run_id}
    assert {(r["step_id"], r["level"], r["message"]) for r in logs} == _expected_logs("only-run")
    assert len(logs) == len(_expected_logs("only-run"))  # each line once, not per door


async def test_concurrent_runs_never_mix_their_log_lines(
    observed_module: ModuleType, tmp_path: Path, step_log_capture: None
) -> None:
    pipe = observed_module.observed
    db = tmp_path / "runs.db"
    markers = [f"run{i:02d}-{os.urandom(4).hex()}" for i in range(20)]
    async with realtime(db, max_threads=8) as runtime:
        results = await asyncio.gather(
            *(runtime.run(pipe, pipe.parse_parameters({"marker": m})) for m in markers)
        )
    assert all(r.status is RunStatus.completed for r in results)
    for marker, result in zip(markers, results, strict=True):
        logs = rows(db, "SELECT step_id, level, message FROM step_logs WHERE run_id = ?", result.run_id)
        assert {tuple(r) for r in logs} == _expected_logs(marker)
        assert len(logs) == len(_expected_logs(marker))


async def test_logs_outside_a_step_are_not_captured(
    observed_module: ModuleType, tmp_path: Path, step_log_capture: None
) -> None:
    pipe = observed_module.observed
    db = tmp_path / "runs.db"
    async with realtime(db) as runtime:
        print("print-outside-any-step")
        await runtime.run(pipe, pipe.parse_parameters({}))
        print("print-outside-any-step")
    assert rows(db, "SELECT * FROM step_logs WHERE message LIKE '%outside%'") == []


def test_an_unfinished_printed_line_stays_with_its_step() -> None:
    """A line printed without its newline by one step is not finished by the next
    step's output: it is flushed to its own step's logs."""
    loop = asyncio.new_event_loop()
    try:
        tee = logcapture._Tee(io.StringIO(), "stdout")
        a = StepScope("a", "r1", None, loop, threading.get_ident(), logs=[])
        b = StepScope("b", "r2", None, loop, threading.get_ident(), logs=[])
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


# -- code and visualizations --------------------------------------------------------------


async def test_code_is_published_once_per_pipeline_version(
    observed_module: ModuleType, tmp_path: Path
) -> None:
    pipe = observed_module.observed
    sink = RecordingSink()
    async with realtime(tmp_path / "unused.db", sink=sink) as runtime:
        for i in range(3):
            await runtime.run(pipe, pipe.parse_parameters({"n": i}))
    code = [r for r in sink.records if isinstance(r, CodeRecord)]
    runs = [r for r in sink.records if isinstance(r, RunRecord)]
    assert len(code) == 1 and len(runs) == 3
    assert code[0].pipeline == "observed"
    assert {s.step_name for s in code[0].steps} == STEPS
    assert all(s.source and s.source.lstrip().startswith("@step") for s in code[0].steps)
    assert {r.pipeline_version for r in runs} == {code[0].pipeline_version}
    assert code[0].pipeline_version == pipeline_version(pipe)  # stable across runtimes

    db = tmp_path / "runs.db"
    async with realtime(db) as runtime:
        for _ in range(2):
            await runtime.run(pipe, pipe.parse_parameters({}))
    stored = rows(db, "SELECT step_name, source FROM code")
    assert sorted(r["step_name"] for r in stored) == sorted(STEPS)
    load = next(r for r in stored if r["step_name"] == "load")
    assert "def load(marker: str, n: int)" in load["source"]


async def test_visualizations_attached_and_returned_are_stored(
    observed_module: ModuleType, tmp_path: Path
) -> None:
    pipe = observed_module.observed
    db = tmp_path / "runs.db"
    async with realtime(db) as runtime:
        result = await runtime.run(pipe, pipe.parse_parameters({}))
    artifacts = rows(db, "SELECT run_id, step_id, name, kind, content FROM artifacts ORDER BY name")
    assert [tuple(a) for a in artifacts] == [
        (result.run_id, "chart", "attached", "html", "<b>attached</b>"),
        (result.run_id, "chart", "returned", "svg", "<svg></svg>"),
    ]


# -- the step cache -------------------------------------------------------------------------


async def test_cacheable_step_runs_once_for_equal_inputs(observed_module: ModuleType, tmp_path: Path) -> None:
    pipe = observed_module.observed
    calls = observed_module.CALLS
    db = tmp_path / "runs.db"
    hits = REGISTRY.get_sample_value("serving_cache_hits_total", {"step": "square"}) or 0.0
    before_square, before_load = calls["square"], calls["load"]
    async with realtime(db) as runtime:
        outputs = [(await runtime.run(pipe, pipe.parse_parameters({"n": 7}))).outputs for _ in range(3)]
        other = await runtime.run(pipe, pipe.parse_parameters({"n": 8}))
    assert all(o is not None and o["square"] == 49 for o in outputs)
    assert other.outputs is not None and other.outputs["square"] == 64
    assert calls["square"] - before_square == 2  # n=7 once, n=8 once
    assert calls["load"] - before_load == 4  # not cacheable: every run
    statuses = [r["status"] for r in rows(db, "SELECT status FROM step_runs WHERE step_id = 'square'")]
    assert sorted(statuses) == ["cached", "cached", "completed", "completed"]
    assert (REGISTRY.get_sample_value("serving_cache_hits_total", {"step": "square"}) or 0.0) - hits == 2


async def test_memory_only_runtime_does_not_cache(observed_module: ModuleType) -> None:
    pipe = observed_module.observed
    before = observed_module.CALLS["square"]
    for _ in range(2):
        await _memory_outputs(pipe, pipe.parse_parameters({"n": 3}))
    assert observed_module.CALLS["square"] - before == 2


# -- a run canceled by its caller -----------------------------------------------------------


async def test_a_canceled_run_is_recorded_with_the_steps_it_reached(tmp_path: Path) -> None:
    """The executor raises instead of returning a result; the record still names the run,
    its parameters and every step it reached."""
    second_started = asyncio.Event()

    @step
    async def first(word: str) -> Annotated[str, "first"]:
        return word.upper()

    @step
    async def second(text: str) -> Annotated[str, "second"]:
        second_started.set()
        await asyncio.Event().wait()  # until canceled
        return text  # pragma: no cover - never reached

    @pipeline
    def halted(word: str = "w"):
        return second(first(word))

    sink = RecordingSink()
    async with realtime(tmp_path / "unused.db", sink=sink, deployment_name="dep") as runtime:
        run = asyncio.create_task(
            runtime.run(halted, halted.parse_parameters({"word": "hi"}), run_id="r-1", run_name="n-1")
        )
        await second_started.wait()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    (record,) = [r for r in sink.records if isinstance(r, RunRecord)]
    assert (record.run_id, record.run_name, record.pipeline) == ("r-1", "n-1", "halted")
    assert (record.status, record.error, record.deployment) == ("canceled", "canceled", "dep")
    assert (record.parameters, record.output_preview) == ('{"word":"hi"}', None)
    assert record.finished_at - record.started_at == pytest.approx(record.duration)
    assert [(s.step_id, s.status, s.output_preview) for s in record.steps] == [
        ("first", "completed", '"HI"'),
        ("second", "canceled", None),
    ]


# -- retried steps ------------------------------------------------------------------------


async def test_a_step_record_counts_the_attempts_it_took(tmp_path: Path) -> None:
    """The record says how many attempts a step took, as its events do: a step that
    succeeds on its second try is `attempts=2`, and one canceled during its second try too."""
    tries = {"flaky": 0, "stuck": 0}
    stuck_retrying = asyncio.Event()

    @step(retries=2)
    async def flaky(word: str) -> Annotated[str, "flaky"]:
        tries["flaky"] += 1
        if tries["flaky"] == 1:
            raise RuntimeError("first try fails")
        return word

    @step(retries=3)
    async def stuck(text: str) -> Annotated[str, "stuck"]:
        tries["stuck"] += 1
        if tries["stuck"] == 1:
            raise RuntimeError("first try fails")
        stuck_retrying.set()
        await asyncio.Event().wait()  # until canceled
        return text  # pragma: no cover - never reached

    @pipeline
    def retried(word: str = "w"):
        return stuck(flaky(word))

    sink = RecordingSink()
    async with realtime(tmp_path / "unused.db", sink=sink) as runtime:
        run = asyncio.create_task(runtime.run(retried, retried.parse_parameters({})))
        await stuck_retrying.wait()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    (record,) = [r for r in sink.records if isinstance(r, RunRecord)]
    assert [(s.step_id, s.status, s.attempts) for s in record.steps] == [
        ("flaky", "completed", 2),
        ("stuck", "canceled", 2),
    ]
