"""Ids: 32 hex digits, unique, and ordered by the millisecond they were made in."""

from __future__ import annotations

import threading
import time

from runtimes.ids import new_id


def test_ids_are_hex_uuidv7_layout_and_unique() -> None:
    ids = [new_id() for _ in range(2000)]  # crosses the 4 KiB random pool several times
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == len(ids)


def test_ids_start_with_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(made[:12], 16) <= after


def test_ids_made_in_threads_do_not_collide() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(new_id() for _ in range(1000))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for out in made for i in out]
    assert len(set(everything)) == len(everything)
