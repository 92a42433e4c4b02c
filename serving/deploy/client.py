"""HTTP clients for a running daemon: `ServingClient` (sync) and `AsyncServingClient`.

Both speak the daemon's API: invoke, submit (async jobs), get_job, wait, cancel and
stream (Server-Sent Events, resumable). A non-2xx reply raises `ServingError` carrying
the problem+json body, so callers see the server's message, not an HTTP dump.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
from httpx_sse import aconnect_sse, connect_sse

TERMINAL = frozenset({"run_completed", "run_failed", "run_canceled"})
LONG_POLL = 30.0  # seconds per /jobs/{id}?wait= request; the daemon caps it too


FINISHED = frozenset({"completed", "failed", "canceled"})


class _Deadline:
    """Long-poll bookkeeping shared by both clients: how long the next poll may wait."""

    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    def next_poll(self) -> float:
        if self.at is None:
            return LONG_POLL
        return max(0.0, min(LONG_POLL, self.at - time.monotonic()))

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


class ServingError(Exception):
    """The daemon answered with an error; `status` and `problem` (the parsed body) tell why."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("error") or "request failed"
        errors = problem.get("errors") or []
        if errors:
            detail += ": " + "; ".join(f"{e.get('loc')}: {e.get('msg')}" for e in errors)
        super().__init__(f"HTTP {status}: {detail}")


def _check(response: httpx.Response) -> dict[str, Any]:
    """The reply's JSON object; raises ServingError for a non-2xx reply.

    Every endpoint the clients call answers with an object, so decoding to a dict
    types the callers' results honestly instead of passing `Any` along.
    """
    if response.status_code >= 400:
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text[:500] or response.reason_phrase}
        raise ServingError(response.status_code, problem if isinstance(problem, dict) else {})
    if response.status_code == 204 or not response.content:
        return {}
    return msgspec.json.decode(response.content, type=dict[str, Any])


def _body(parameters: dict[str, Any] | None, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"parameters": {**(parameters or {}), **params}}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


class ServingClient:
    """Talks to one daemon at `url`; `auth_key` is sent as a bearer token."""

    def __init__(self, url: str, auth_key: str | None = None, timeout: float = 330.0) -> None:
        headers = {"Authorization": f"Bearer {auth_key}"} if auth_key else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def invoke(
        self,
        parameters: dict[str, Any] | None = None,
        /,
        *,
        run_name: str | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Run the pipeline and wait for its reply (`success`, `outputs`, `metadata`, ...).

        Raises ServingError for a refused request or a failed run.
        """
        body = _body(parameters, params, run_name=run_name, timeout=timeout)
        return _check(self.http.post("/invoke", json=body))

    def submit(
        self, parameters: dict[str, Any] | None = None, /, *, run_name: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """Start an async job; returns `{job_id, status, location, stream_url, ...}`."""
        body = _body(parameters, params, run_name=run_name)
        return _check(self.http.post("/invoke", params={"mode": "async"}, json=body))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return _check(self.http.get(f"/jobs/{job_id}"))

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Long-poll until the job finishes or `timeout` seconds pass; returns the job."""
        deadline = _Deadline(timeout)
        while True:
            step = deadline.next_poll()
            job = _check(self.http.get(f"/jobs/{job_id}", params={"wait": step}, timeout=step + 10))
            if job["status"] in FINISHED or deadline.passed():
                return job

    def cancel(self, job_id: str) -> dict[str, Any]:
        return _check(self.http.post(f"/jobs/{job_id}/cancel"))

    def stream(self, job_id: str, after_seq: int = 0) -> Iterator[dict[str, Any]]:
        """Yield the job's events (dicts with `type` and `seq`) until the terminal one."""
        headers = {"Last-Event-ID": str(after_seq)} if after_seq else {}
        with connect_sse(self.http, "GET", f"/stream/{job_id}", headers=headers, timeout=None) as source:
            if source.response.status_code >= 400:
                source.response.read()
                _check(source.response)
            for sse in source.iter_sse():
                if not sse.data:  # keep-alive comments (httpx-sse may surface them as empty events)
                    continue
                event = msgspec.json.decode(sse.data)
                yield event
                if sse.event in TERMINAL:
                    return

    def info(self) -> dict[str, Any]:
        return _check(self.http.get("/info"))

    def health(self) -> dict[str, Any]:
        return _check(self.http.get("/health"))


class AsyncServingClient:
    """The same API for asyncio code."""

    def __init__(self, url: str, auth_key: str | None = None, timeout: float = 330.0) -> None:
        headers = {"Authorization": f"Bearer {auth_key}"} if auth_key else {}
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> AsyncServingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def invoke(
        self,
        parameters: dict[str, Any] | None = None,
        /,
        *,
        run_name: str | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        body = _body(parameters, params, run_name=run_name, timeout=timeout)
        return _check(await self.http.post("/invoke", json=body))

    async def submit(
        self, parameters: dict[str, Any] | None = None, /, *, run_name: str | None = None, **params: Any
    ) -> dict[str, Any]:
        body = _body(parameters, params, run_name=run_name)
        return _check(await self.http.post("/invoke", params={"mode": "async"}, json=body))

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return _check(await self.http.get(f"/jobs/{job_id}"))

    async def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        deadline = _Deadline(timeout)
        while True:
            step = deadline.next_poll()
            job = _check(await self.http.get(f"/jobs/{job_id}", params={"wait": step}, timeout=step + 10))
            if job["status"] in FINISHED or deadline.passed():
                return job

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return _check(await self.http.post(f"/jobs/{job_id}/cancel"))

    async def stream(self, job_id: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        headers = {"Last-Event-ID": str(after_seq)} if after_seq else {}
        async with aconnect_sse(
            self.http, "GET", f"/stream/{job_id}", headers=headers, timeout=None
        ) as source:
            if source.response.status_code >= 400:
                await source.response.aread()
                _check(source.response)
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                yield msgspec.json.decode(sse.data)
                if sse.event in TERMINAL:
                    return
