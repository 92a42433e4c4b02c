"""One limiter for all load: sync invocations and async jobs share slots and a queue.

`reserve()` decides admission synchronously, at the moment a request arrives: either
a running slot, or a place in the FIFO queue, or `QueueFull` with a Retry-After
estimate. A job that was accepted is never failed later for lack of room.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math


class QueueFull(Exception):
    """Every slot is busy and the queue is full; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int, queued: int, running: int) -> None:
        self.retry_after = retry_after
        self.queued = queued
        self.running = running
        super().__init__(
            f"server is at capacity ({running} running, {queued} queued); retry in {retry_after}s"
        )


class Ticket:
    """A reservation: granted at once, or waiting in the queue for a slot."""

    __slots__ = ("_limiter", "granted", "released", "waiter")

    def __init__(self, limiter: Limiter, waiter: asyncio.Future[None] | None) -> None:
        self._limiter = limiter
        self.waiter = waiter
        self.granted = waiter is None
        self.released = False

    async def wait(self) -> None:
        """Wait for the slot; cancelling the waiting task gives the place up."""
        if self.granted:
            return
        assert self.waiter is not None
        try:
            await self.waiter
        except asyncio.CancelledError:
            self.cancel()
            raise
        self.granted = True

    def cancel(self) -> None:
        """Give up the place in the queue, or release the slot if it was already granted."""
        # A waiter cancelled with its task never held a slot: give up the place only.
        if self.waiter is not None and (not self.waiter.done() or self.waiter.cancelled()):
            self.waiter.cancel()
            self._limiter._drop(self.waiter)
            self.released = True
            return
        self.release()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._limiter._release()


class Limiter:
    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._durations: collections.deque[float] = collections.deque(maxlen=64)
        self._room: list[asyncio.Future[None]] = []

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def reserve(self) -> Ticket:
        """Admit now or queue; raises QueueFull. Never awaits, so admission is atomic."""
        if self.running < self.max_concurrency and not self._waiters:
            self.running += 1
            return Ticket(self, None)
        if len(self._waiters) >= self.max_queue:
            raise QueueFull(self.retry_after(), len(self._waiters), self.running)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return Ticket(self, waiter)

    def try_reserve(self) -> Ticket | None:
        """A granted Ticket if a slot is free and nobody is queued, else None (never queues)."""
        if self.running < self.max_concurrency and not self._waiters:
            self.running += 1
            return Ticket(self, None)
        return None

    async def room(self) -> None:
        """Wait until a slot is free and nobody is queued for one, without taking it.

        What a replica waits for before it takes a job from a shared queue; the slot may
        still go to someone else before the caller reserves it.
        """
        while not (self.running < self.max_concurrency and not self._waiters):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._room.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._room:
                    self._room.remove(waiter)

    def try_acquire(self) -> bool:
        """Take a slot directly if one is free and nobody is queued; give it back with
        `release_slot()`. The fast path of sync runs: no Ticket, no future."""
        if self.running < self.max_concurrency and not self._waiters:
            self.running += 1
            return True
        return False

    def release_slot(self) -> None:
        """Give back a slot taken by `try_acquire()`; the next in line gets it."""
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self.running -= 1
        if self._room:
            for waiter in self._room:
                if not waiter.done():
                    waiter.set_result(None)
            self._room.clear()

    def _drop(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):  # already handed a slot and popped
            self._waiters.remove(waiter)

    def record(self, seconds: float) -> None:
        """Feed a finished run's duration into the Retry-After estimate."""
        self._durations.append(seconds)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead, drained at the recent pace."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        ahead = len(self._waiters) + 1
        return max(1, math.ceil(mean * ahead / max(1, self.max_concurrency)))
