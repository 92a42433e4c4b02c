"""A request in a thread, for tests that signal the daemon while it is answering."""

from __future__ import annotations

import threading
from typing import Any

import httpx

HANG_GUARD = 15.0  # seconds: only a failure guard, never a timing assertion


class Call(threading.Thread):
    """POST /invoke in a thread; keeps the response or the exception."""

    def __init__(self, url: str, body: Any) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=HANG_GUARD) as client:
                self.response = client.post(f"{self.url}/invoke", json=self.body)
        except BaseException as exc:
            self.error = exc

    def result(self) -> httpx.Response:
        self.join(HANG_GUARD)
        assert not self.is_alive(), "request still running"
        assert self.error is None, repr(self.error)
        assert self.response is not None
        return self.response
