"""The capture publisher (bounded queue, batches, flush on stop, breaker) and the
circuit breaker itself, with fake sinks and a fake clock."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import pytest
from capture_helpers import RecordingSink
from polling import wait_until_async
from prometheus_client import REGISTRY

from capture.breaker import BreakerState, CircuitBreaker
from capture.publisher import Publisher
from capture.records import RunRecord

HANG_GUARD = 10.0


def record(i: int) -> RunRecord:
    return RunRecord(
        run_id=f"run-{i}",
        run_name=f"p-{i}",
        pipeline="p",
        pipeline_version="v",
        status="completed",
        started_at=0.0,
        finished_at=0.0,
        duration=0.0,
    )


def dropped_metric(reason: str) -> float:
    return REGISTRY.get_sample_value("serving_capture_dropped_total", {"reason": reason}) or 0.0


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BlockingSink(RecordingSink):
    """write() blocks until released: a stuck observability backend."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, batch: list[Any]) -> None:
        self.entered.set()
        assert self.release.wait(HANG_GUARD), "never released"
        super().write(batch)


# -- publisher ----------------------------------------------------------------------------


def test_publish_is_synchronous_and_drops_when_the_queue_is_full() -> None:
    assert not inspect.iscoroutinefunction(Publisher.publish)
    publisher = Publisher(RecordingSink(), max_queue=3)  # never started: nothing drains
    before = dropped_metric("queue_full")
    accepted = [publisher.publish(record(i)) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    assert publisher.queued == 3
    assert publisher.dropped == 2
    assert dropped_metric("queue_full") - before == 2
    assert publisher.status()["dropped"] == 2


@pytest.mark.anyio
async def test_publish_never_waits_for_a_stuck_sink() -> None:
    sink = BlockingSink()
    publisher = Publisher(sink, max_queue=5, batch_size=2, batch_interval=30)
    await publisher.start()
    try:
        publisher.publish(record(0))
        publisher.publish(record(1))  # a full batch: the writer takes it and gets stuck
        await wait_until_async(sink.entered.is_set, "the writer to take the first batch", timeout=HANG_GUARD)
        before = dropped_metric("queue_full")
        accepted = [publisher.publish(record(i)) for i in range(2, 102)]  # no await in between
        assert accepted.count(True) == 5
        assert publisher.dropped == 95
        assert dropped_metric("queue_full") - before == 95
    finally:
        sink.release.set()
        await publisher.stop()
    assert [r.run_id for r in sink.records] == [f"run-{i}" for i in range(7)]
    assert publisher.written == 7


@pytest.mark.anyio
async def test_batches_respect_batch_size() -> None:
    sink = RecordingSink()
    publisher = Publisher(sink, batch_size=4, batch_interval=30)
    await publisher.start()
    for i in range(10):
        publisher.publish(record(i))
    await wait_until_async(lambda: publisher.written == 8, "two full batches", timeout=HANG_GUARD)
    assert publisher.queued == 2  # a partial batch waits for batch_interval (or stop)
    await publisher.stop()
    assert [len(b) for b in sink.batches] == [4, 4, 2]
    assert [r.run_id for r in sink.records] == [f"run-{i}" for i in range(10)]


@pytest.mark.anyio
async def test_a_partial_batch_is_written_after_batch_interval() -> None:
    sink = RecordingSink()
    publisher = Publisher(sink, batch_size=100, batch_interval=0.01)
    await publisher.start()
    try:
        for i in range(3):
            publisher.publish(record(i))
        await wait_until_async(lambda: publisher.written == 3, "the partial batch", timeout=HANG_GUARD)
    finally:
        await publisher.stop()
    assert [len(b) for b in sink.batches] == [3]


@pytest.mark.anyio
async def test_stop_flushes_everything_queued_and_closes_the_sink() -> None:
    sink = RecordingSink()
    publisher = Publisher(sink, batch_size=500, batch_interval=30)
    await publisher.start()
    assert sink.opened
    events = metric("serving_capture_events_total")
    for i in range(1200):
        assert publisher.publish(record(i))
    await publisher.stop()
    assert sink.closed
    assert len(sink.records) == 1200 and publisher.written == 1200
    assert all(len(b) <= 500 for b in sink.batches)
    assert publisher.dropped == 0 and publisher.queued == 0
    assert metric("serving_capture_events_total") - events == 1200


@pytest.mark.anyio
async def test_failing_sink_trips_the_breaker_and_recovers_after_cooldown() -> None:
    clock = FakeClock()
    sink = RecordingSink()
    sink.fail = OSError("disk gone")
    breaker = CircuitBreaker(failure_threshold=2, cooldown=10.0, clock=clock)
    publisher = Publisher(sink, batch_size=1, batch_interval=30, breaker=breaker)
    sink_errors, breaker_drops = dropped_metric("sink_error"), dropped_metric("breaker_open")
    await publisher.start()
    try:
        publisher.publish(record(0))
        publisher.publish(record(1))
        await wait_until_async(
            lambda: breaker.state is BreakerState.open, "the breaker to open", timeout=HANG_GUARD
        )
        assert dropped_metric("sink_error") - sink_errors == 2
        assert metric("serving_capture_breaker_open") == 1
        assert publisher.status()["breaker"]["last_error"] == "OSError: disk gone"

        sink.fail = None  # the sink works again, but the breaker is open: dropped, not written
        publisher.publish(record(2))
        await wait_until_async(lambda: publisher.dropped == 3, "the drop while open", timeout=HANG_GUARD)
        assert dropped_metric("breaker_open") - breaker_drops == 1
        assert sink.records == []

        clock.now += 10.0  # cooldown over: the next batch is the half-open probe
        publisher.publish(record(3))
        await wait_until_async(lambda: publisher.written == 1, "the probe batch", timeout=HANG_GUARD)
        assert breaker.state is BreakerState.closed
        assert metric("serving_capture_breaker_open") == 0
    finally:
        await publisher.stop()
    assert [r.run_id for r in sink.records] == ["run-3"]


# -- circuit breaker ------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, min_calls=100, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure("e")
    breaker.success()  # resets the streak
    for _ in range(2):
        breaker.failure("e")
    assert breaker.state is BreakerState.closed
    breaker.failure("last")
    assert breaker.state is BreakerState.open
    assert breaker.opened_at == clock.now
    snap = breaker.snapshot()
    assert snap["state"] == "open" and snap["times_opened"] == 1 and snap["last_error"] == "last"


def test_breaker_opens_on_error_rate() -> None:
    breaker = CircuitBreaker(
        failure_threshold=100, error_rate=0.5, window=20, min_calls=10, clock=FakeClock()
    )
    for _ in range(4):  # S F S F ...: never two failures in a row
        breaker.success()
        breaker.failure("e")
    breaker.success()
    assert breaker.state is BreakerState.closed  # 4 of 9 calls: below min_calls
    breaker.failure("e")  # 5 of 10 failed: 50 %
    assert breaker.state is BreakerState.open


def test_breaker_error_rate_needs_min_calls() -> None:
    breaker = CircuitBreaker(failure_threshold=100, error_rate=0.5, min_calls=10, clock=FakeClock())
    breaker.success()
    for _ in range(3):
        breaker.success()
        breaker.failure("e")
    assert breaker.state is BreakerState.closed  # 3 of 7 calls failed, fewer than min_calls


def test_open_breaker_drops_until_cooldown_then_probes_once() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=10.0, clock=clock)
    breaker.failure("e")
    assert breaker.state is BreakerState.open
    clock.now += 9.99
    assert not breaker.allow()
    clock.now += 0.01
    assert breaker.allow()  # the probe
    assert breaker.state is BreakerState.half_open
    assert not breaker.allow()  # exactly one probe at a time
    breaker.success()
    assert breaker.state is BreakerState.closed
    assert breaker.allow()
    assert breaker.opened_at is None


