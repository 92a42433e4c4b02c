"""Hypercorn's asyncio worker loop, with a shutdown that has a hard deadline.

Hypercorn's own `serve()` closes its listening server and then awaits
`Server.wait_closed()` before its graceful timeout even starts; under uvloop that call
waits for every connection to end, so one client that never reads (an SSE stream or a
WebSocket whose socket buffer is full) keeps the process alive forever. It also closes
an idle keep-alive connection the moment shutdown starts, cutting the request its
client may already have sent.

This loop runs the same pieces (`Lifespan`, `TCPServer`, `WorkerContext`) and differs
only in how it stops:

1. stop accepting; idle keep-alive connections are kept for `idle_linger` seconds, so
   a request already on its way is answered (with `Connection: close`, added by
   `serving.drain`) instead of cut;
2. wait up to `graceful_timeout + cut_grace` for connections to end (the app answers
   what is still running at `graceful_timeout`, see `AppState.reach_deadline`);
3. abort the transports of whatever is left (`transport.abort()` drops unsent data,
   where `close()` would wait for a reader that never reads) and cancel their tasks;
4. run the lifespan shutdown (jobs, capture flush).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

from hypercorn.asyncio.lifespan import Lifespan
from hypercorn.asyncio.statsd import StatsdLogger
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.typing import AppWrapper, LifespanState

ABORT_WAIT = 0.5  # seconds for aborted connections' tasks to unwind
RECANCEL = 0.05  # seconds between cancels of a connection task that is still unwinding


class _Connections:
    """The open connections: each one's task and the writer whose transport can be aborted."""

    def __init__(self) -> None:
        self.open: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    def add(self, task: asyncio.Task[None], writer: asyncio.StreamWriter) -> None:
        self.open[task] = writer
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.open.pop(task, None)

    def abort_all(self) -> int:
        left = list(self.open.items())
        for task, writer in left:
            with contextlib.suppress(Exception):
                writer.transport.abort()
            task.cancel()
        return len(left)


async def serve(
    app: AppWrapper,
    config: Config,
    sock: socket.socket,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    graceful_timeout: float,
    cut_grace: float,
    idle_linger: float,
    on_closed: Callable[[], None],
    on_abort: Callable[[int], None],
) -> None:
    """Serve `app` on the bound, listening `sock` until `shutdown_trigger` returns, then
    stop as the module docstring says. `on_closed()` is called once it no longer
    accepts (responses say `Connection: close` from then on); `on_abort(n)` is told
    how many connections were cut at the deadline (0: none)."""
    config.set_statsd_logger_class(StatsdLogger)
    loop = asyncio.get_running_loop()
    state: LifespanState = {}
    lifespan = Lifespan(app, config, loop, state)
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    await lifespan.wait_for_startup()
    if lifespan_task.done() and (error := lifespan_task.exception()) is not None:
        raise error

    # `terminated` is what Hypercorn's connections read to close when idle; it is set
    # `idle_linger` after the stop, not at it (step 1 of the module docstring).
    context = WorkerContext(None)
    connections = _Connections()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task, writer)
        # Cut at the deadline: ending normally keeps asyncio's stream callback from
        # logging the cancellation as an error with a traceback.
        with contextlib.suppress(asyncio.CancelledError):
            await TCPServer(app, loop, config, context, state, reader, writer)

    server = await asyncio.start_server(on_connection, sock=sock, backlog=config.backlog)
    try:
        await shutdown_trigger()
    finally:
        server.close()  # stop accepting; never `wait_closed()`: it waits for every client
        sock.close()  # uvloop listens on a duplicate: connects queued on this one would be reset
        on_closed()
        linger = loop.call_later(
            min(idle_linger, graceful_timeout), lambda: loop.create_task(context.terminated.set())
        )
        try:
            if connections.open:
                await asyncio.wait(list(connections.open), timeout=graceful_timeout + cut_grace)
            await context.terminated.set()
            cut = connections.abort_all()
            on_abort(cut)
            give_up = loop.time() + ABORT_WAIT
            while connections.open and loop.time() < give_up:
                # A cancel can be swallowed on its way down (a shielded clean-up in an
                # SSE response, a wait_for finishing in the same iteration): repeat it.
                await asyncio.wait(list(connections.open), timeout=RECANCEL)
                connections.abort_all()
        except asyncio.CancelledError:  # a second signal: no more waiting for anyone
            connections.abort_all()
            raise
        finally:
            linger.cancel()
            await lifespan.wait_for_shutdown()
            lifespan_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lifespan_task
