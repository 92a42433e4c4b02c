"""The console log (SERVING_LOG_FORMAT=console) is read by a person at a terminal: an
access line leads with what they scan for, status, method, path and duration, so it
shows within 80 columns (issue 16, item 6)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from polling import wait_until

from serving.deploy.deployers.local import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = f"{EXAMPLES / 'hello.py'}:hello"


def test_console_access_line_leads_with_status_method_path_duration(daemon: Any) -> None:
    port = free_port()
    # The console format has no JSON `listening` line to wait on: probe the port instead.
    d = daemon(HELLO, wait=False, log_format="console", port=port)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, "/readyz to answer 200", timeout=30, detail=d.stderr_detail)
    httpx.get(f"{url}/health", headers={"x-request-id": "console-probe"}, timeout=10)
    line = wait_until(
        lambda: next((ln for ln in d.logs().splitlines() if "console-probe" in ln), None),
        "the access line of GET /health",
        detail=d.stderr_detail,
    )
    match = re.search(r"200 GET /health \d+\.\dms", line)
    assert match, line
    assert match.end() <= 80, f"status, method, path and duration end at column {match.end()}: {line}"
    assert "client=" in line and "request_id=console-probe" in line
