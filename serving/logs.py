"""structlog set up once: JSON lines in production, a readable console on a terminal.

The request id lives in a contextvar set by the HTTP middleware; a processor copies it
into every event, so each log line of a request carries it without per-call binding.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from runtimes import logcapture

request_id_var: ContextVar[str | None] = ContextVar("serving_request_id", default=None)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_encoder = msgspec.json.Encoder()


def _add_request_id(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    rid = request_id_var.get()
    if rid is not None and "request_id" not in event:
        event["request_id"] = rid
    return event


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _json_dumps(obj: Any, **_: Any) -> str:
    return _encoder.encode(obj).decode()


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Route structlog (and the stdlib loggers of our servers) to stderr.

    `fmt="auto"` picks the console renderer when stderr is a terminal, JSON otherwise.
    """
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
            if _has_rich()
            else structlog.dev.plain_traceback,
        )
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
    shared: list[Any] = [  # runtimes.logcapture types its processor with a plain dict
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        logcapture.structlog_processor,  # run_id and step inside a step; step log capture
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks without local variables: those hold request parameters, maybe secrets.
    tracebacks = structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    )
    tail: list[Processor] = [] if use_console else [tracebacks]
    structlog.configure(
        processors=[*shared, *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Hypercorn and uvicorn log through the stdlib: render their lines the same way.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.INFO))


class AccessLog:
    """One line per request, written without going through structlog's processor chain.

    At thousands of requests a second the generic chain costs about as much as the
    request itself; this writes the same JSON fields (timestamp, level, event,
    request_id, ...) with one msgspec encode and one write. On a console it defers to
    structlog for readable output.
    """

    def __init__(self, fmt: str = "auto", stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.json = not (fmt == "console" or (fmt == "auto" and self.stream.isatty()))
        self._out = getattr(self.stream, "buffer", None)
        self._second = -1
        self._prefix = ""
        self._log = structlog.get_logger("serving.http")

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((now - second) * 1e6):06d}Z"

    def __call__(
        self, method: str, path: str, status: int, duration_ms: float, client: str, request_id: str
    ) -> None:
        if not self.json:
            # What a person scans for leads the line (status, method, path, duration);
            # JSON lines keep the `request` event with the same fields, for machines.
            self._log.info(f"{status} {method} {path} {duration_ms:.1f}ms", client=client)
            return
        line = _encoder.encode(
            {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": duration_ms,
                "client": client,
                "event": "request",
                "request_id": request_id,
                "level": "info",
                "timestamp": self._timestamp(),
            }
        )
        if self._out is not None:
            self._out.write(line + b"\n")
            self._out.flush()
        else:
            self.stream.write(line.decode() + "\n")
