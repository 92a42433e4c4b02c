"""The one way a test waits for something another process, thread or task will do.

A test that must see a daemon write a file, a job finish or a record land polls for
that positive signal. The timeout is a hang guard only: a passing test never gets near
it, and it is long enough that a loaded machine does not fail a correct build. When it
does run out, the error names what was awaited (and, through `detail`, shows e.g. a
daemon's stderr), so a hang reads as a clear failure rather than a bare `assert False`.

Never use these to wait for something *not* to happen: wait for a later event that
proves the thing had its chance instead.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

GUARD = 15.0  # seconds; a hang guard, never a timing assertion
INTERVAL = 0.01  # seconds between polls


class WaitTimeout(AssertionError):
    """What a test waited for did not happen within the hang guard."""


def _timed_out(what: str, timeout: float, detail: Callable[[], str] | None) -> WaitTimeout:
    message = f"timed out after {timeout}s waiting for {what}"
    if detail is not None:
        message += f"\n{detail()}"
    return WaitTimeout(message)


def wait_until(
    check: Callable[[], T],
    what: str,
    *,
    timeout: float = GUARD,
    interval: float = INTERVAL,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call `check()` until it returns something truthy, and return that value.

    Waits up to `timeout` seconds (a hang guard); raises `WaitTimeout` naming `what`,
    followed by `detail()` when given. `check` runs at least once, so a condition that
    already holds costs no sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, detail)
        time.sleep(interval)


async def wait_until_async(
    check: Callable[[], T | Awaitable[T]],
    what: str,
    *,
    timeout: float = GUARD,
    interval: float = INTERVAL,
    detail: Callable[[], str] | None = None,
) -> T:
    """`wait_until` for code on an event loop: polls without blocking the loop, and
    awaits `check()` when it returns an awaitable.

    Use it only for a state that no awaitable reports (an asyncio.Event or a future is
    better awaited directly); raises `WaitTimeout` like `wait_until`.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, detail)
        await asyncio.sleep(interval)


def wait_for_file(path: Path, *, timeout: float = GUARD, detail: Callable[[], str] | None = None) -> None:
    """Wait until `path` exists (the marker files steps in tests/pipelines/ write)."""
    wait_until(path.exists, f"{path.name} to appear", timeout=timeout, detail=detail)
