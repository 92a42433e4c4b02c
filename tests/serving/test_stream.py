"""Following jobs live against real daemons: SSE `/stream/{id}` and WebSocket `/stream`.

Steps are driven with marker files (tests/pipelines/gated.py, streaming.py): the test
opens a gate only once it has seen the event that proves where the run is, so ordering
never depends on timing. Client timeouts are hang guards only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gates import Gate
from httpx_sse import connect_sse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

TESTS = Path(__file__).resolve().parent.parent
GATED = f"{TESTS / 'pipelines' / 'gated.py'}:gated"
STREAMING = f"{TESTS / 'pipelines' / 'streaming.py'}:streaming"

GUARD = 10.0  # seconds; a hang guard only
AUTH_KEY = "ws-s3cr3t"
TERMINAL = {"run_completed", "run_failed", "run_canceled"}
GATED_EVENTS = [
    "run_started",
    "step_started",  # prepare
    "step_completed",
    "step_started",  # hold
    "progress",  # 0.25 waiting: the step now waits for its release file
    "progress",  # 1.0 released
    "step_completed",
    "step_started",  # finish
    "step_completed",
    "run_completed",
]
WAITING = 5  # seq of the progress event after which a blocked gated run waits


# -- daemons ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gated(module_daemon: Any) -> Any:
    return module_daemon(GATED, sse_ping=0.2, access_log="false")


@pytest.fixture(scope="module")
def streaming(module_daemon: Any) -> Any:
    return module_daemon(STREAMING, access_log="false")


@pytest.fixture(scope="module", params=["hypercorn", "uvicorn"])
def ws_daemon(module_daemon: Any, request: pytest.FixtureRequest) -> Any:
    return module_daemon(GATED, server=request.param, access_log="false")


# -- helpers ------------------------------------------------------------------------------


def submit(client: httpx.Client, daemon: Any, params: dict[str, Any]) -> str:
    r = client.post(f"{daemon.url}/invoke", params={"mode": "async"}, json={"parameters": params})
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def get_job(client: httpx.Client, daemon: Any, job_id: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"{daemon.url}/jobs/{job_id}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def sse_events(
    client: httpx.Client,
    daemon: Any,
    job_id: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    on_event: Any = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Read `/stream/{job_id}` to its end (or `limit` events), checking each event's framing.

    `on_event(data)` is called as each event arrives, while the stream is still open.
    """
    out: list[dict[str, Any]] = []
    url = f"{daemon.url}/stream/{job_id}"
    with connect_sse(client, "GET", url, headers=dict(headers or {}), params=params) as src:
        assert src.response.status_code == 200
        assert src.response.headers["content-type"].startswith("text/event-stream")
        assert src.response.headers["cache-control"] == "no-store"
        for sse in src.iter_sse():
            if not sse.data:
                # httpx-sse 0.4 turns a ping comment after an event with an id into an
                # empty event (florimondmanca/httpx-sse#35); the SSE spec drops it.
                continue
            data = json.loads(sse.data)
            assert data["type"] == sse.event
            assert str(data["seq"]) == sse.id
            out.append(data)
            if on_event is not None:
                on_event(data)
            if limit is not None and len(out) == limit:
                break
    return out


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def open_when_waiting(gate: Gate) -> Any:
    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "progress" and event["message"] == "waiting":
            gate.open()

    return on_event


# -- SSE ----------------------------------------------------------------------------------


def test_sse_delivers_every_event_in_order_then_ends(gated: Any, client: httpx.Client, gates: Any) -> None:
    gate = gates("order")
    job_id = submit(client, gated, gate.params())
    events = sse_events(client, gated, job_id, on_event=open_when_waiting(gate))
    assert seqs(events) == list(range(1, len(events) + 1))
    assert types(events) == GATED_EVENTS
    assert sum(e["type"] in TERMINAL for e in events) == 1
    assert {e["run_id"] for e in events} == {get_job(client, gated, job_id)["run_id"]}
    # the terminal event is sent only once the record says so
    assert get_job(client, gated, job_id)["status"] == "completed"
    # a subscriber that comes after the end gets the history and the end
    assert sse_events(client, gated, job_id) == events


