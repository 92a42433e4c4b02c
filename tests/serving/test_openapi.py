"""The API document: every route and reply in it, checked by schemathesis against real
daemons (open and protected), the bearer scheme where it applies, and problem+json
replies that always carry `type`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route

from runtimes.memory import MemoryOnlyRuntime
from serving.app import create_app
from serving.loader import load_pipeline
from serving.settings import load_settings
from serving.ui import PATHS as UI_PATHS

OPEN_PATHS = ("/health", "/livez", "/readyz", "/metrics", "/docs", "/docs/static/{file}")

HERE = Path(__file__).resolve().parent
API_SURFACE = f"{HERE.parent / 'pipelines' / 'api_surface.py'}:api_surface"
AUTH_KEY = "openapi-test-key"
BEARER = {"Authorization": f"Bearer {AUTH_KEY}"}
ST = Path(sys.executable).parent / "st"


@pytest.fixture(scope="module")
def open_daemon(module_daemon: Any) -> Any:
    return module_daemon(API_SURFACE, log_level="warning")


@pytest.fixture(scope="module")
def protected(module_daemon: Any) -> Any:
    return module_daemon(API_SURFACE, auth_key=AUTH_KEY, log_level="warning")


def document(daemon: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = httpx.get(f"{daemon.url}/openapi.json", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


# -- schemathesis -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["open", "protected"])
def test_schemathesis_finds_no_failure(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Every phase (coverage, fuzzing, stateful) and every check, `--checks all`, with a
    fixed seed so a failure reproduces. The document is fetched here (on a protected
    deployment it needs the token) and schemathesis sends the token itself, through the
    bearer scheme, so it can also try requests without it."""
    daemon = request.getfixturevalue(f"{kind}_daemon" if kind == "open" else kind)
    headers = BEARER if kind == "protected" else None
    spec = tmp_path / "openapi.json"
    spec.write_bytes(httpx.get(f"{daemon.url}/openapi.json", headers=headers, timeout=10).content)
    env = {
        **os.environ,
        "SERVING_TEST_BEARER": AUTH_KEY,
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [
            str(ST),
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            str(spec),
            "--url",
            daemon.url,
            "--checks",
            "all",
            "--max-examples",
            "20",
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{result.stdout[-12000:]}\n{result.stderr[-4000:]}"
    summary = result.stdout[result.stdout.rindex("Test cases:") :]
    assert "failure" not in summary and " passed" in summary, result.stdout[-12000:]
    assert "Open API 3.1.0" in result.stdout


# -- the document -------------------------------------------------------------------------


def test_the_document_is_openapi_3_1_and_has_every_route_and_invoke_reply(open_daemon: Any) -> None:
    doc = document(open_daemon)
    assert doc["openapi"] == "3.1.0"
    ops = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert {
        ("/invoke", "post"),
        ("/jobs", "get"),
        ("/jobs/{job_id}", "get"),
        ("/jobs/{job_id}", "delete"),
        ("/jobs/{job_id}/cancel", "post"),
        ("/stream/{job_id}", "get"),
        ("/metrics", "get"),
        ("/docs", "get"),
        ("/openapi.json", "get"),
    } <= ops
    replies = doc["paths"]["/invoke"]["post"]["responses"]
    assert {"200", "202", "409", "429", "503", "504"} <= set(replies)
    assert "security" not in doc  # nothing to send on an open deployment
    assert "401" not in replies


def test_every_route_of_the_app_is_in_the_document(tmp_path: Path) -> None:
    """A route added without `ApiDocument.add` fails here (WebSocket /stream cannot be
    described in OpenAPI and is named in /stream/{job_id}'s description)."""
    settings = load_settings({"SERVING_HOME": str(tmp_path), "SERVING_PIPELINE": API_SURFACE})
    app = create_app(load_pipeline(API_SURFACE), MemoryOnlyRuntime(), settings)
    doc = app.state.api_document
    documented = {(path, method.upper()) for path, item in doc["paths"].items() for method in item}
    served: set[tuple[str, str]] = set()
    for route in app.starlette.routes:
        if isinstance(route, Route):
            served.update((route.path, m) for m in route.methods or () if m != "HEAD")
        elif isinstance(route, Mount):
            served.add((f"{route.path}/{{file}}", "GET"))
    served.update((path, "GET") for path in UI_PATHS)  # served by UIMiddleware, in front of the routes
    assert served - documented == set()
    assert documented - served == set()


def test_protected_routes_require_the_bearer_scheme_and_open_ones_do_not(protected: Any) -> None:
    doc = document(protected, BEARER)
    assert doc["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            is_open = path in (*OPEN_PATHS, *UI_PATHS)
            assert (op.get("security") == []) is is_open, (path, method)
            assert ("401" in op["responses"]) is not is_open, (path, method)


def test_docs_page_is_open_on_a_protected_deployment_and_its_calls_are_not(protected: Any) -> None:
    with httpx.Client(base_url=protected.url, timeout=10) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert "swagger-ui-bundle.js" in page.text
        assert "Bearer" in page.text  # it asks for the token and sends it
        assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 200
        assert client.get("/openapi.json").status_code == 401
        assert client.post("/invoke", json={}).status_code == 401
        assert client.get("/jobs").status_code == 401
        assert client.post("/invoke", json={}, headers=BEARER).status_code == 200


# -- problem replies carry `type` ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/jobs/unknown", 404),
        ("PUT", "/jobs/unknown", 405),
        ("GET", "/invoke", 405),
        ("GET", "/jobs?limit=0", 422),
        ("GET", "/jobs?status=done", 422),
        ("GET", "/jobs/x?wait=inf", 422),
        ("GET", "/stream/x?after_seq=abc", 422),
    ],
)
def test_problem_replies_of_every_route_carry_type(
    open_daemon: Any, method: str, path: str, status: int
) -> None:
    r = httpx.request(method, f"{open_daemon.url}{path}", timeout=10)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    if status == 405:
        assert r.headers["allow"]


def test_a_409_on_jobs_carries_type(open_daemon: Any) -> None:
    with httpx.Client(base_url=open_daemon.url, timeout=10) as client:
        job = client.post("/invoke", params={"mode": "async"}, json={}).json()
        assert client.get(f"/jobs/{job['job_id']}", params={"wait": 10}).json()["status"] == "completed"
        r = client.post(f"/jobs/{job['job_id']}/cancel")
        assert r.status_code == 409, r.text
        assert r.json()["type"] == "about:blank"


def test_405_on_a_job_lists_both_of_its_methods(open_daemon: Any) -> None:
    r = httpx.put(f"{open_daemon.url}/jobs/x", timeout=10)
    assert r.status_code == 405
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "DELETE"}


def test_a_bad_after_seq_is_refused_even_with_a_good_last_event_id(open_daemon: Any) -> None:
    r = httpx.get(
        f"{open_daemon.url}/stream/x", params={"after_seq": "abc"}, headers={"Last-Event-ID": "3"}, timeout=10
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == "query.after_seq"
