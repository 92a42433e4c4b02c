"""A job's event log: every event once, in order, to any number of subscribers.

Subscribers do not get queues of their own: each one reads the shared log from its
own cursor. So a slow subscriber never blocks the job or the other subscribers, and
fan-out costs one encode per event whatever the number of readers. The log is bounded
(`max_events`); a reader that falls behind the oldest kept event receives one `gap`
event naming the sequence numbers it missed, then continues from the oldest kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import msgspec

_encoder = msgspec.json.Encoder(decimal_format="number")


class Gap(msgspec.Struct, tag_field="type", tag="gap", kw_only=True, frozen=True):
    """Events `from_seq`..`to_seq` were dropped from the bounded log before this reader got them."""

    seq: int
    from_seq: int
    to_seq: int


class LogEntry:
    """One event: its seq, type and JSON encoding, made once and shared by all readers."""

    __slots__ = ("data", "seq", "terminal", "type")

    def __init__(self, seq: int, type_: str, data: bytes, terminal: bool) -> None:
        self.seq = seq
        self.type = type_
        self.data = data
        self.terminal = terminal


def _encode_event(event: Any) -> bytes:
    try:
        return _encoder.encode(event)
    except (TypeError, ValueError, OverflowError):
        # A chunk a step yielded that JSON cannot carry: keep the stream, describe the item.
        fields = msgspec.structs.asdict(event)
        fields["data"] = repr(fields.get("data"))[:1000]
        fields["type"] = type(event).__struct_config__.tag
        return _encoder.encode(fields)


class EventLog(Protocol):
    """What a subscriber reads a job's events from: the local `JobEventLog`, or the
    job's Redis stream (`jobs.redis_events.RedisEventLog`) on any replica."""

    def read(self, after_seq: int = 0) -> AsyncIterator[LogEntry]:
        """Every entry after `after_seq`: history, a `gap` entry where the bounded log
        dropped some, live entries, and the terminal one last."""
        ...


class JobEventLog:
    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        # Told of every entry as it is appended (a shared store copies them out).
        self.listener: Callable[[LogEntry], None] | None = None
        # A list with a moving head: slicing new entries is O(new), dropping is O(1)
        # amortised (the dead prefix is compacted when it grows as large as the log).
        self._entries: list[LogEntry] = []
        self._head = 0
        self.last_seq = 0
        self.closed = False
        self._changed = asyncio.Event()

    @property
    def first_seq(self) -> int:
        """The oldest seq still kept (last_seq + 1 when empty)."""
        return self._entries[self._head].seq if self._head < len(self._entries) else self.last_seq + 1

    def append(self, event: Any, *, terminal: bool = False) -> LogEntry:
        """Stamp the next seq on `event`, keep it, and wake every reader."""
        self.last_seq += 1
        event = msgspec.structs.replace(event, seq=self.last_seq)
        entry = LogEntry(self.last_seq, type(event).__struct_config__.tag, _encode_event(event), terminal)
        self._entries.append(entry)
        if len(self._entries) - self._head > self.max_events:
            self._head += 1
            if self._head >= self.max_events:
                del self._entries[: self._head]
                self._head = 0
        if terminal:
            self.closed = True
        if self.listener is not None:
            self.listener(entry)
        self._wake()
        return entry

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def since(self, after_seq: int) -> list[LogEntry]:
        """Entries with seq > after_seq that are still kept."""
        start = self._head + max(0, after_seq + 1 - self.first_seq)
        return self._entries[start:]

    async def read(self, after_seq: int = 0) -> AsyncIterator[LogEntry]:
        """Yield every entry after `after_seq`, live, until the terminal one.

        History first, then new events as they come; for a finished job, the history
        and the end. Never blocks the writer.
        """
        cursor = after_seq
        while True:
            first = self.first_seq
            if cursor + 1 < first:
                gap = Gap(seq=first - 1, from_seq=cursor + 1, to_seq=first - 1)
                yield LogEntry(gap.seq, "gap", _encoder.encode(gap), False)
                cursor = first - 1
            changed = self._changed
            batch = self.since(cursor)
            for entry in batch:
                yield entry
                cursor = entry.seq
                if entry.terminal:
                    return
            if self.closed and cursor >= self.last_seq:
                return
            if not batch:
                await changed.wait()