def test_sse_resumes_after_last_event_id_without_loss_or_duplicates(
    gated: Any, client: httpx.Client, gates: Any
) -> None:
    gate = gates("resume")
    job_id = submit(client, gated, gate.params())
    head = sse_events(client, gated, job_id, limit=3)
    assert seqs(head) == [1, 2, 3]
    rest = sse_events(client, gated, job_id, headers={"Last-Event-ID": "3"}, on_event=open_when_waiting(gate))
    assert seqs(rest)[0] == 4
    full = sse_events(client, gated, job_id)
    assert head + rest == full
    assert types(full) == GATED_EVENTS
    # from any point of a finished job, exactly the rest; ?after_seq= does the same
    for k in (0, 1, 5, len(full) - 1):
        assert sse_events(client, gated, job_id, headers={"Last-Event-ID": str(k)}) == full[k:]
        assert sse_events(client, gated, job_id, params={"after_seq": k}) == full[k:]
    assert sse_events(client, gated, job_id, headers={"Last-Event-ID": str(len(full))}) == []


def test_sse_bad_resume_point_and_unknown_job(gated: Any, client: httpx.Client, gates: Any) -> None:
    job_id = submit(client, gated, gates("bad").params(block=False))
    r = client.get(f"{gated.url}/stream/{job_id}", headers={"Last-Event-ID": "three"})
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["errors"]] == ["Last-Event-ID"]
    r = client.get(f"{gated.url}/stream/{'0' * 32}")
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/problem+json"


