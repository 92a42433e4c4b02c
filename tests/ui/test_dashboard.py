"""The dashboard in a real browser (headless chromium) against real daemon processes.

Runs are steered by a release file (tests/pipelines/dashboard.py): the test sees
progress and chunks arrive while the step still waits, and only then lets it finish.
Every wait is on a condition in the page; timeouts are hang guards.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from polling import wait_until
from ui_browser import Watched

TESTS = Path(__file__).resolve().parent.parent
DASH = f"{TESTS / 'pipelines' / 'dashboard.py'}:dashboard"
KEY = "ui-s3cr3t-key"
# The README's screenshot: rewritten only when asked (UPDATE_DOCS_SCREENSHOT=1), so a
# test run does not leave the committed file modified.
DOCS_SHOT = TESTS.parent / "docs" / "dashboard.png"


def open_ui(watched: Watched, url: str) -> Any:
    page = watched.page
    page.goto(f"{url}/ui")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page


def wait_status(page: Any, status: str) -> None:
    expect(page.locator("#status")).to_have_attribute("data-status", status)


def test_form_run_live_stream_outputs_and_history(
    daemon: Any, page_factory: Any, tmp_path: Path, artifacts: Path
) -> None:
    d = daemon(DASH)
    watched = page_factory()
    page = open_ui(watched, d.url)
    expect(page.locator("#pipeline-name")).to_have_text("dashboard")
    expect(page.locator("#dag svg")).to_have_attribute("data-layout", "horizontal")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280

    # The DAG: one node per step, the edges /info gives.
    nodes = page.locator("#dag g.node")
    expect(nodes).to_have_count(3)
    edges = {
        (e.get_attribute("data-from"), e.get_attribute("data-to"))
        for e in page.locator("#dag path.edge").all()
    }
    assert edges == {("prepare", "words"), ("words", "finish")}

    # The form: one typed input per parameter, named after it, defaults filled in.
    expect(page.locator("input[name=topic]")).to_have_value("hello")
    expect(page.locator("input[name=times]")).to_have_attribute("type", "number")
    expect(page.locator("input[name=times]")).to_have_value("2")
    expect(page.locator("select[name=mode] option")).to_have_text(["fast", "slow"])
    expect(page.locator("input[name=loud]")).to_have_attribute("type", "checkbox")
    expect(page.locator("input[name=loud]")).not_to_be_checked()
    assert '"a": 1' in page.locator("textarea[name=extra]").input_value()
    run_button = page.get_by_role("button", name="Run", exact=True)
    expect(run_button).to_be_visible()

    release = tmp_path / "release"
    page.fill("input[name=topic]", "dash")
    page.fill("input[name=times]", "3")
    page.select_option("select[name=mode]", label="slow")
    page.check("input[name=loud]")
    page.fill("textarea[name=extra]", '{"b": 2}')
    page.fill("input[name=release]", str(release))
    run_button.click()

    # Live, before the run ends (it cannot: the release file does not exist yet).
    wait_status(page, "running")
    expect(page.locator('#dag g.node[data-step="prepare"]')).to_have_class(re.compile(r"\bcompleted\b"))
    expect(page.locator('#dag g.node[data-step="words"]')).to_have_class(re.compile(r"\brunning\b"))
    expect(page.locator("#chunks")).to_have_text("DASH-0 DASH-1 DASH-2 ")
    expect(page.locator("#progress-message")).to_have_text("words: waiting for release")
    assert page.locator("#progress").evaluate("p => p.value") == 0.5
    expect(page.locator("#jobs tbody tr td:nth-child(2)").first).to_have_text("running")
    assert not release.exists()
    page.screenshot(path=artifacts / "dashboard-running.png", full_page=True)

    release.touch()
    wait_status(page, "completed")
    for step in ("prepare", "words", "finish"):
        node = page.locator(f'#dag g.node[data-step="{step}"]')
        expect(node).to_have_class(re.compile(r"\bcompleted\b"))
        expect(node.locator(".dur")).to_have_text(re.compile(r"\d+(\.\d+)? (ms|s)"))
    expect(page.locator("#chunks")).to_have_text("DASH-0 DASH-1 DASH-2 end")
    outputs = page.locator("#outputs")
    expect(outputs).to_contain_text('"text": "DASH-0 DASH-1 DASH-2 end"')
    expect(outputs).to_contain_text('"b": 2')
    expect(page.locator("#cancel")).to_be_disabled()
    expect(page.locator("#h-requests")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#h-breaker")).to_have_text("closed")
    page.screenshot(path=artifacts / "dashboard-completed.png", full_page=True)
    # The history catches up without a reload once the capture store has the run.
    page.locator("#runs tbody tr").first.get_by_role("button").click()
    expect(page.locator("#run-detail .run-steps tbody tr")).to_have_count(3)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=artifacts / "dashboard.png", full_page=True)
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        page.screenshot(path=DOCS_SHOT, full_page=True)

    # After a reload: the run is in the history; its detail shows steps, timings, logs.
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    row = page.locator("#runs tbody tr").first
    expect(row).to_be_visible()
    expect(row.locator("td").nth(1)).to_have_text("completed")
    expect(row.locator("td.params")).to_contain_text('"topic":"dash"')
    row.get_by_role("button").click()
    detail = page.locator("#run-detail")
    expect(detail.locator(".run-steps tbody tr")).to_have_count(3)
    expect(detail.locator('.run-steps tr[data-step="words"] td').nth(1)).to_have_text("completed")
    expect(detail.locator(".run-logs")).to_contain_text("preparing dash (slow)")
    expect(detail).to_contain_text("DASH-0 DASH-1 DASH-2 end")
    expect(page.locator("#jobs tbody tr").first.locator("td").nth(1)).to_have_text("completed")
    page.screenshot(path=artifacts / "dashboard-history.png", full_page=True)
    assert watched.errors == []


def test_cancel_a_slow_run(daemon: Any, page_factory: Any, tmp_path: Path, artifacts: Path) -> None:
    d = daemon(DASH, access_log="false")
    watched = page_factory()
    page = open_ui(watched, d.url)
    page.fill("input[name=release]", str(tmp_path / "never"))
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator('#dag g.node[data-step="words"]')).to_have_class(re.compile(r"\brunning\b"))
    expect(page.locator("#cancel")).to_be_enabled()
    page.get_by_role("button", name="Cancel").click()
    wait_status(page, "canceled")
    expect(page.locator("#run-error")).to_contain_text("canceled")
    expect(page.locator("#cancel")).to_be_disabled()
    page.screenshot(path=artifacts / "dashboard-canceled.png", full_page=True)
    with d.client() as client:
        jobs = client.get("/jobs").json()["jobs"]
    assert [j["status"] for j in jobs] == ["canceled"]
    assert watched.errors == []


def test_a_failed_run_shows_its_error_and_a_listed_job_can_be_followed(
    daemon: Any, page_factory: Any, tmp_path: Path, artifacts: Path
) -> None:
    d = daemon(DASH, access_log="false")
    watched = page_factory()
    page = open_ui(watched, d.url)
    page.check("input[name=fail]")
    page.get_by_role("button", name="Run", exact=True).click()
    wait_status(page, "failed")
    expect(page.locator("#run-error")).to_contain_text("finish refused 'hello-0 hello-1 end'")
    expect(page.locator('#dag g.node[data-step="finish"]')).to_have_class(re.compile(r"\bfailed\b"))
    expect(page.locator("#outputs")).to_have_text("")
    page.screenshot(path=artifacts / "dashboard-failed.png", full_page=True)

    # A job started elsewhere shows in the list; following it replays its events live.
    release = tmp_path / "release"
    with d.client() as client:
        r = client.post("/invoke", params={"mode": "async"}, json={"parameters": {"release": str(release)}})
        job = r.json()["job_id"]
    page.locator(f'#jobs tr[data-job="{job}"] button').click()
    expect(page.locator("#job-id")).to_have_text(job)
    expect(page.locator("#chunks")).to_have_text("hello-0 hello-1 ")
    wait_status(page, "running")
    release.touch()
    wait_status(page, "completed")
    expect(page.locator("#outputs")).to_contain_text("hello-0 hello-1 end")
    # Health figures move without a reload (the page's own polling counts as requests).
    first = int(page.locator("#h-requests").inner_text())
    expect(page.locator("#h-requests")).not_to_have_text(str(first))  # the count only grows
    # The one failed response: none; a failed run is a 200 on the stream, not an HTTP error.
    assert watched.errors == []


def test_a_run_waiting_for_a_slot_shows_queued(daemon: Any, page_factory: Any, tmp_path: Path) -> None:
    d = daemon(DASH, max_concurrency=1, access_log="false")
    busy = tmp_path / "busy"
    with d.client() as client:
        r = client.post("/invoke", params={"mode": "async"}, json={"parameters": {"release": str(busy)}})
        assert r.status_code == 202
        busy_job = r.json()["job_id"]
        wait_until(
            lambda: client.get(f"/jobs/{busy_job}").json()["status"] == "running",
            "the first job to hold the slot",
        )
    watched = page_factory()
    page = open_ui(watched, d.url)
    page.get_by_role("button", name="Run", exact=True).click()
    wait_status(page, "queued")
    expect(page.locator('#dag g.node[data-step="prepare"]')).to_have_class(re.compile(r"\bpending\b"))
    busy.touch()
    wait_status(page, "completed")
    assert watched.errors == []


def test_a_store_that_cannot_be_read_back_is_explained(
    daemon: Any, page_factory: Any, tmp_path: Path
) -> None:
    d = daemon(DASH, capture_url=f"jsonl://{tmp_path / 'runs.jsonl'}", access_log="false")
    watched = page_factory()
    page = open_ui(watched, d.url)
    expect(page.locator("#runs-note")).to_contain_text("not SQLite or PostgreSQL")
    assert all("404" in e for e in watched.errors), watched.errors


def test_auth_key_prompt_and_stream_tokens(daemon: Any, page_factory: Any, artifacts: Path) -> None:
    d = daemon(DASH, auth_key=KEY)
    watched = page_factory()
    urls: list[str] = []
    watched.page.on("request", lambda r: urls.append(r.url))
    page = watched.page
    page.goto(f"{d.url}/ui")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_have_attribute("open", "")
    page.screenshot(path=artifacts / "dashboard-key.png")
    page.fill("#key-input", "wrong-key")
    page.keyboard.press("Enter")
    expect(page.locator("#key-error")).to_contain_text("refused")
    expect(dialog).to_have_attribute("open", "")
    page.fill("#key-input", KEY)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.get_by_role("button", name="Run", exact=True).click()
    wait_status(page, "completed")
    expect(page.locator("#outputs")).to_contain_text("hello-0 hello-1 end")
    expect(page.locator("#runs tbody tr")).not_to_have_count(0)

    streams = [u for u in urls if "/stream/" in u]
    assert streams and all("token=" in u for u in streams), streams
    assert not any(KEY in u for u in urls)
    token = streams[0].split("token=", 1)[1]
    d.wait_for_log(lambda e: str(e.get("path", "")).startswith("/stream/"), "the stream's access line")
    assert token not in d.logs() and KEY not in d.logs()
    # The one refused call (the wrong key) is the only thing the console reported.
    assert all("401" in e for e in watched.errors), watched.errors
    assert len(watched.errors) == 1, watched.errors


def test_a_refused_stream_token_is_replaced_and_the_stream_resumes(
    daemon: Any, page_factory: Any, tmp_path: Path
) -> None:
    """An expired token (here: a forged one the page is handed first) makes the server
    refuse the stream; the page mints a new token and resumes after the last event."""
    d = daemon(DASH, auth_key=KEY, access_log="false")
    watched = page_factory()
    page = watched.page
    minted: list[str] = []

    def first_one_bad(route: Any) -> None:
        minted.append(route.request.url)
        if len(minted) == 1:
            job = route.request.url.split("/jobs/", 1)[1].split("/", 1)[0]
            body = {"token": "1.expired", "expires_in": 0, "stream_url": f"/stream/{job}?token=1.expired"}
            route.fulfill(status=200, json=body)
        else:
            route.continue_()

    page.route("**/jobs/*/stream-token", first_one_bad)
    page.goto(f"{d.url}/ui")
    page.fill("#key-input", KEY)
    page.keyboard.press("Enter")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.get_by_role("button", name="Run", exact=True).click()
    wait_status(page, "completed")
    expect(page.locator("#chunks")).to_have_text("hello-0 hello-1 end")
    assert len(minted) == 2
    assert len(watched.errors) == 1 and "401" in watched.errors[0], watched.errors


def test_narrow_viewport_dark_scheme_and_keyboard(daemon: Any, page_factory: Any, artifacts: Path) -> None:
    d = daemon(DASH, access_log="false")
    watched = page_factory(viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True)
    page = open_ui(watched, d.url)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    expect(page.locator("#dag svg")).to_have_attribute("data-layout", "vertical")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert _luminance(background) < 0.2, background

    # Keyboard only: focus the first field, type, submit with Enter.
    page.locator("input[name=topic]").focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("keys")
    page.keyboard.press("Enter")
    wait_status(page, "completed")
    expect(page.locator("#outputs")).to_contain_text("keys-0 keys-1 end")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    button = page.locator("#runs tbody tr button").first
    button.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#run-detail .run-steps tbody tr")).to_have_count(3)
    assert page.evaluate("document.activeElement.id") == "run-detail"
    page.screenshot(path=artifacts / "dashboard-390-dark.png", full_page=True)

    light = page_factory(viewport={"width": 1280, "height": 900}, color_scheme="light")
    open_ui(light, d.url)
    assert _luminance(light.page.evaluate("getComputedStyle(document.body).backgroundColor")) > 0.8
    assert watched.errors == [] and light.errors == []


def _luminance(css: str) -> float:
    r, g, b = (int(v) for v in re.findall(r"\d+", css)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


# -- a dropped stream resumes ------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy in front of the daemon that can cut every open connection, as a
    network failure would, and keeps what clients sent so the test can see the resume."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.sent: list[bytes] = []
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.sent.append(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def requests_with(self, text: bytes) -> int:
        with self._lock:
            return sum(text in chunk.lower() for chunk in self.sent)

    def close(self) -> None:
        self.server.close()
        self.cut()


@pytest.fixture
def proxy_factory() -> Iterator[Any]:
    made: list[CuttingProxy] = []

    def make(url: str) -> CuttingProxy:
        host, port = httpx.URL(url).host, httpx.URL(url).port
        assert port is not None
        made.append(CuttingProxy((host, port)))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def test_a_dropped_stream_resumes_from_the_last_event(
    daemon: Any, page_factory: Any, proxy_factory: Any, tmp_path: Path
) -> None:
    d = daemon(DASH, access_log="false")
    proxy = proxy_factory(d.url)
    watched = page_factory()
    page = open_ui(watched, proxy.url)
    release = tmp_path / "release"
    page.fill("input[name=times]", "3")
    page.fill("input[name=release]", str(release))
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#chunks")).to_have_text("hello-0 hello-1 hello-2 ")
    expect(page.locator("#progress-message")).to_have_text("words: waiting for release")
    assert proxy.requests_with(b"last-event-id:") == 0

    proxy.cut()
    wait_until(
        lambda: proxy.requests_with(b"last-event-id:") > 0, "the browser to reconnect with Last-Event-ID"
    )
    release.touch()
    wait_status(page, "completed")
    # Every event once: nothing lost in the drop, nothing shown twice after it.
    expect(page.locator("#chunks")).to_have_text("hello-0 hello-1 hello-2 end")
    expect(page.locator("#outputs")).to_contain_text("hello-0 hello-1 hello-2 end")


# -- a dashboard on another origin --------------------------------------------------------

OTHER_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head>
<body><script>
const q = new URLSearchParams(location.search);
const daemon = q.get("daemon");
window.events = []; window.failed = null; window.done = false;
async function go() {
  let id = q.get("job");
  if (!id) {
    const r = await fetch(daemon + "/invoke?mode=async", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({parameters: {times: 3}})});
    id = (await r.json()).job_id;
  }
  const es = new EventSource(daemon + "/stream/" + id);
  for (const t of ["run_started", "chunk", "run_completed"]) {
    es.addEventListener(t, () => {
      window.events.push(t);
      if (t === "run_completed") { window.done = true; es.close(); }
    });
  }
  es.onerror = () => { if (!window.done) { window.failed = "stream refused"; es.close(); } };
}
go().catch((e) => { window.failed = String(e); });
</script></body></html>"""


