"""CORS (`SERVING_CORS_ORIGINS`), stream tokens, and the `/ui` routes, over HTTP against
real daemons. The browser's side of the same is in tests/ui/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from serving.stream_tokens import StreamTokens

TESTS = Path(__file__).resolve().parent.parent
DASH = f"{TESTS / 'pipelines' / 'dashboard.py'}:dashboard"
ORIGIN = "http://127.0.0.1:7001"
OTHER = "http://127.0.0.1:7002"
KEY = "cors-s3cr3t-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def preflight(client: httpx.Client, path: str, origin: str, method: str = "GET") -> httpx.Response:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, last-event-id",
        },
    )


def test_preflights_of_the_api_answer_listed_origins_only(daemon: Any) -> None:
    d = daemon(DASH, cors_origins=f"{ORIGIN}, {ORIGIN}/", auth_key=KEY, access_log="false")
    with d.client() as client:
        for path, method in (
            ("/invoke", "POST"),
            ("/jobs", "GET"),
            ("/jobs/x/cancel", "POST"),
            ("/stream/x", "GET"),
            ("/runs", "GET"),
        ):
            ok = preflight(client, path, ORIGIN, method)
            assert ok.status_code == 200, (path, ok.text)
            assert ok.headers["access-control-allow-origin"] == ORIGIN
            allowed = ok.headers["access-control-allow-headers"].lower()
            assert "authorization" in allowed and "last-event-id" in allowed
            refused = preflight(client, path, OTHER, method)
            assert refused.status_code == 400, path
            assert "access-control-allow-origin" not in refused.headers
        # The real request: CORS headers on it, and on a 401 too (the page can read why).
        r = client.get("/jobs", headers={"Origin": ORIGIN, **AUTH})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        r = client.get("/jobs", headers={"Origin": ORIGIN})
        assert r.status_code == 401
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert (
            "access-control-allow-origin"
            not in client.get("/jobs", headers={"Origin": OTHER, **AUTH}).headers
        )
        status = client.get("/status", headers=AUTH).json()
        assert status["settings"]["cors_origins"] == f"{ORIGIN}, {ORIGIN}/"
        assert status["settings"]["auth_key"] == "***"


def test_no_cors_headers_without_the_setting(daemon: Any) -> None:
    d = daemon(DASH, access_log="false")
    with d.client() as client:
        r = client.get("/jobs", headers={"Origin": ORIGIN})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers
        assert preflight(client, "/invoke", ORIGIN, "POST").status_code == 405


def test_a_wildcard_origin_is_refused_with_an_auth_key(run_serving: Any) -> None:
    done = run_serving(DASH, cors_origins="*", auth_key=KEY)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "SERVING_CORS_ORIGINS='*' is not allowed with SERVING_AUTH_KEY" in lines[0]
    assert KEY not in done.stderr


@pytest.mark.parametrize("bad", ["127.0.0.1:3000", "ftp://x", "http://a/b", "http://*.example.com"])
def test_an_origin_that_is_not_one_is_refused(run_serving: Any, bad: str) -> None:
    done = run_serving(DASH, cors_origins=f"http://ok.example, {bad}")
    assert done.returncode == 2
    assert "SERVING_CORS_ORIGINS=" in done.stderr and repr(bad) in done.stderr, done.stderr


def test_a_wildcard_origin_without_a_key_allows_any(daemon: Any) -> None:
    d = daemon(DASH, cors_origins="*", access_log="false")
    with d.client() as client:
        r = preflight(client, "/invoke", OTHER, "POST")
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] in ("*", OTHER)


def submit(client: httpx.Client, **params: Any) -> str:
    r = client.post("/invoke", params={"mode": "async"}, json={"parameters": params}, headers=AUTH)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def stream_types(client: httpx.Client, url: str) -> list[str]:
    with connect_sse(client, "GET", url) as source:
        assert source.response.status_code == 200
        return [event.event for event in source.iter_sse()]


def test_a_stream_token_opens_one_jobs_stream_and_nothing_else(daemon: Any) -> None:
    d = daemon(DASH, auth_key=KEY)  # with the access log on: the token must not appear in it
    with d.client() as client:
        job = submit(client)
        other = submit(client)
        r = client.post(f"/jobs/{job}/stream-token", headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        token = body["token"]
        assert body["expires_in"] > 0 and body["stream_url"] == f"/stream/{job}?token={token}"
        assert r.headers["cache-control"] == "no-store"
        assert stream_types(client, body["stream_url"])[-1] == "run_completed"

        # Not without the key, not for an unknown job, not for another job, not elsewhere.
        assert client.post(f"/jobs/{job}/stream-token").status_code == 401
        assert client.post("/jobs/nope/stream-token", headers=AUTH).status_code == 404
        wrong = client.get(f"/stream/{other}", params={"token": token})
        assert wrong.status_code == 401
        assert wrong.json()["detail"] == "invalid or expired stream token"
        assert client.get(f"/jobs/{job}", params={"token": token}).status_code == 401
        assert client.get(f"/stream/{job}", params={"token": "1.abc"}).status_code == 401
        assert client.get(f"/stream/{job}", params={"token": KEY}).status_code == 401
        # The key itself is not a token either way round: in the URL it opens nothing.
        assert client.get(f"/stream/{job}", params={"token": f"Bearer {KEY}"}).status_code == 401
        d.wait_for_log(
            lambda e: e.get("event") == "request" and e.get("path") == f"/stream/{other}",
            "the access line of the refused stream",
        )
    logs = d.logs()
    assert token not in logs
    assert token.split(".")[1] not in logs
    assert KEY not in logs


def test_without_a_key_the_token_reply_says_none_is_needed(daemon: Any) -> None:
    d = daemon(DASH, access_log="false")
    with d.client() as client:
        r = client.post("/invoke", params={"mode": "async"}, json={"parameters": {}})
        job = r.json()["job_id"]
        body = client.post(f"/jobs/{job}/stream-token").json()
        assert body == {"token": None, "expires_in": None, "stream_url": f"/stream/{job}"}


def test_tokens_expire_and_are_bound_to_their_job() -> None:
    tokens = StreamTokens("k", ttl=60)
    token = tokens.mint("job-a", now=1000.0)
    assert tokens.valid(token, "job-a", now=1059.0)
    assert not tokens.valid(token, "job-a", now=1061.0)
    assert not tokens.valid(token, "job-b", now=1000.0)
    assert not StreamTokens("other-key").valid(token, "job-a", now=1000.0)
    expiry, signature = token.split(".")
    assert not tokens.valid(f"{int(expiry) + 1000}.{signature}", "job-a", now=1000.0)
    for junk in ("", ".", "abc", "1e9.x", "\uff19\uff19.x", "1" * 40 + ".x"):
        assert not tokens.valid(junk, "job-a", now=1000.0)


def test_the_page_is_served_and_browsers_are_sent_to_it(daemon: Any) -> None:
    d = daemon(DASH, auth_key=KEY, access_log="false")
    with d.client() as client:
        r = client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert r.status_code == 307 and r.headers["location"] == "/ui"
        # API clients keep today's answer: the key is asked for first, then no such route.
        assert client.get("/", headers={"Accept": "application/json"}).status_code == 401
        assert client.get("/", headers=AUTH).status_code == 404
        page = client.get("/ui")  # open: the page asks for the key itself
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert '<button type="submit" id="run">Run</button>' in page.text
        assert "http" not in page.text.replace("http-equiv", "")  # nothing from another origin
        for asset, kind in (("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")):
            r = client.get(asset)
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert client.get("/ui/config.json").json() == {"auth": True}
        missing = client.get("/ui/nope.js")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert client.post("/ui").status_code == 405
