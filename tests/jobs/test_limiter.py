"""The shared limiter: admission is decided at once, the queue is FIFO, slots are handed on.

No sleeps: a waiter's turn is observed through its future, and `asyncio.sleep(0)` only
lets already-woken tasks run.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from jobs import Limiter, QueueFull

pytestmark = pytest.mark.anyio

GUARD = 5.0  # seconds; a hang guard only


async def settle() -> None:
    """Let every task that is ready run (a few loop turns, never a wait on time)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_grants_slots_then_queues_then_refuses() -> None:
    limiter = Limiter(max_concurrency=2, max_queue=1)
    first, second = limiter.reserve(), limiter.reserve()
    assert first.granted and second.granted
    assert limiter.running == 2
    third = limiter.reserve()
    assert not third.granted
    assert limiter.queued == 1
    with pytest.raises(QueueFull) as info:
        limiter.reserve()
    assert info.value.retry_after >= 1
    assert isinstance(info.value.retry_after, int)
    assert (info.value.running, info.value.queued) == (2, 1)
    assert "2 running, 1 queued" in str(info.value)
    # the refused request changed nothing
    assert (limiter.running, limiter.queued) == (2, 1)
    for ticket in (first, second, third):
        ticket.cancel()


async def test_zero_queue_refuses_as_soon_as_slots_are_busy() -> None:
    limiter = Limiter(max_concurrency=1, max_queue=0)
    ticket = limiter.reserve()
    with pytest.raises(QueueFull):
        limiter.reserve()
    ticket.release()
    limiter.reserve().release()
    assert limiter.running == 0


async def test_release_hands_the_slot_to_the_next_in_line_in_fifo_order() -> None:
    limiter = Limiter(max_concurrency=1, max_queue=10)
    holder = limiter.reserve()
    waiting = [limiter.reserve() for _ in range(5)]
    order: list[int] = []

    async def take(i: int) -> None:
        await waiting[i].wait()
        order.append(i)
        await settle()
        waiting[i].release()

    async with asyncio.timeout(GUARD):
        tasks = [asyncio.create_task(take(i)) for i in reversed(range(5))]
        await settle()
        assert order == []  # nobody runs while the slot is held
        holder.release()
        await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert (limiter.running, limiter.queued) == (0, 0)


async def test_handoff_keeps_the_slot_busy_and_newcomers_do_not_jump_the_queue() -> None:
    limiter = Limiter(max_concurrency=1, max_queue=5)
    holder = limiter.reserve()
    queued = limiter.reserve()
    holder.release()
    # the slot went straight to the queued ticket: still one running, none queued
    assert (limiter.running, limiter.queued) == (1, 0)
    assert queued.waiter is not None and queued.waiter.done()
    newcomer = limiter.reserve()
    assert not newcomer.granted  # queued behind, although nobody "runs" yet
    async with asyncio.timeout(GUARD):
        await queued.wait()
    assert queued.granted
    queued.release()
    async with asyncio.timeout(GUARD):
        await newcomer.wait()
    newcomer.release()
    assert (limiter.running, limiter.queued) == (0, 0)


async def test_cancelling_a_queued_ticket_gives_up_its_place() -> None:
    limiter = Limiter(max_concurrency=1, max_queue=2)
    holder = limiter.reserve()
    leaving, staying = limiter.reserve(), limiter.reserve()
    leaving.cancel()
    assert limiter.queued == 1
    leaving.cancel()  # idempotent
    leaving.release()
    assert (limiter.running, limiter.queued) == (1, 1)
    holder.release()
    async with asyncio.timeout(GUARD):
        await staying.wait()
    staying.release()
    assert (limiter.running, limiter.queued) == (0, 0)


async def test_slot_handed_to_a_task_cancelled_before_it_resumed_is_passed_on() -> None:
    limiter = Limiter(max_concurrency=1, max_queue=2)
    holder = limiter.reserve()
    doomed, next_in_line = limiter.reserve(), limiter.reserve()
    task = asyncio.create_task(doomed.wait())
    await settle()
    holder.release()  # the slot is handed to `doomed`...
    task.cancel()  # ...whose task is cancelled before it ever ran again
    with pytest.raises(asyncio.CancelledError):
        await task
    # the slot was not lost: it went on to the next ticket
    async with asyncio.timeout(GUARD):
        await next_in_line.wait()
    assert limiter.running == 1
    next_in_line.release()
    assert (limiter.running, limiter.queued) == (0, 0)


async def test_release_is_idempotent() -> None:
    limiter = Limiter(max_concurrency=2, max_queue=0)
    ticket = limiter.reserve()
    other = limiter.reserve()
    ticket.release()
    ticket.release()
    ticket.cancel()
    assert limiter.running == 1
    other.release()
    assert limiter.running == 0


async def test_retry_after_follows_recent_durations_and_the_queue_ahead() -> None:
    limiter = Limiter(max_concurrency=2, max_queue=3)
    assert limiter.retry_after() == 1  # nothing measured yet: one second
    limiter.record(0.001)
    assert limiter.retry_after() == 1  # never below one second
    for _ in range(10):
        limiter.record(10.0)
    mean = (0.001 + 100.0) / 11
    tickets = [limiter.reserve() for _ in range(5)]  # two running, three queued
    with pytest.raises(QueueFull) as info:
        limiter.reserve()
    # three ahead plus this one, drained two at a time
    assert info.value.retry_after == math.ceil(mean * 4 / 2)
    for ticket in tickets:
        ticket.cancel()
    assert (limiter.running, limiter.queued) == (0, 0)


# Regression: a queued waiter cancelled with its task freed a slot it never held.
async def test_cancelled_waiting_task_frees_its_place() -> None:
    limiter = Limiter(max_concurrency=1, max_queue=1)
    holder = limiter.reserve()
    ticket = limiter.reserve()
    task = asyncio.create_task(ticket.wait())
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.queued == 0
    holder.release()
    assert (limiter.running, limiter.queued) == (0, 0)


async def test_try_acquire_takes_a_free_slot_and_release_slot_hands_it_on() -> None:
    limiter = Limiter(max_concurrency=1, max_queue=1)
    assert limiter.try_acquire()
    assert limiter.running == 1
    assert not limiter.try_acquire()  # no free slot
    queued = limiter.reserve()
    assert not queued.granted
    assert not limiter.try_acquire()  # and none for a newcomer while someone waits
    limiter.release_slot()  # straight to the one in line, not back to the pool
    async with asyncio.timeout(GUARD):
        await queued.wait()
    assert (limiter.running, limiter.queued) == (1, 0)
    queued.release()
    assert limiter.running == 0
