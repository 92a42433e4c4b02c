"""Two deployments side by side, shared by the module (read-only tests): list, describe,
CLI invoke with schema-typed parameters, async, wait and stream, usage errors."""

from __future__ import annotations

import json
import re
import shlex

import httpx
import pytest
from deploy_helpers import GREET, SHOUT, Home, failure, ok, outputs, table, url_in

DEFAULTS = {
    "name": "world",
    "count": 1,
    "ratio": 0.5,
    "flag": False,
    "tags": [],
    "options": {},
    "max_len": 10,
}


@pytest.fixture(scope="module")
def fleet(module_home: Home) -> Home:
    for name, source in (("alpha", GREET), ("beta", SHOUT)):
        out = ok(module_home.cli("pipeline", "deploy", source, "--name", name))
        assert "RUNNING" in out
    return module_home


def echo(stdout: str) -> dict[str, object]:
    result = outputs(stdout)
    return json.loads(result["echo"])


def test_two_deployments_side_by_side(fleet: Home) -> None:
    rows = table(ok(fleet.cli("deployment", "list")))
    assert rows["alpha"][0] == "greet" and rows["alpha"][2] == "RUNNING"
    assert rows["beta"][0] == "shout" and rows["beta"][2] == "RUNNING"
    alpha, beta = fleet.deployment("alpha"), fleet.deployment("beta")
    assert alpha.url != beta.url and rows["alpha"][1] == alpha.url and rows["beta"][1] == beta.url
    assert fleet.pid("alpha") != fleet.pid("beta")

    a = httpx.post(f"{alpha.url}/invoke", json={"parameters": {"name": "a"}}, timeout=30).json()
    b = httpx.post(f"{beta.url}/invoke", json={"parameters": {"word": "b"}}, timeout=30).json()
    assert a["outputs"]["greeting"] == "hello a" and a["metadata"]["deployment_name"] == "alpha"
    assert b["outputs"] == {"loud": "B!"} and b["metadata"]["deployment_name"] == "beta"
    assert a["metadata"]["pipeline_name"] == "greet" and b["metadata"]["pipeline_name"] == "shout"
    # each refuses the other's parameters
    wrong = httpx.post(f"{beta.url}/invoke", json={"parameters": {"name": "a"}}, timeout=30)
    assert wrong.status_code == 422


def test_cli_invoke_converts_values_by_schema_type(fleet: Home) -> None:
    out = ok(
        fleet.cli(
            "deployment",
            "invoke",
            "alpha",
            "--name=ada",
            "--count",
            "2",
            "--ratio=2",
            "--flag=yes",
            '--tags=["x", "y"]',
            '--options={"k": 3}',
            "--max-len=7",
        )
    )
    assert echo(out) == {
        "name": "ada",
        "count": 2,
        "ratio": 2.0,
        "flag": True,
        "tags": ["x", "y"],
        "options": {"k": 3},
        "max_len": 7,
    }
    assert outputs(out)["greeting"] == "hello ada hello ada"
    assert echo(ok(fleet.cli("deployment", "invoke", "alpha"))) == DEFAULTS
    assert echo(ok(fleet.cli("deployment", "invoke", "alpha", "--flag=off", "--name=42")))["name"] == "42"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--bogus=1"], "--bogus"),
        (["--count=abc"], "--count"),
        (["--ratio=fast"], "--ratio"),
        (["--flag=maybe"], "--flag"),
        (["--tags=not-json"], "--tags"),
        (["--count"], "--count"),
        (["stray"], "stray"),
    ],
)
def test_cli_invoke_usage_errors(fleet: Home, args: list[str], named: str) -> None:
    error = failure(fleet.cli("deployment", "invoke", "alpha", *args), 2)
    assert named in error


def test_unknown_parameter_error_lists_the_known_ones(fleet: Home) -> None:
    error = failure(fleet.cli("deployment", "invoke", "beta", "--bogus=1"), 2)
    assert "unknown parameter --bogus" in error and "--word" in error


def test_unknown_deployment_fails_in_one_line(fleet: Home) -> None:
    for verb in ("describe", "invoke", "logs", "refresh", "deprovision", "delete"):
        error = failure(fleet.cli("deployment", verb, "nowhere"), 1)
        assert "'nowhere'" in error