def test_twenty_concurrent_subscribers_get_the_identical_sequence(gated: Any, gates: Any) -> None:
    gate = gates("fanout")
    n = 20
    with httpx.Client(timeout=GUARD) as c:
        job_id = submit(c, gated, gate.params())
    all_reading = threading.Barrier(n + 1, timeout=GUARD)
    results: list[list[dict[str, Any]] | BaseException] = [[] for _ in range(n)]

    def subscriber(i: int) -> None:
        try:
            with httpx.Client(timeout=GUARD) as c:
                first = [True]

                def on_event(event: dict[str, Any]) -> None:
                    if first[0]:
                        first[0] = False
                        all_reading.wait()  # connected and reading before the run goes on

                results[i] = sse_events(c, gated, job_id, on_event=on_event)
        except BaseException as exc:
            all_reading.abort()
            results[i] = exc

    threads = [threading.Thread(target=subscriber, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    all_reading.wait()
    gate.open()
    for t in threads:
        t.join(GUARD + 5)
    assert not any(t.is_alive() for t in threads)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    first = results[0]
    assert isinstance(first, list) and types(first) == GATED_EVENTS
    assert seqs(first) == list(range(1, len(GATED_EVENTS) + 1))
    assert all(r == first for r in results)


def test_sse_ping_comments_while_idle(gated: Any, client: httpx.Client, gates: Any) -> None:
    gate = gates("ping")
    job_id = submit(client, gated, gate.params())
    lines: list[str] = []
    with client.stream("GET", f"{gated.url}/stream/{job_id}") as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith(":"):
                gate.open()  # the run waits until a ping has come (SERVING_SSE_PING=0.2)
    pings = [i for i, line in enumerate(lines) if line.startswith(":")]
    assert pings
    terminal = lines.index("event: run_completed")
    assert pings[0] < terminal


def test_progress_events_carry_fraction_and_message(gated: Any, client: httpx.Client, gates: Any) -> None:
    job_id = submit(client, gated, gates("progress").params(block=False))
    events = sse_events(client, gated, job_id)
    progress = [(e["step"], e["fraction"], e["message"]) for e in events if e["type"] == "progress"]
    assert progress == [("hold", 0.25, "waiting"), ("hold", 1.0, "released")]
    job = get_job(client, gated, job_id)
    assert job["progress"]["fraction"] == 1.0 and job["progress"]["message"] == "released"


def test_generator_chunks_arrive_before_the_step_finishes(
    streaming: Any, client: httpx.Client, tmp_path: Path
) -> None:
    release = tmp_path / "tokens.release"
    job_id = submit(client, streaming, {"release": str(release)})
    seen: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        if event["type"] == "chunk" and event["index"] == 0:
            # the step yielded "a" and now waits for the file only we create
            assert event["data"] == "a" and event["step"] == "tokens"
            assert "step_completed" not in types(seen)
            assert get_job(client, streaming, job_id)["status"] == "running"
            release.touch()

    try:
        events = sse_events(client, streaming, job_id, on_event=on_event)
    finally:
        release.touch()
    chunks = [(e["index"], e["data"]) for e in events if e["type"] == "chunk"]
    assert chunks == [(0, "a"), (1, "b"), (2, "c")]
    assert types(events) == [
        "run_started",
        "step_started",
        "chunk",
        "chunk",
        "chunk",
        "step_completed",
        "step_started",
        "step_completed",
        "run_completed",
    ]
    assert seqs(events) == list(range(1, len(events) + 1))
    job = get_job(client, streaming, job_id)
    assert job["result"]["outputs"] == {"joined": "abc", "loud": "ABC"}


def test_reader_behind_a_bounded_log_gets_a_gap(daemon: Any, client: httpx.Client) -> None:
    d = daemon(STREAMING, job_events_max=3, access_log="false")
    job_id = submit(client, d, {})
    assert get_job(client, d, job_id, wait=GUARD)["status"] == "completed"
    events = sse_events(client, d, job_id)
    # 9 events (see above), the last 3 kept: a gap for 1..6, then 7, 8, 9
    assert events[0] == {"type": "gap", "seq": 6, "from_seq": 1, "to_seq": 6}
    assert seqs(events[1:]) == [7, 8, 9]
    assert events[-1]["type"] == "run_completed"


# -- WebSocket ----------------------------------------------------------------------------


class Socket:
    """A JSON view of one WebSocket connection."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    def send(self, message: Any) -> None:
        self.conn.send(message if isinstance(message, str) else json.dumps(message))

    def recv(self) -> dict[str, Any]:
        return json.loads(self.conn.recv(timeout=GUARD))

    def until_end(self, job_id: str, on_event: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """This job's events up to its `end` message; other messages are not expected."""
        events: list[dict[str, Any]] = []
        while True:
            message = self.recv()
            assert message.get("job_id") == job_id, message
            if message["type"] == "end":
                return events, message
            assert message["type"] == "event", message
            events.append(message["event"])
            if on_event is not None:
                on_event(message["event"])


def ws_url(daemon: Any) -> str:
    return daemon.url.replace("http://", "ws://") + "/stream"


@pytest.fixture
def ws(ws_daemon: Any) -> Iterator[Socket]:
    with connect(ws_url(ws_daemon), open_timeout=GUARD, close_timeout=GUARD) as conn:
        yield Socket(conn)


def test_ws_invoke_gets_accepted_events_and_end(ws: Socket, ws_daemon: Any, gates: Any) -> None:
    gate = gates("ws-invoke")
    ws.send({"type": "invoke", "parameters": gate.params(block=False), "run_name": "ws-run"})
    accepted = ws.recv()
    assert accepted["type"] == "accepted"
    job_id = accepted["job_id"]
    assert accepted["location"] == f"/jobs/{job_id}" and accepted["stream_url"] == f"/stream/{job_id}"
    assert accepted["status"] in ("queued", "running") and accepted["created_at"]
    events, end = ws.until_end(job_id)
    assert seqs(events) == list(range(1, len(events) + 1))
    assert types(events) == GATED_EVENTS
    job = end["job"]
    assert job["job_id"] == job_id and job["status"] == "completed" and job["run_name"] == "ws-run"
    assert job["result"]["outputs"] == {"result": "done:ws-invoke"}
    # the same events as an SSE reader gets
    with httpx.Client(timeout=GUARD) as c:
        assert sse_events(c, ws_daemon, job_id) == events


def test_ws_follows_several_jobs_at_once(ws: Socket, gates: Any) -> None:
    slow, fast = gates("ws-slow"), gates("ws-fast")
    ws.send({"type": "invoke", "parameters": slow.params()})
    slow_id = ws.recv()["job_id"]
    by_job: dict[str, list[dict[str, Any]]] = {slow_id: []}
    ends: dict[str, dict[str, Any]] = {}
    fast_id = None
    sent_fast = False
    while len(ends) < 2:
        message = ws.recv()
        if message["type"] == "accepted":
            fast_id = message["job_id"]
            by_job[fast_id] = []
        elif message["type"] == "event":
            by_job[message["job_id"]].append(message["event"])
            event = message["event"]
            if message["job_id"] == slow_id and event["type"] == "progress" and not sent_fast:
                sent_fast = True  # the slow job waits; start a fast one on the same socket
                ws.send({"type": "invoke", "parameters": fast.params(block=False)})
        else:
            assert message["type"] == "end", message
            ends[message["job_id"]] = message["job"]
            if message["job_id"] == fast_id:
                assert slow_id not in ends  # the fast one ended while the slow one waited
                slow.open()
    assert fast_id is not None
    for job_id in (slow_id, fast_id):
        assert types(by_job[job_id]) == GATED_EVENTS
        assert ends[job_id]["status"] == "completed"


def test_ws_subscribe_to_an_existing_job(ws: Socket, ws_daemon: Any, gates: Any) -> None:
    with httpx.Client(timeout=GUARD) as c:
        job_id = submit(c, ws_daemon, gates("ws-sub").params(block=False))
        assert get_job(c, ws_daemon, job_id, wait=GUARD)["status"] == "completed"
    ws.send({"type": "subscribe", "job_id": job_id})
    events, end = ws.until_end(job_id)
    assert types(events) == GATED_EVENTS
    assert end["job"]["status"] == "completed"
    ws.send({"type": "subscribe", "job_id": job_id, "after_seq": 6})
    rest, _ = ws.until_end(job_id)
    assert rest == events[6:]


def test_ws_cancel_a_running_job(ws: Socket, gates: Any) -> None:
    gate = gates("ws-cancel")
    ws.send({"type": "invoke", "parameters": gate.params()})
    job_id = ws.recv()["job_id"]
    events: list[dict[str, Any]] = []
    canceled = end = None
    while canceled is None or end is None:
        message = ws.recv()
        assert message["job_id"] == job_id, message
        if message["type"] == "event":
            events.append(message["event"])
            if message["event"]["seq"] == WAITING:
                ws.send({"type": "cancel", "job_id": job_id})
        elif message["type"] == "canceled":
            canceled = message["job"]
        else:
            assert message["type"] == "end", message
            end = message["job"]
    assert canceled["status"] == "canceled"
    assert canceled["cancel_reason"] == "canceled by request"
    assert end["status"] == "canceled"
    assert events[-1]["type"] == "run_canceled"
    assert seqs(events) == list(range(1, len(events) + 1))
    assert gate.cancelled.exists()
    # cancelling it again is a conflict, and the socket carries on
    ws.send({"type": "cancel", "job_id": job_id})
    error = ws.recv()
    assert (error["type"], error["status"], error["job_id"]) == ("error", 409, job_id)


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ("not json", 400),
        ({"type": "dance"}, 422),
        ({"type": "subscribe"}, 422),
        ({"type": "subscribe", "job_id": "x", "extra": 1}, 422),
        ({"type": "invoke", "parameters": {"bogus": 1}}, 422),
        ({"type": "invoke", "parameters": {"tag": 5}}, 422),
        ([1, 2], 422),
    ],
)
def test_ws_invalid_message_gets_an_error_and_the_socket_stays_usable(
    ws: Socket, gates: Any, message: Any, status: int
) -> None:
    ws.send(message)
    error = ws.recv()
    assert error["type"] == "error" and error["status"] == status and error["error"]
    ws.send({"type": "invoke", "parameters": gates("ws-after-error").params(block=False)})
    accepted = ws.recv()
    assert accepted["type"] == "accepted"
    _, end = ws.until_end(accepted["job_id"])
    assert end["job"]["status"] == "completed"


