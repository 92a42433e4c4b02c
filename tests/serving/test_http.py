"""The daemon's HTTP surface, against real `python -m serving` processes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

TESTS = Path(__file__).resolve().parent.parent
PIPELINES = TESTS / "pipelines"
EXAMPLES = TESTS.parent / "examples"

HELLO = f"{EXAMPLES / 'hello.py'}:hello"
WEATHER = f"{EXAMPLES / 'weather.py'}:weather_agent"
ORDERS = f"{EXAMPLES / 'orders.py'}:price_order"
FAILING = f"{PIPELINES / 'failing.py'}:failing"
SLOW = f"{PIPELINES / 'slow.py'}:slow"
TYPED = f"{PIPELINES / 'typed.py'}:typed"
UNENCODABLE = f"{PIPELINES / 'unencodable.py'}:unencodable"

MAX_BODY = 4096
AUTH_KEY = "s3cr3t-Key-do-not-leak"
JSON = {"content-type": "application/json"}
PROBLEM = "application/problem+json"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
RUN_NAME = re.compile(r"^(?P<pipeline>\w+)-(?P<ts>\d{8}T\d{6}\.\d{6}Z)$")


# -- daemons (one process per configuration, shared by the module) ----------------------


@pytest.fixture(scope="module", params=["hypercorn", "uvicorn"])
def server(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def hello(module_daemon: Any) -> Any:
    return module_daemon(HELLO, server="hypercorn", deployment_name="demo", max_body_bytes=MAX_BODY)


@pytest.fixture(scope="module")
def hello_any(module_daemon: Any, server: str) -> Any:
    return module_daemon(HELLO, server=server, deployment_name="demo", max_body_bytes=MAX_BODY)


@pytest.fixture(scope="module")
def failing_any(module_daemon: Any, server: str) -> Any:
    return module_daemon(FAILING, server=server)


@pytest.fixture(scope="module")
def typed_any(module_daemon: Any, server: str) -> Any:
    return module_daemon(TYPED, server=server)


@pytest.fixture(scope="module")
def orders(module_daemon: Any) -> Any:
    return module_daemon(ORDERS)


@pytest.fixture(scope="module")
def slow(module_daemon: Any) -> Any:
    return module_daemon(SLOW)


@pytest.fixture(scope="module")
def auth(module_daemon: Any) -> Any:
    return module_daemon(HELLO, auth_key=AUTH_KEY)


@pytest.fixture(scope="module")
def weather(module_daemon: Any) -> Any:
    return module_daemon(WEATHER)


def invoke(client: httpx.Client, daemon: Any, body: Any = None, **kw: Any) -> httpx.Response:
    if body is not None:
        kw["json"] = body
    return client.post(f"{daemon.url}/invoke", **kw)


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def assert_invoke_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    body = assert_problem(r, status)
    assert body["success"] is False
    assert body["outputs"] is None
    assert body["error"] == body["detail"]
    return body


# -- /invoke: success and wire format ---------------------------------------------------


def test_invoke_wire_format(hello_any: Any, client: httpx.Client) -> None:
    r = invoke(client, hello_any, {"parameters": {"name": "Ada"}})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["success", "outputs", "execution_time", "metadata", "error"]
    assert body["success"] is True
    assert body["outputs"] == {"greeting": "Hello Ada!"}
    assert isinstance(body["execution_time"], float)
    assert body["execution_time"] >= 0
    assert body["error"] is None
    meta = body["metadata"]
    assert list(meta) == [
        "deployment_id",
        "deployment_name",
        "snapshot_id",
        "snapshot_name",
        "pipeline_name",
        "run_id",
        "run_name",
        "parameters_used",
    ]
    assert meta["deployment_id"] is None
    assert meta["deployment_name"] == "demo"
    assert meta["snapshot_id"] is None
    assert meta["snapshot_name"] is None
    assert meta["pipeline_name"] == "hello"
    assert HEX32.match(meta["run_id"])
    assert meta["parameters_used"] == {"name": "Ada"}


def test_default_run_name_is_pipeline_and_utc_timestamp(hello: Any, client: httpx.Client) -> None:
    first = invoke(client, hello, {"parameters": {"name": "A"}}).json()["metadata"]
    second = invoke(client, hello, {"parameters": {"name": "B"}}).json()["metadata"]
    m = RUN_NAME.match(first["run_name"])
    assert m, first["run_name"]
    assert m["pipeline"] == "hello"
    stamp = datetime.strptime(m["ts"], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - stamp) < timedelta(hours=1)  # UTC, not local time
    assert first["run_id"] != second["run_id"]


def test_run_name_from_body_is_used(hello: Any, client: httpx.Client) -> None:
    r = invoke(client, hello, {"parameters": {"name": "Ada"}, "run_name": "my-run-1"})
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["run_name"] == "my-run-1"


@pytest.mark.parametrize(
    "kw",
    [
        pytest.param({}, id="no-body-no-content-type"),
        pytest.param({"content": b"", "headers": JSON}, id="empty-json-body"),
        pytest.param({"json": {}}, id="empty-object"),
        pytest.param({"json": {"parameters": {}}}, id="empty-parameters"),
    ],
)
def test_empty_body_uses_defaults(hello: Any, client: httpx.Client, kw: dict[str, Any]) -> None:
    r = client.post(f"{hello.url}/invoke", **kw)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outputs"] == {"greeting": "Hello World!"}
    assert body["metadata"]["parameters_used"] == {"name": "World"}


def test_parameters_used_includes_defaults(typed_any: Any, client: httpx.Client) -> None:
    r = invoke(client, typed_any, {"parameters": {"name": "z", "flag": True}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metadata"]["parameters_used"] == {"name": "z", "count": 1, "ratio": 0.5, "flag": True}
    assert body["outputs"] == {"text": "z:1:0.5:True"}


def test_json_suffix_content_type_accepted(hello: Any, client: httpx.Client) -> None:
    r = invoke(
        client,
        hello,
        content=b'{"parameters": {"name": "Vnd"}}',
        headers={"content-type": "application/vnd.api+json; charset=utf-8"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == {"greeting": "Hello Vnd!"}


# -- examples ---------------------------------------------------------------------------


def test_example_weather_agent(weather: Any, client: httpx.Client) -> None:
    r = invoke(client, weather, {"parameters": {"city": "Rome"}})
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    assert set(outputs) == {"weather", "advice"}
    assert outputs["weather"]["city"] == "Rome"
    assert set(outputs["weather"]) == {"city", "temperature_c", "humidity", "wind_kmh"}
    assert outputs["advice"].startswith("Rome: ")
    again = invoke(client, weather, {"parameters": {"city": "Rome"}}).json()["outputs"]
    assert again == outputs  # deterministic, offline


def test_example_orders_nested_struct(orders: Any, client: httpx.Client) -> None:
    r = invoke(client, orders, {"parameters": {"order": {"sku": "A-1", "qty": 3, "unit_price": 2.5}}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outputs"] == {"subtotal": 7.5, "tax": 1.5, "total": 9.0}
    assert body["metadata"]["parameters_used"] == {
        "order": {"sku": "A-1", "qty": 3, "unit_price": 2.5, "currency": "EUR"},
        "tax_rate": 0.2,
    }


def test_example_orders_defaults(orders: Any, client: httpx.Client) -> None:
    r = invoke(client, orders)
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["parameters_used"] == {
        "order": {"sku": "DEMO", "qty": 1, "unit_price": 1.0, "currency": "EUR"},
        "tax_rate": 0.2,
    }


@pytest.mark.parametrize(
    ("order", "loc", "msg"),
    [
        ({"sku": "A", "qty": "x", "unit_price": 1}, "parameters.order.qty", "Expected int, got str"),
        ({"sku": "A", "qty": 0, "unit_price": 1}, "parameters.order.qty", "Expected int >= 1"),
        ({"sku": "A", "qty": 1, "unit_price": 1, "currency": "GBP"}, "parameters.order.currency", None),
        ({"sku": "A", "qty": 1}, "parameters.order", "unit_price"),
    ],
)
def test_example_orders_nested_field_errors(
    orders: Any, client: httpx.Client, order: dict[str, Any], loc: str, msg: str | None
) -> None:
    r = invoke(client, orders, {"parameters": {"order": order}})
    body = assert_invoke_problem(r, 422)
    assert [e["loc"] for e in body["errors"]] == [loc]
    if msg is not None:
        assert msg in body["errors"][0]["msg"]


def test_fanout_example_serves_despite_untyped_outputs(daemon: Any) -> None:
    """`dict[str, object]` outputs once broke schema generation and the start-up."""
    d = daemon(f"{EXAMPLES / 'fanout.py'}:enrich")
    r = httpx.post(f"{d.url}/invoke", json={"parameters": {"text": "a b", "delay": 0}})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == {"summary": {"words": 2, "vowels": 1, "upper": "A B"}}
    assert httpx.get(f"{d.url}/openapi.json").status_code == 200


# -- /invoke: bad requests --------------------------------------------------------------


@pytest.mark.parametrize("content", [b'{"parameters": ', b"not json", b'{"parameters": {"name": "a"}} x'])
def test_malformed_json_is_400(hello: Any, client: httpx.Client, content: bytes) -> None:
    r = invoke(client, hello, content=content, headers=JSON)
    body = assert_invoke_problem(r, 400)
    assert body["error"].startswith("request body is not valid JSON")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_wrong_content_type_is_415(hello: Any, client: httpx.Client, ctype: str) -> None:
    r = invoke(client, hello, content=b'{"parameters": {}}', headers={"content-type": ctype})
    body = assert_invoke_problem(r, 415)
    assert ctype in body["error"]


def test_body_over_limit_with_content_length_is_413(hello: Any, client: httpx.Client) -> None:
    content = b'{"parameters": {"name": "' + b"a" * MAX_BODY + b'"}}'
    r = invoke(client, hello, content=content, headers=JSON)
    body = assert_invoke_problem(r, 413)
    assert str(MAX_BODY) in body["error"]
    # exactly at the limit is fine
    at_limit = b'{"parameters": {"name": "a"}}'.ljust(MAX_BODY)
    assert len(at_limit) == MAX_BODY
    assert invoke(client, hello, content=at_limit, headers=JSON).status_code == 200


def test_chunked_body_over_limit_is_413_without_reading_it_all(hello_any: Any) -> None:
    """Under both servers (uvicorn used to read the whole body before the 413)."""
    hello = hello_any
    total = 256 * 1024 * 1024
    chunk = b" " * 65536
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"parameters": {"name": "a"}}'
        while sent < total:
            sent += len(chunk)
            yield chunk

    with httpx.Client(timeout=30.0) as client:
        r = client.post(f"{hello.url}/invoke", content=body(), headers=JSON)
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_invoke_problem(r, 413)
    assert sent < total, "the server read the whole body before refusing it"


def test_small_chunked_body_is_accepted(hello: Any, client: httpx.Client) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"parameters": '
        yield b'{"name": "Chunky"}}'

    r = client.post(f"{hello.url}/invoke", content=body(), headers=JSON)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == {"greeting": "Hello Chunky!"}


def test_unknown_parameter_is_422_and_named(hello: Any, client: httpx.Client) -> None:
    r = invoke(client, hello, {"parameters": {"nmae": "Ada"}})
    body = assert_invoke_problem(r, 422)
    assert len(body["errors"]) == 1
    err = body["errors"][0]
    assert err["loc"] == "parameters.nmae"
    assert "unknown parameter" in err["msg"]
    assert "name" in err["msg"]  # lists the expected ones


def test_mistyped_parameter_is_422(hello_any: Any, client: httpx.Client) -> None:
    r = invoke(client, hello_any, {"parameters": {"name": 1}})
    body = assert_invoke_problem(r, 422)
    assert body["errors"] == [{"loc": "parameters.name", "msg": "Expected str, got int"}]


def test_every_bad_field_is_reported_at_once(typed_any: Any, client: httpx.Client) -> None:
    params = {"name": 1, "count": "two", "ratio": "x", "flag": "yes", "extra": 1}
    r = invoke(client, typed_any, {"parameters": params, "timeout": -1})
    body = assert_invoke_problem(r, 422)
    errors = {e["loc"]: e["msg"] for e in body["errors"]}
    assert errors == {
        "timeout": "Expected float > 0.0",
        "parameters.name": "Expected str, got int",
        "parameters.count": "Expected int, got str",
        "parameters.ratio": "Expected float, got str",
        "parameters.flag": "Expected bool, got str",
        "parameters.extra": errors["parameters.extra"],
    }
    assert "unknown parameter" in errors["parameters.extra"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"parameters": {}, "foo": 1}, "foo"),
        ({"params": {"name": "x"}}, "params"),
        ({"parameters": "x"}, "parameters"),
        ({"run_name": 5}, "run_name"),
        ([1, 2], "body"),
    ],
)
def test_bad_top_level_is_422(hello: Any, client: httpx.Client, body: Any, loc: str) -> None:
    r = invoke(client, hello, body)
    problem = assert_invoke_problem(r, 422)
    assert loc in [e["loc"] for e in problem["errors"]]


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/stream/x", {"Last-Event-ID": b"\xb2"}),
        ("/stream/x?after_seq=" + "9" * 5000, {}),
        ("/jobs?limit=%C2%B2", {}),
        ("/jobs?cursor=%C2%B2", {}),
        ("/jobs?limit=" + "9" * 5000, {}),
    ],
)
def test_malformed_numbers_in_queries_and_headers_are_422(
    hello: Any, client: httpx.Client, path: str, headers: dict[str, Any]
) -> None:
    """Digits int() accepts but the field cannot hold (superscripts, 5000 of them) are the
    client's error, not a 500."""
    r = client.get(f"{hello.url}{path}", headers=headers)
    assert r.status_code == 422, r.text