def test_half_open_failure_reopens_for_another_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=10.0, clock=clock)
    breaker.failure("first")
    clock.now += 10
    assert breaker.allow()
    breaker.failure("probe failed")
    assert breaker.state is BreakerState.open
    assert breaker.times_opened == 2
    assert breaker.opened_at == clock.now
    clock.now += 5
    assert not breaker.allow()
    clock.now += 5
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.closed


def test_breaker_closes_with_a_clean_window() -> None:
    """After recovery old failures do not count: one failure does not re-open it."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, error_rate=0.5, min_calls=2, clock=clock)
    breaker.failure("a")
    breaker.failure("b")
    assert breaker.state is BreakerState.open
    clock.now += breaker.cooldown
    assert breaker.allow()
    breaker.success()  # the probe: closes and starts a new window
    breaker.success()
    breaker.success()
    breaker.failure("c")  # 1 of 3 since recovery (3 of 6 had "a" and "b" still counted)
    assert breaker.state is BreakerState.closed


@pytest.mark.anyio
async def test_a_write_past_its_deadline_opens_the_breaker_and_drops_count_under_it() -> None:
    """A stalled sink (a SQLite file locked elsewhere waits out its busy timeout) fails
    too slowly for the failure count; the deadline opens the breaker while the writer is
    still stuck, and what comes after is dropped as breaker_open, not queue_full."""
    clock = FakeClock()
    sink = BlockingSink()
    breaker = CircuitBreaker(failure_threshold=5, cooldown=10.0, write_deadline=0.05, clock=clock)
    publisher = Publisher(sink, max_queue=5, batch_size=1, batch_interval=30, breaker=breaker)
    breaker_drops, queue_full = dropped_metric("breaker_open"), dropped_metric("queue_full")
    await publisher.start()
    try:
        publisher.publish(record(0))
        await wait_until_async(sink.entered.is_set, "the writer to take the first batch", timeout=HANG_GUARD)
        await wait_until_async(
            lambda: breaker.state is BreakerState.open, "the breaker to open", timeout=HANG_GUARD
        )
        assert metric("serving_capture_breaker_open") == 1
        assert "longer than 0.05s" in str(publisher.status()["breaker"]["last_error"])
        for i in range(1, 21):  # each is drained (and dropped) as it comes: the queue never fills
            publisher.publish(record(i))
            await wait_until_async(
                lambda: publisher.queued == 0, "the batch to be dropped", timeout=HANG_GUARD
            )
        assert dropped_metric("breaker_open") - breaker_drops == 20
        assert dropped_metric("queue_full") - queue_full == 0

        clock.now += 10.0  # cooldown over, but the writer is still stuck: the probe fails
        publisher.publish(record(21))
        await wait_until_async(lambda: publisher.queued == 0, "the probe to be dropped", timeout=HANG_GUARD)
        assert breaker.state is BreakerState.open
        assert dropped_metric("breaker_open") - breaker_drops == 21

        sink.release.set()  # the late write ends: its batch is counted written
        await wait_until_async(lambda: publisher.written == 1, "the late write to end", timeout=HANG_GUARD)
        clock.now += 10.0
        publisher.publish(record(22))
        await wait_until_async(lambda: publisher.written == 2, "the probe batch", timeout=HANG_GUARD)
        assert breaker.state is BreakerState.closed
        assert metric("serving_capture_breaker_open") == 0
    finally:
        sink.release.set()
        await publisher.stop()
    assert [r.run_id for r in sink.records] == ["run-0", "run-22"]


def test_trip_opens_the_breaker_at_once() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=5, clock=clock)
    breaker.trip("slow")
    assert breaker.state is BreakerState.open
    assert breaker.last_error == "slow"
    assert breaker.times_opened == 1
