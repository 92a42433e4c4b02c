"""A job's event log: every event once, in order, to any number of subscribers.

Subscribers do not get queues of their own: each one reads the shared log from its
own cursor. So a slow subscriber never blocks the job or the other subscribers, and
fan-out costs one encode per event whatever the number of readers. The log is bounded
by count (`max_events`) and by bytes (`max_bytes`), and all the logs of a process
share one byte budget (`EventBudget`); a reader that falls behind the oldest kept
event receives one `gap` event naming the sequence numbers it missed, then continues
from the oldest kept. A log always keeps its newest entry, so a finished job's reader
still gets the end.
"""

from __future__ import annotations

import asyncio
import collections
import weakref
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


# What one kept entry costs beyond its JSON: the LogEntry (64 bytes with its slots),
# the bytes object's header (33), its seq (28), the list's pointer (8) and malloc's
# rounding and header, from sys.getsizeof on CPython 3.11.
ENTRY_OVERHEAD = 160


def entry_size(entry: LogEntry) -> int:
    """The bytes one kept entry holds, as the byte bounds count them."""
    return len(entry.data) + ENTRY_OVERHEAD


class _Account:
    """A log's retained bytes, kept apart from the log so the budget can settle them
    when the log is dropped (a weakref finalizer must not hold the log itself)."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


class EventBudget:
    """The bytes every job event log of this process retains, and their bound.

    Over the bound, the oldest entries of the least recently appended logs go first
    (finished jobs before running ones, as a rule), down to each log's newest entry.
    A log that is dropped (its job evicted) gives its bytes back when it is collected.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.retained = 0
        # Logs with more than one entry, least recently appended first.
        self._trimmable: collections.OrderedDict[int, weakref.ref[JobEventLog]] = collections.OrderedDict()

    def add(self, log: JobEventLog) -> None:
        weakref.finalize(log, self._forget, id(log), log.account)

    def _forget(self, key: int, account: _Account) -> None:
        self.retained -= account.bytes
        account.bytes = 0
        self._trimmable.pop(key, None)

    def appended(self, log: JobEventLog, size: int) -> None:
        self.retained += size
        trimmable = self._trimmable
        key = id(log)
        if key in trimmable:
            trimmable.move_to_end(key)
        elif log.kept > 1:
            trimmable[key] = weakref.ref(log)
        if self.max_bytes is not None and self.retained > self.max_bytes:
            self._trim(self.max_bytes)

    def _trim(self, bound: int) -> None:
        trimmable = self._trimmable
        while self.retained > bound and trimmable:
            key, ref = next(iter(trimmable.items()))
            log = ref()
            if log is None or log.kept <= 1:
                del trimmable[key]
                continue
            log.drop_oldest()  # calls dropped()


class JobEventLog:
    def __init__(
        self, max_events: int, max_bytes: int | None = None, budget: EventBudget | None = None
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        # Told of every entry as it is appended (a shared store copies them out).
        self.listener: Callable[[LogEntry], None] | None = None
        # A list with a moving head: slicing new entries is O(new), dropping is O(1)
        # amortised (the dead prefix is compacted when it grows as large as the log).
        self._entries: list[LogEntry] = []
        self._head = 0
        self.last_seq = 0
        self.closed = False
        self._changed = asyncio.Event()
        self.account = _Account()
        self.budget = budget
        if budget is not None:
            budget.add(self)

    @property
    def kept(self) -> int:
        return len(self._entries) - self._head

    @property
    def retained_bytes(self) -> int:
        return self.account.bytes

    def drop_oldest(self) -> None:
        """Forget the oldest kept entry (readers behind it get a `gap`)."""
        entry = self._entries[self._head]
        self._entries[self._head] = None  # type: ignore[call-overload]  # freed now, not at compaction
        self._head += 1
        if self._head >= 64 and self._head * 2 >= len(self._entries):
            del self._entries[: self._head]
            self._head = 0
        size = entry_size(entry)
        self.account.bytes -= size
        if self.budget is not None:
            self.budget.retained -= size

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
        size = entry_size(entry)
        account = self.account
        account.bytes += size
        if len(self._entries) - self._head > self.max_events:
            self.drop_oldest()
        if self.max_bytes is not None:
            while account.bytes > self.max_bytes and len(self._entries) - self._head > 1:
                self.drop_oldest()
        if self.budget is not None:
            self.budget.appended(self, size)
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