def test_body_that_is_not_utf8_is_400(hello: Any, client: httpx.Client) -> None:
    r = client.post(f"{hello.url}/invoke", content=b'{"parameters":{"name":"\xff"}}', headers=JSON)
    assert r.status_code == 400
    assert r.json()["success"] is False


# -- /invoke: failures ------------------------------------------------------------------


def test_step_failure_is_500_without_traceback(failing_any: Any, client: httpx.Client) -> None:
    r = invoke(client, failing_any, {"parameters": {"name": "x"}}, headers={"x-request-id": "fail-1"})
    body = assert_invoke_problem(r, 500)
    assert body["error"] == "step 'explode' failed: ValueError: boom"
    assert "Traceback" not in r.text
    assert "failing.py" not in r.text
    assert body["metadata"]["pipeline_name"] == "failing"
    assert HEX32.match(body["metadata"]["run_id"])
    assert body["metadata"]["parameters_used"] == {"name": "x"}
    # ... while the log has the traceback, tagged with the request id
    event = failing_any.wait_for_log(
        lambda e: e.get("event") == "step_failed" and e.get("request_id") == "fail-1"
    )
    assert event["step"] == "explode"
    assert event["level"] == "error"
    (exc,) = event["exception"]
    assert exc["exc_type"] == "ValueError"
    assert exc["exc_value"] == "boom"
    assert any(f["name"] == "explode" and f["filename"].endswith("failing.py") for f in exc["frames"])


