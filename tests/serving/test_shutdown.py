"""Graceful shutdown: SIGTERM drains, in-flight requests finish, the process exits 0."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from calls import Call
from polling import wait_for_file

from serving.app import AppState

TESTS = Path(__file__).resolve().parent.parent
HELLO = f"{TESTS.parent / 'examples' / 'hello.py'}:hello"
SLOW = f"{TESTS / 'pipelines' / 'slow.py'}:slow"
HANG_GUARD = 15.0


@pytest.fixture(params=["hypercorn", "uvicorn"])
def server(request: pytest.FixtureRequest) -> str:
    """Every daemon-level test here runs on both servers; drains differ between them."""
    return request.param


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_in_flight_request_finishes(daemon: Any, tmp_path: Path, server: str, signum: int) -> None:
    d = daemon(SLOW, server=server, graceful_timeout=10)
    marker = tmp_path / "started"
    call = Call(d.url, {"parameters": {"seconds": 1.0, "marker": str(marker)}})
    call.start()
    wait_for_file(marker, detail=d.stderr_detail)  # the step is running: the request is in flight
    d.signal(signum)
    r = call.result()
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == {"slept": 1.0}
    assert d.wait(HANG_GUARD) == 0
    events = [e["event"] for e in d.log_events()]
    assert "draining" in events
    assert events[-1] == "stopped"
    draining = next(e for e in d.log_events() if e["event"] == "draining")
    assert draining["signal"] == signal.Signals(signum).name


def test_readyz_503_during_drain_delay(daemon: Any, server: str) -> None:
    d = daemon(HELLO, server=server, drain_delay=1)
    with httpx.Client(base_url=d.url, timeout=5) as client:
        assert client.get("/readyz").status_code == 200
        d.signal(signal.SIGTERM)
        d.wait_for_log(lambda e: e.get("event") == "draining")
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == "draining: shutting down"
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "draining"
        assert client.get("/livez").status_code == 200
        # still serving work until the delay is over
        ok = client.post("/invoke", json={"parameters": {"name": "Late"}})
        assert ok.status_code == 200, ok.text
        status = client.get("/status").json()
        assert status["draining"] is True
    assert d.wait(HANG_GUARD) == 0


def test_graceful_timeout_bounds_shutdown(daemon: Any, tmp_path: Path, server: str) -> None:
    d = daemon(SLOW, server=server, graceful_timeout=0.5)
    marker = tmp_path / "started"
    call = Call(d.url, {"parameters": {"seconds": 60, "marker": str(marker)}})
    call.start()
    wait_for_file(marker, detail=d.stderr_detail)
    d.signal(signal.SIGTERM)
    assert d.wait(HANG_GUARD) == 0  # did not wait for the 60 s step
    call.join(HANG_GUARD)
    assert not call.is_alive()
    assert call.response is None or call.response.status_code != 200


def test_second_signal_stops_at_once(daemon: Any, server: str, tmp_path: Path) -> None:
    d = daemon(SLOW, server=server, graceful_timeout=30)
    marker = tmp_path / "started"
    Call(d.url, {"parameters": {"seconds": 20, "marker": str(marker)}}).start()
    wait_for_file(marker, detail=d.stderr_detail)
    d.signal()
    d.wait_for_log(lambda e: e.get("event") == "draining", "the first signal to start the drain")
    d.signal()
    assert d.wait(timeout=10) == 1  # hang guard: the graceful timeout is 30 s
    assert "second_signal_stopping_now" in [e.get("event") for e in d.log_events()]


def test_requests_and_jobs_in_flight_are_both_cut_off_at_the_graceful_timeout(
    daemon: Any, tmp_path: Path, server: str
) -> None:
    """How long that takes is a figure in bench/limits.py; that requests and jobs share
    one budget is shown without a clock by the test below."""
    d = daemon(SLOW, server=server, graceful_timeout=2)
    with httpx.Client(base_url=d.url, timeout=HANG_GUARD) as client:
        r = client.post("/invoke?mode=async", json={"parameters": {"seconds": 60}})
        assert r.status_code == 202, r.text
    marker = tmp_path / "sync"
    call = Call(d.url, {"parameters": {"seconds": 60, "marker": str(marker)}})
    call.start()
    wait_for_file(marker, detail=d.stderr_detail)
    d.signal()
    assert d.wait(HANG_GUARD) == 0  # neither 60 s step was waited for
    call.join(HANG_GUARD)
    assert call.response is None or call.response.status_code != 200


def test_jobs_get_only_what_the_requests_left_of_the_graceful_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget used to be spent twice: once by the server on requests, then again on jobs."""
    now = [100.0]
    monkeypatch.setattr("serving.app.time.monotonic", lambda: now[0])
    state = AppState()
    assert state.grace_left(graceful_timeout=2.0, drain_delay=1.0) == 2.0  # not draining yet
    state.begin_drain()
    now[0] += 1.0  # the drain delay: requests are still accepted, nothing spent
    assert state.grace_left(graceful_timeout=2.0, drain_delay=1.0) == 2.0
    now[0] += 1.5  # the server waited this long for in-flight requests
    assert state.grace_left(graceful_timeout=2.0, drain_delay=1.0) == 0.5
    now[0] += 5.0
    assert state.grace_left(graceful_timeout=2.0, drain_delay=1.0) == 0.0
    state.forced = True  # a second signal
    assert state.grace_left(graceful_timeout=2.0, drain_delay=1.0) == 0.0
