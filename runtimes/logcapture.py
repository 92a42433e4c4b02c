"""Capture what a step prints or logs, tied to that step and run.

Three doors, each checked against the `current_step` contextvar, which is per task and
per worker thread, so concurrent runs never mix their lines:
- `print()` / `sys.stdout` / `sys.stderr`: a tee that keeps writing to the real stream;
- the stdlib `logging` module: a handler on the root logger;
- structlog: `structlog_processor`, added to the daemon's chain, which also binds
  `run_id` and `step` into every log line written inside a step.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, TextIO

from capture.records import LogLine
from runtimes.progress import current_step

MAX_LINE = 4000
_installed = False
_lock = threading.Lock()


class _Tee:
    """Stands in for sys.stdout/stderr: lines written inside a capturing step are kept."""

    def __init__(self, stream: TextIO, level: str) -> None:
        self._stream = stream
        self._level = level

    def write(self, text: str) -> int:
        scope = current_step.get()
        if scope is not None and scope.logs is not None:
            # The unfinished line belongs to the step, not the thread: async steps share
            # the loop thread, and worker threads serve many runs.
            partial = scope.partial
            if partial is None:
                partial = scope.partial = {}
            pending = partial.get(self._level, "") + text
            *lines, rest = pending.split("\n")
            partial[self._level] = rest
            now = time.time()
            for line in lines:
                if line:
                    scope.logs.append(LogLine(now, self._level, line[:MAX_LINE]))
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _StepLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        scope = current_step.get()
        if scope is None or scope.logs is None:
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in user code must not break the step
            message = str(record.msg)
        scope.logs.append(LogLine(record.created, record.levelname.lower(), message[:MAX_LINE]))


_NOT_MESSAGE = frozenset({"event", "run_id", "step", "level", "timestamp", "request_id", "logger"})


def structlog_processor(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    scope = current_step.get()
    if scope is None:
        return event
    event.setdefault("run_id", scope.run_id)
    event.setdefault("step", scope.step_id)
    if scope.logs is not None and "_record" not in event:  # stdlib records: the handler has them
        extra = {k: v for k, v in event.items() if k not in _NOT_MESSAGE and not k.startswith("_")}
        text = str(event.get("event", ""))
        if extra:
            text += " " + " ".join(f"{k}={v!r}" for k, v in extra.items())
        scope.logs.append(LogLine(time.time(), method if method != "exception" else "error", text[:MAX_LINE]))
    return event


def flush_partial(scope: Any) -> None:
    """Keep a step's last printed line even without a trailing newline."""
    if scope.logs is None or not scope.partial:
        return
    for level, rest in scope.partial.items():
        if rest:
            scope.logs.append(LogLine(time.time(), level, rest[:MAX_LINE]))
    scope.partial.clear()


def install() -> None:
    """Install the stdout/stderr tees and the logging handler, once per process."""
    global _installed
    with _lock:
        if _installed:
            return
        sys.stdout = _Tee(sys.stdout, "stdout")
        sys.stderr = _Tee(sys.stderr, "stderr")
        logging.getLogger().addHandler(_StepLogHandler(level=logging.DEBUG))
        _installed = True