@pytest.fixture
def other_origin() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(OTHER_PAGE)))
            self.end_headers()
            self.wfile.write(OTHER_PAGE)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_page_on_a_listed_origin_streams_through_cors(
    daemon: Any, page_factory: Any, other_origin: str
) -> None:
    d = daemon(DASH, cors_origins=other_origin, access_log="false")
    watched = page_factory()
    page = watched.page
    page.goto(f"{other_origin}/?daemon={d.url}")
    page.wait_for_function("window.done || window.failed")
    assert page.evaluate("window.failed") is None
    events = page.evaluate("window.events")
    assert events[0] == "run_started" and events.count("chunk") == 4 and events[-1] == "run_completed"
    assert watched.errors == []


def test_a_page_on_an_unlisted_origin_is_refused(daemon: Any, page_factory: Any, other_origin: str) -> None:
    d = daemon(DASH, cors_origins="http://127.0.0.1:1", access_log="false")
    with d.client() as client:
        r = client.post("/invoke", params={"mode": "async"}, json={"parameters": {}})
        job = r.json()["job_id"]
    watched = page_factory()
    page = watched.page
    page.goto(f"{other_origin}/?daemon={d.url}&job={job}")
    page.wait_for_function("window.done || window.failed")
    assert page.evaluate("window.failed") == "stream refused"
    assert page.evaluate("window.events") == []
    assert any("CORS" in e for e in watched.errors), watched.errors
