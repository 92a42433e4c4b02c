"""`GET /runs` and `GET /runs/{run_id}` against real daemons: the SQLite store, the
PostgreSQL store, paging, bad queries, the auth key, and a store that cannot be read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import wait_until

TESTS = Path(__file__).resolve().parent.parent
OBSERVED = f"{TESTS / 'pipelines' / 'observed.py'}:observed"
HELLO = f"{TESTS.parent / 'examples' / 'hello.py'}:hello"
HANG_GUARD = 30.0
KEY = "runs-s3cr3t"


def invoke(client: httpx.Client, **parameters: Any) -> str:
    r = client.post("/invoke", json={"parameters": parameters})
    assert r.status_code == 200, r.text
    return r.json()["metadata"]["run_id"]


def listed(client: httpx.Client, **params: Any) -> dict[str, Any]:
    r = client.get("/runs", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for_runs(client: httpx.Client, daemon: Any, run_ids: set[str]) -> None:
    wait_until(
        lambda: run_ids <= {r["run_id"] for r in listed(client, limit=200)["runs"]},
        "the runs to be listed by /runs",
        timeout=HANG_GUARD,
        detail=daemon.stderr_detail,
    )


def check_store(d: Any) -> None:
    """What both stores must answer alike."""
    with d.client() as client:
        assert listed(client) == {"runs": [], "next_cursor": None}  # nothing captured yet
        run_ids = [invoke(client, marker=f"runs-{i}", n=i + 1) for i in range(5)]
        failing = client.post("/invoke", json={"parameters": {"marker": "boom", "n": 1, "fail": True}})
        assert failing.status_code == 500
        failed_id = failing.json()["metadata"]["run_id"]
        wait_for_runs(client, d, {*run_ids, failed_id})

        # Pages of two, newest first, until next_cursor is null: every run once, in order.
        seen: list[str] = []
        cursor = None
        while True:
            page = listed(client, limit=2, **({"cursor": cursor} if cursor else {}))
            assert len(page["runs"]) <= 2
            seen += [r["run_id"] for r in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [failed_id, *reversed(run_ids)]

        only_failed = listed(client, status="failed")["runs"]
        assert [r["run_id"] for r in only_failed] == [failed_id]
        assert "failure requested" in only_failed[0]["error"]
        assert listed(client, pipeline="no-such-pipeline")["runs"] == []

        first = listed(client, status="completed", limit=200)["runs"][-1]
        assert first["run_id"] == run_ids[0]
        assert first["parameters"]["marker"] == "runs-0"  # decoded JSON, not a string
        assert first["pipeline"] == "observed"
        assert first["duration"] >= 0

        r = client.get(f"/runs/{run_ids[0]}")
        assert r.status_code == 200, r.text
        detail = r.json()
        assert detail["run_id"] == run_ids[0]
        assert detail["status"] == "completed"
        steps = {s["step_id"]: s for s in detail["steps"]}
        assert {"load", "total", "summarize"} <= set(steps)
        assert steps["load"]["status"] == "completed"
        assert steps["load"]["output_preview"] == "[0]"
        messages = [line["message"] for line in steps["load"]["logs"]]
        assert any("print-sync runs-0" in m for m in messages), messages
        assert any(a["step_id"] == "chart" and a["size"] > 0 for a in detail["artifacts"]), detail[
            "artifacts"
        ]

        missing = client.get(f"/runs/{run_ids[0][:-1]}x")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert "no run with id" in missing.json()["detail"]


def test_runs_api_reads_the_sqlite_store(daemon: Any) -> None:
    check_store(daemon(OBSERVED, access_log="false"))


def test_runs_api_reads_the_postgres_store(daemon: Any, pg_url: str) -> None:
    check_store(daemon(OBSERVED, capture_url=pg_url, access_log="false"))


def test_bad_queries_are_422_naming_the_field(daemon: Any) -> None:
    d = daemon(HELLO, access_log="false")
    with d.client() as client:
        for params, field in (
            ({"limit": "0"}, "query.limit"),
            ({"limit": "²"}, "query.limit"),
            ({"limit": "9" * 5000}, "query.limit"),
            ({"status": "weird"}, "query.status"),
            ({"cursor": "nope"}, "query.cursor"),
            ({"cursor": "nan~abc"}, "query.cursor"),
            ({"cursor": "1.5~a'b"}, "query.cursor"),
        ):
            r = client.get("/runs", params=params)
            assert r.status_code == 422, (params, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert [e["loc"] for e in r.json()["errors"]] == [field], params


def test_runs_need_the_auth_key_like_jobs(daemon: Any) -> None:
    d = daemon(HELLO, auth_key=KEY, access_log="false")
    with d.client() as client:
        assert client.get("/runs").status_code == 401
        assert client.get("/runs/anything").status_code == 401
        headers = {"Authorization": f"Bearer {KEY}"}
        assert client.get("/runs", headers=headers).status_code == 200


def test_a_store_that_cannot_be_read_back_is_404_saying_why(daemon: Any, tmp_path: Path) -> None:
    d = daemon(HELLO, capture_url=f"jsonl://{tmp_path / 'runs.jsonl'}", access_log="false")
    with d.client() as client:
        for path in ("/runs", "/runs/some-run"):
            r = client.get(path)
            assert r.status_code == 404, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert "not SQLite or PostgreSQL" in r.json()["detail"]


def test_openapi_documents_the_runs_api(daemon: Any) -> None:
    d = daemon(HELLO, access_log="false")
    with d.client() as client:
        doc = client.get("/openapi.json").json()
    # 401 is documented only on a protected daemon (tests/serving/test_openapi.py checks it)
    assert set(doc["paths"]["/runs"]["get"]["responses"]) >= {"200", "404", "422"}
    assert "/runs/{run_id}" in doc["paths"]
    token = doc["paths"]["/jobs/{job_id}/stream-token"]["post"]
    assert set(token["responses"]) == {"200", "404"}
    schemas = doc["components"]["schemas"]
    assert {"RunsPage", "RunDetail", "RunStep"} <= set(schemas)
    ref = doc["paths"]["/runs"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[1] in schemas


@pytest.mark.parametrize("bad", ["-1", "abc"])
def test_limit_must_be_a_positive_integer(daemon: Any, bad: str) -> None:
    d = daemon(HELLO, access_log="false")
    with d.client() as client:
        assert client.get("/runs", params={"limit": bad}).status_code == 422
