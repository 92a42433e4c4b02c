"""A job's event log: numbering, fan-out to many readers, resume, and the bounded gap."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from jobs import JobEventLog
from jobs.events import EventBudget
from runtimes import events as ev

pytestmark = pytest.mark.anyio

GUARD = 5.0  # seconds; a hang guard only


def progress(n: int) -> ev.Progress:
    return ev.Progress(seq=0, run_id="r", ts=0.0, step="s", fraction=None, message=f"m{n}")


def done() -> ev.RunCompleted:
    return ev.RunCompleted(seq=0, run_id="r", ts=0.0, duration=0.0)


async def read_all(log: JobEventLog, after: int = 0) -> list[dict[str, Any]]:
    async with asyncio.timeout(GUARD):
        return [json.loads(entry.data) async for entry in log.read(after)]


async def test_append_stamps_consecutive_seqs_and_encodes_once() -> None:
    log = JobEventLog(max_events=100)
    entries = [log.append(progress(i)) for i in range(3)]
    end = log.append(done(), terminal=True)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert end.seq == 4 and end.terminal and end.type == "run_completed"
    assert log.closed and log.last_seq == 4 and log.first_seq == 1
    data = json.loads(entries[1].data)
    assert data["type"] == "progress" and data["seq"] == 2 and data["message"] == "m1"
    assert [e.seq for e in log.since(2)] == [3, 4]


async def test_reader_after_the_end_gets_history_and_the_end() -> None:
    log = JobEventLog(max_events=100)
    for i in range(5):
        log.append(progress(i))
    log.append(done(), terminal=True)
    events = await read_all(log)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[-1]["type"] == "run_completed"
    # resuming from any point gives exactly the rest
    for k in range(7):
        assert [e["seq"] for e in await read_all(log, k)] == list(range(k + 1, 7))


async def test_many_live_readers_each_get_every_event_once_in_order() -> None:
    log = JobEventLog(max_events=1000)
    waiting = asyncio.Barrier(51)

    async def reader() -> list[int]:
        seqs = []
        entries = log.read(0)
        first = await anext(entries)
        seqs.append(first.seq)
        await waiting.wait()
        async for entry in entries:
            seqs.append(entry.seq)
        return seqs

    log.append(progress(0))
    async with asyncio.timeout(GUARD):
        tasks = [asyncio.create_task(reader()) for _ in range(50)]
        await waiting.wait()  # every reader is live and has read the first event
        for i in range(1, 200):
            log.append(progress(i))
            if i % 17 == 0:
                await asyncio.sleep(0)  # let readers catch up part of the way
        log.append(done(), terminal=True)
        results = await asyncio.gather(*tasks)
    assert all(r == list(range(1, 202)) for r in results)


async def test_slow_reader_never_blocks_the_writer() -> None:
    log = JobEventLog(max_events=10_000)
    entries = log.read(0)
    log.append(progress(0))
    assert (await anext(entries)).seq == 1
    # the reader stops reading; appends still succeed at once
    for i in range(1, 1000):
        log.append(progress(i))
    log.append(done(), terminal=True)
    rest = [e.seq async for e in entries]
    assert rest == list(range(2, 1002))


async def test_bounded_log_gives_a_gap_then_the_kept_events() -> None:
    log = JobEventLog(max_events=3)
    for i in range(9):
        log.append(progress(i))
    log.append(done(), terminal=True)
    assert log.first_seq == 8
    events = await read_all(log)
    assert events[0] == {"type": "gap", "seq": 7, "from_seq": 1, "to_seq": 7}
    assert [e["seq"] for e in events[1:]] == [8, 9, 10]
    assert events[-1]["type"] == "run_completed"
    # a resume inside the dropped range gets a gap for exactly what it missed
    events = await read_all(log, 4)
    assert events[0] == {"type": "gap", "seq": 7, "from_seq": 5, "to_seq": 7}
    assert [e["seq"] for e in events[1:]] == [8, 9, 10]
    # a resume inside the kept range has no gap
    assert [e["seq"] for e in await read_all(log, 8)] == [9, 10]


async def test_live_reader_that_falls_behind_gets_a_gap_not_a_stall() -> None:
    log = JobEventLog(max_events=5)
    entries = log.read(0)
    log.append(progress(0))
    assert (await anext(entries)).seq == 1
    for i in range(1, 50):  # the reader sleeps while 49 more come and 44 are dropped
        log.append(progress(i))
    log.append(done(), terminal=True)
    async with asyncio.timeout(GUARD):
        rest = [json.loads(e.data) async for e in entries]
    assert rest[0]["type"] == "gap"
    assert (rest[0]["from_seq"], rest[0]["to_seq"]) == (2, 46)
    assert [e["seq"] for e in rest[1:]] == [47, 48, 49, 50, 51]  # the last five kept
    assert rest[-1]["type"] == "run_completed"


async def test_log_memory_stays_bounded_over_many_events() -> None:
    log = JobEventLog(max_events=10)
    for i in range(10_000):
        log.append(progress(i))
    assert len(log.since(0)) == 10
    assert len(log._entries) <= 2 * 10  # the dead prefix is compacted (white box)
    assert log.first_seq == 9_991


async def test_a_chunk_json_cannot_carry_is_described_not_dropped() -> None:
    log = JobEventLog(max_events=10)
    entry = log.append(ev.Chunk(seq=0, run_id="r", ts=0.0, step="s", index=0, data=object()))
    data = json.loads(entry.data)
    assert data["type"] == "chunk" and data["seq"] == 1 and data["index"] == 0
    assert data["data"].startswith("<object object")


def big(n: int, size: int = 1000) -> ev.Progress:
    return ev.Progress(seq=0, run_id="r", ts=0.0, step="s", fraction=None, message=f"{n:04d}" + "x" * size)


async def test_a_log_keeps_at_most_max_bytes_and_always_its_newest_entry() -> None:
    log = JobEventLog(max_events=1000, max_bytes=5000)
    for i in range(20):
        log.append(big(i))
        assert log.retained_bytes <= 5000
    assert 1 < log.kept < 20
    log.append(big(20, size=10_000), terminal=True)  # larger than the bound alone
    assert log.kept == 1 and log.retained_bytes > 5000
    events = await read_all(log)
    assert events[0] == {"type": "gap", "seq": 20, "from_seq": 1, "to_seq": 20}
    assert [e["seq"] for e in events[1:]] == [21]


async def test_the_budget_trims_the_least_recently_appended_logs_first() -> None:
    budget = EventBudget(max_bytes=11_000)
    old, new = JobEventLog(1000, None, budget), JobEventLog(1000, None, budget)
    for i in range(5):
        old.append(big(i))
    old.append(done(), terminal=True)
    for i in range(8):
        new.append(big(i))
        assert budget.retained <= 11_000
        assert budget.retained == old.retained_bytes + new.retained_bytes
    assert old.kept == 1  # down to its end; the active log lost nothing while old had more
    assert new.kept == 8
    assert [e["type"] for e in await read_all(old)] == ["gap", "run_completed"]
    for i in range(8, 12):
        new.append(big(i))
    assert new.kept < 12 and budget.retained <= 11_000
    del old  # an evicted job's log gives its bytes back once it is gone
    assert budget.retained == new.retained_bytes
