"""Types at the HTTP edge, against a real daemon: outputs are checked against their
declared types, NaN and infinity never become a silent null, and numbers are read as
JSON Schema reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
OUTPUTS = f"{PIPELINES / 'outputs_check.py'}:outputs_check"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def served(module_daemon: Any) -> Any:
    return module_daemon(OUTPUTS)


def invoke(client: httpx.Client, daemon: Any, **kw: Any) -> httpx.Response:
    return client.post(f"{daemon.url}/invoke", **kw)


def test_a_none_for_a_dict_output_is_a_500_naming_step_output_and_types(
    served: Any, client: httpx.Client
) -> None:
    r = invoke(client, served, json={"parameters": {"mode": "none"}})
    assert r.status_code == 500, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["success"] is False
    assert body["outputs"] is None
    assert body["error"] == (
        "step 'fetch' returned None for output 'weather', which is declared dict (Expected object, got null)"
    )
    assert body["metadata"]["run_id"]


def test_a_well_typed_run_still_answers_200(served: Any, client: httpx.Client) -> None:
    r = invoke(client, served, json={"parameters": {"x": 2}})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == {"weather": {"qty": 1, "x": 2.0}, "scaled": 20.0}


def test_an_infinity_inside_an_output_is_a_500_naming_it(served: Any, client: httpx.Client) -> None:
    r = invoke(client, served, json={"parameters": {"mode": "inf"}})
    assert r.status_code == 500, r.text
    error = r.json()["error"]
    assert "step 'fetch'" in error
    assert "non-finite number" in error
    assert "output 'weather' at readings.1" in error


def test_a_large_finite_input_that_overflows_is_a_500_not_a_null(served: Any, client: httpx.Client) -> None:
    r = invoke(client, served, json={"parameters": {"x": 1e308}})
    assert r.status_code == 500, r.text
    assert "output 'scaled'" in r.json()["error"]
    assert "null" not in r.json()["error"]


def test_an_async_job_with_a_bad_output_fails(served: Any, client: httpx.Client) -> None:
    r = invoke(client, served, json={"parameters": {"mode": "none"}}, params={"mode": "async"})
    assert r.status_code == 202, r.text
    job = client.get(f"{served.url}/jobs/{r.json()['job_id']}", params={"wait": 10}).json()
    assert job["status"] == "failed"
    assert "output 'weather'" in job["error"]


@pytest.mark.parametrize("number", [b"1e400", b"-1e999"])
def test_a_number_beyond_a_float_is_422_naming_the_parameter(
    served: Any, client: httpx.Client, number: bytes
) -> None:
    content = b'{"parameters": {"mode": "ok", "x": ' + number + b"}}"
    r = invoke(client, served, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [
        {"loc": "parameters.x", "msg": "number out of range: not a finite 64-bit float"}
    ]


def test_an_integral_float_is_accepted_for_an_int_parameter(served: Any, client: httpx.Client) -> None:
    r = invoke(client, served, json={"parameters": {"qty": 3.0, "x": 1.0}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outputs"]["weather"] == {"qty": 3, "x": 1.0}
    assert body["metadata"]["parameters_used"]["qty"] == 3
    assert r.content.count(b'"qty":3,') == 2  # an int, in outputs and parameters_used


@pytest.mark.parametrize("qty", [1.5, "3"])
def test_a_fractional_float_or_a_string_is_still_422_for_an_int(
    served: Any, client: httpx.Client, qty: Any
) -> None:
    r = invoke(client, served, json={"parameters": {"qty": qty, "x": 1.0}})
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["errors"]] == ["parameters.qty"]


def test_an_integral_float_does_not_hide_another_bad_field(served: Any, client: httpx.Client) -> None:
    r = invoke(client, served, json={"parameters": {"qty": 3.0, "mode": 1}})
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"loc": "parameters.mode", "msg": "Expected str, got int"}]


@pytest.mark.parametrize("content", [b" ", b"\n\t \r\n"])
def test_a_whitespace_only_body_is_400(served: Any, client: httpx.Client, content: bytes) -> None:
    r = invoke(client, served, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == PROBLEM
    assert "whitespace" in r.json()["detail"]


def test_an_empty_body_still_means_all_defaults(served: Any, client: httpx.Client) -> None:
    r = invoke(client, served, content=b"", headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