def test_unencodable_outputs_are_500(module_daemon: Any, client: httpx.Client) -> None:
    daemon = module_daemon(UNENCODABLE)
    r = invoke(client, daemon)
    body = assert_invoke_problem(r, 500)
    assert body["error"].startswith("the pipeline's outputs cannot be encoded as JSON")
    assert body["metadata"]["pipeline_name"] == "unencodable"
    assert "Traceback" not in r.text
    assert client.get(f"{daemon.url}/health").status_code == 200


def test_body_timeout_is_504(slow: Any, client: httpx.Client) -> None:
    r = invoke(client, slow, {"parameters": {"seconds": 30}, "timeout": 0.2})
    body = assert_invoke_problem(r, 504)
    assert body["error"] == "run timed out after 0.2s"
    assert body["metadata"]["pipeline_name"] == "slow"
    # the daemon keeps serving
    ok = invoke(client, slow, {"parameters": {"seconds": 0}, "timeout": 5})
    assert ok.status_code == 200, ok.text
    assert ok.json()["outputs"] == {"slept": 0.0}


def test_a_timed_out_job_is_504_too(slow: Any, client: httpx.Client) -> None:
    """Idempotent and Prefer: wait calls run as jobs; the job's run_status keeps the 504."""
    body = {"parameters": {"seconds": 30}, "timeout": 0.2}
    r = invoke(client, slow, body, headers={"Idempotency-Key": "timed-out-job", "Prefer": "wait=10"})
    assert assert_invoke_problem(r, 504)["error"] == "run timed out after 0.2s"
    job = client.get(f"{slow.url}{r.headers['location']}").json()
    assert (job["status"], job["run_status"]) == ("failed", "timed_out")