def test_describe_shows_status_endpoints_examples_and_schemas(fleet: Home) -> None:
    dep = fleet.deployment("alpha")
    snap = fleet.snapshot_of("alpha")
    out = ok(fleet.cli("deployment", "describe", "alpha", "--show-schema"))
    lines = out.splitlines()
    grid = lines[: lines.index("")]
    fields = dict(re.split(r"\s{2,}", ln.strip(), maxsplit=1) for ln in grid)
    assert fields["Status"] == "RUNNING"
    assert fields["Pipeline"] == "greet"
    assert fields["Endpoint"] == f"{dep.url}/invoke"
    assert fields["Docs"] == f"{dep.url}/docs"
    assert fields["Flavor"] == "local"
    assert fields["Auth key"] == "none"
    assert snap.name in fields["Snapshot"]

    # the CLI example runs as printed, with the schema defaults
    cli_line = next(ln.strip() for ln in lines if ln.strip().startswith("serving deployment invoke"))
    argv = shlex.split(cli_line)
    assert argv[:4] == ["serving", "deployment", "invoke", "alpha"]
    result = fleet.cli(*argv[1:])
    assert echo(ok(result)) == DEFAULTS

    # the curl example carries the same defaults to the endpoint
    curl_line = next(ln.strip() for ln in lines if ln.strip().startswith("curl "))
    curl = shlex.split(curl_line)
    assert f"{dep.url}/invoke" in curl and "Authorization" not in curl_line
    body = json.loads(curl[curl.index("-d") + 1])
    assert body == {"parameters": DEFAULTS}
    reply = httpx.post(f"{dep.url}/invoke", json=body, timeout=30)
    assert reply.status_code == 200 and json.loads(reply.json()["outputs"]["echo"]) == DEFAULTS

    # the schemas, as JSON
    start = lines.index("Input schema")
    middle = lines.index("Output schema")
    assert json.loads("\n".join(lines[start + 1 : middle])) == snap.input_schema
    end = next(i for i in range(middle + 1, len(lines)) if lines[i] == "Manage")
    output_schema = json.loads("\n".join(lines[middle + 1 : end]))
    assert output_schema == snap.output_schema
    assert set(output_schema["$defs"]["PipelineOutput"]["properties"]) == {"echo", "greeting"}

    plain = ok(fleet.cli("deployment", "describe", "alpha"))
    assert "Input schema" not in plain and "serving deployment invoke alpha" in plain


def test_invoke_async_prints_a_job_id(fleet: Home) -> None:
    out = ok(fleet.cli("deployment", "invoke", "alpha", "--async", "--name=later"))
    words = out.split()
    assert words[0] == "Job"
    job_id = words[1]
    url = fleet.deployment("alpha").url
    assert url_in(out) == url and out.strip().endswith(f"/jobs/{job_id}")
    job = httpx.get(f"{url}/jobs/{job_id}", params={"wait": 30}, timeout=40).json()
    assert job["status"] == "completed"
    assert job["result"]["outputs"]["greeting"] == "hello later"


def test_invoke_wait_prints_outputs(fleet: Home) -> None:
    out = ok(fleet.cli("deployment", "invoke", "beta", "--wait", "--word=wait", "--timeout", "60"))
    assert outputs(out) == {"loud": "WAIT!"}


def test_invoke_stream_prints_events_then_outputs(fleet: Home) -> None:
    lines = ok(fleet.cli("deployment", "invoke", "beta", "--stream", "--word=flow")).splitlines()
    split = lines.index("{")
    events, tail = lines[:split], lines[split:]
    assert events and all(ln.startswith("[") for ln in events)
    types = [ln.split()[1] for ln in events]
    assert types[0] == "run_started" and types[-1] == "run_completed"
    assert "step_started" in types and "step_completed" in types
    assert json.loads("\n".join(tail)) == {"loud": "FLOW!"}


@pytest.mark.parametrize("tail", ["-1", "five"])
def test_logs_refuses_a_bad_tail(fleet: Home, tail: str) -> None:
    result = fleet.cli("deployment", "logs", "alpha", "--tail", tail)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith("serving deployment logs: error: argument --tail: ")
    assert "Traceback" not in result.stderr


def test_logs_tail_zero_and_beyond_the_file(fleet: Home) -> None:
    every = ok(fleet.cli("deployment", "logs", "alpha")).splitlines()
    assert every
    assert ok(fleet.cli("deployment", "logs", "alpha", "--tail", "0")) == ""
    more = ok(fleet.cli("deployment", "logs", "alpha", "--tail", str(len(every) + 50))).splitlines()
    assert more[: len(every)] == every  # the whole file, not a slice wrapped from the end