def test_ws_survives_binary_frames_and_refuses_a_negative_after_seq(ws: Socket) -> None:
    ws.conn.send(b'{"type":"cancel","job_id":"x"}')
    assert ws.recv()["status"] == 404  # answered, socket still open
    ws.conn.send(b"\xff\xfe")
    assert ws.recv()["status"] == 400
    ws.send({"type": "subscribe", "job_id": "x", "after_seq": -5})
    assert ws.recv()["status"] == 422


def test_ws_unknown_job_is_404(ws: Socket) -> None:
    for kind in ("subscribe", "cancel"):
        ws.send({"type": kind, "job_id": "nope"})
        error = ws.recv()
        assert (error["type"], error["status"], error["job_id"]) == ("error", 404, "nope")


def test_ws_queue_full_is_an_error_and_the_socket_stays_usable(daemon: Any, gates: Any) -> None:
    d = daemon(GATED, max_concurrency=1, max_queue=0, access_log="false")
    gate = gates("ws-full")
    with connect(ws_url(d), open_timeout=GUARD, close_timeout=GUARD) as conn:
        ws = Socket(conn)
        ws.send({"type": "invoke", "parameters": gate.params()})
        job_id = ws.recv()["job_id"]
        while ws.recv()["event"]["seq"] != WAITING:
            pass  # the job holds the only slot now
        ws.send({"type": "invoke", "parameters": gates("ws-refused").params(block=False)})
        error = ws.recv()
        assert (error["type"], error["status"]) == ("error", 429)
        assert isinstance(error["retry_after"], int) and error["retry_after"] >= 1
        gate.open()
        events, end = ws.until_end(job_id)
        assert events[-1]["type"] == "run_completed" and end["job"]["status"] == "completed"