def test_invoke_timeout_setting_is_504(daemon: Any, client: httpx.Client) -> None:
    slow = daemon(SLOW, invoke_timeout=0.3)
    r = invoke(client, slow, {"parameters": {"seconds": 30}})
    assert assert_invoke_problem(r, 504)["error"] == "run timed out after 0.3s"
    # a longer body timeout cannot extend the server's limit
    r = invoke(client, slow, {"parameters": {"seconds": 30}, "timeout": 60})
    assert assert_invoke_problem(r, 504)["error"] == "run timed out after 0.3s"


# -- auth -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing bearer token"),
        ({"authorization": "Bearer wrong"}, "invalid bearer token"),
        ({"authorization": f"Bearer {AUTH_KEY}x"}, "invalid bearer token"),
        ({"authorization": AUTH_KEY}, "invalid bearer token"),
    ],
)
@pytest.mark.parametrize("path", ["/invoke", "/info", "/status", "/openapi.json"])
def test_auth_rejects(
    auth: Any, client: httpx.Client, headers: dict[str, str], detail: str, path: str
) -> None:
    method = "POST" if path == "/invoke" else "GET"
    r = client.request(method, f"{auth.url}{path}", headers=headers)
    body = assert_problem(r, 401)
    assert body["detail"] == detail
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert AUTH_KEY not in r.text


def test_auth_accepts_bearer(auth: Any, client: httpx.Client) -> None:
    headers = {"authorization": f"Bearer {AUTH_KEY}"}
    r = invoke(client, auth, {"parameters": {"name": "Key"}}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == {"greeting": "Hello Key!"}
    status = client.get(f"{auth.url}/status", headers=headers)
    assert status.status_code == 200
    assert status.json()["settings"]["auth_key"] == "***"
    assert AUTH_KEY not in status.text
    assert AUTH_KEY not in auth.logs()


def test_invoke_401_keeps_the_invoke_error_shape(auth: Any, client: httpx.Client) -> None:
    body = client.post(f"{auth.url}/invoke", json={}).json()
    assert body["status"] == 401 and body["success"] is False and body["error"]


@pytest.mark.parametrize("path", ["/health", "/livez", "/readyz"])
def test_auth_leaves_probes_open(auth: Any, client: httpx.Client, path: str) -> None:
    assert client.get(f"{auth.url}{path}").status_code == 200


# -- request ids and access log ---------------------------------------------------------


def test_request_id_is_echoed_and_logged(hello: Any, client: httpx.Client) -> None:
    rid = "req-echo-0001"
    r = invoke(client, hello, {"parameters": {"name": "Id"}}, headers={"x-request-id": rid})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == rid
    line = hello.wait_for_log(lambda e: e.get("event") == "request" and e.get("request_id") == rid)
    assert line["method"] == "POST"
    assert line["path"] == "/invoke"
    assert line["status"] == 200


def test_request_id_is_generated_and_logged(hello: Any, client: httpx.Client) -> None:
    r = client.get(f"{hello.url}/livez")
    rid = r.headers["x-request-id"]
    assert HEX32.match(rid)
    assert client.get(f"{hello.url}/livez").headers["x-request-id"] != rid
    line = hello.wait_for_log(lambda e: e.get("event") == "request" and e.get("request_id") == rid)
    assert line["path"] == "/livez"
    assert line["status"] == 200


def test_invalid_request_id_is_replaced(hello: Any, client: httpx.Client) -> None:
    r = client.get(f"{hello.url}/livez", headers={"x-request-id": "x" * 500})
    assert HEX32.match(r.headers["x-request-id"])


def test_error_status_is_in_access_log(hello: Any, client: httpx.Client) -> None:
    rid = "req-422-log"
    invoke(client, hello, {"parameters": {"name": 1}}, headers={"x-request-id": rid})
    line = hello.wait_for_log(lambda e: e.get("event") == "request" and e.get("request_id") == rid)
    assert line["status"] == 422


def test_access_log_follows_log_level(daemon: Any) -> None:
    d = daemon(HELLO, log_level="warning")
    rid = "quiet-request"
    r = httpx.post(f"{d.url}/invoke", json={}, headers={"x-request-id": rid})
    assert r.status_code == 200
    d.signal()
    assert d.wait(timeout=10) == 0
    assert rid not in d.logs()


# -- other routes -----------------------------------------------------------------------


def test_unknown_route_is_404_problem(hello: Any, client: httpx.Client) -> None:
    body = assert_problem(client.get(f"{hello.url}/nope"), 404)
    assert "/nope" in body["detail"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/invoke"), ("DELETE", "/health"), ("POST", "/info")])
def test_wrong_method_is_405_problem(hello: Any, client: httpx.Client, method: str, path: str) -> None:
    r = client.request(method, f"{hello.url}{path}")
    assert_problem(r, 405)
    assert "allow" in r.headers


def test_health(hello: Any, client: httpx.Client) -> None:
    r = client.get(f"{hello.url}/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert body["pipeline"] == "hello"
    assert isinstance(body["uptime_seconds"], int | float)
    assert body["uptime_seconds"] >= 0


def test_livez_and_readyz(hello: Any, client: httpx.Client) -> None:
    assert client.get(f"{hello.url}/livez").json() == {"status": "alive"}
    r = client.get(f"{hello.url}/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready"}


def test_info(weather: Any, client: httpx.Client) -> None:
    r = client.get(f"{weather.url}/info")
    assert r.status_code == 200
    info = r.json()
    assert info["pipeline"]["name"] == "weather_agent"
    assert info["pipeline"]["parameters"] == ["city"]
    assert info["pipeline"]["outputs"] == ["weather", "advice"]
    steps = {s["id"]: s for s in info["steps"]}
    assert list(steps) == ["get_weather", "analyze_weather"]
    assert steps["get_weather"]["upstream"] == []
    assert steps["get_weather"]["retries"] == 2
    assert steps["analyze_weather"]["upstream"] == ["get_weather"]
    assert info["runtime"] == "realtime"
    input_schema = info["input_schema"]
    props = input_schema["$defs"]["PipelineInput"]["properties"]
    assert props["city"]["type"] == "string"
    assert props["city"]["default"] == "London"
    assert input_schema["$defs"]["PipelineInput"]["additionalProperties"] is False
    output = info["output_schema"]
    out_props = output["$defs"]["PipelineOutput"]["properties"]
    assert set(out_props) == {"weather", "advice"}


def test_status_shows_settings(hello: Any, client: httpx.Client) -> None:
    r = client.get(f"{hello.url}/status")
    assert r.status_code == 200
    status = r.json()
    assert status["pipeline"] == "hello"
    assert status["runtime"] == "realtime"
    assert status["ready"] is True
    assert status["draining"] is False
    settings = status["settings"]
    assert settings["pipeline"] == HELLO
    assert settings["auth_key"] is None
    assert settings["max_body_bytes"] == MAX_BODY
    assert settings["deployment_name"] == "demo"
    assert settings["server"] == "hypercorn"
    assert settings["log_format"] == "json"


def test_openapi(orders: Any, client: httpx.Client) -> None:
    r = client.get(f"{orders.url}/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    assert set(schemas["PipelineInput"]["properties"]) == {"order", "tax_rate"}
    assert set(schemas["Order"]["properties"]) == {"sku", "qty", "unit_price", "currency"}
    post = doc["paths"]["/invoke"]["post"]
    assert "price_order" in post["summary"]
    assert {"200", "400", "413", "415", "422", "500", "504"} <= set(post["responses"])
    req = post["requestBody"]["content"]["application/json"]["schema"]
    assert req == {"$ref": "#/components/schemas/InvokeRequest"}
    assert set(schemas["InvokeRequest"]["properties"]) == {"parameters", "run_name", "timeout"}


def test_docs_are_served_locally(hello: Any, client: httpx.Client) -> None:
    r = client.get(f"{hello.url}/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in r.text
    assert "/docs/static/swagger-ui-bundle.js" in r.text
    assert "https://" not in r.text  # no CDN
    js = client.get(f"{hello.url}/docs/static/swagger-ui-bundle.js")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert len(js.content) > 10_000
    assert client.get(f"{hello.url}/docs/static/swagger-ui.css").status_code == 200