@pytest.mark.parametrize("server", ["hypercorn", "uvicorn"])
def test_ws_requires_the_bearer_token(daemon: Any, gates: Any, server: str) -> None:
    d = daemon(GATED, server=server, auth_key=AUTH_KEY)
    url = ws_url(d)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": AUTH_KEY}):
        with pytest.raises(InvalidStatus) as info:
            connect(url, additional_headers=headers, open_timeout=GUARD)
        assert info.value.response.status_code in (401, 403)
    good = {"Authorization": f"Bearer {AUTH_KEY}"}
    with connect(url, additional_headers=good, open_timeout=GUARD, close_timeout=GUARD) as conn:
        ws = Socket(conn)
        ws.send({"type": "invoke", "parameters": gates(f"auth-{server}").params(block=False)})
        accepted = ws.recv()
        assert accepted["type"] == "accepted"
        _, end = ws.until_end(accepted["job_id"])
        assert end["job"]["status"] == "completed"


def test_ws_resubscribing_then_closing_stops_every_forwarder(daemon: Any, gates: Any) -> None:
    """Regression: the forwarder replaced by a re-subscription removed its successor from
    the socket's table on its way out, so closing the socket left the successor running
    until the job ended. The job here stays blocked, so only the close can stop it."""
    d = daemon(GATED, log_level="debug", access_log="false")
    gate = gates("ws-resub")
    with connect(ws_url(d), open_timeout=GUARD, close_timeout=GUARD) as conn:
        ws = Socket(conn)
        ws.send({"type": "invoke", "parameters": gate.params()})
        job_id = ws.recv()["job_id"]
        while ws.recv()["event"]["seq"] != WAITING:
            pass  # the job now waits for its gate
        ws.send({"type": "subscribe", "job_id": job_id})
        while ws.recv()["event"]["seq"] != WAITING:
            pass  # the replay proves the second forwarder runs

    def stopped(reason: str) -> Any:
        def match(event: dict[str, Any]) -> bool:
            return (
                event.get("event") == "websocket_forward_stopped"
                and event.get("job_id") == job_id
                and event.get("reason") == reason
            )

        return match

    d.wait_for_log(stopped("re-subscribed"), timeout=GUARD)
    d.wait_for_log(stopped("socket closed"), timeout=GUARD)
    with httpx.Client(timeout=GUARD) as c:  # the run itself is untouched by the socket's close
        assert get_job(c, d, job_id)["status"] == "running"
