"""Run the ASGI app under Hypercorn (default) or uvicorn, with the same drain semantics.

On SIGTERM or SIGINT: `/readyz` turns 503 at once, after `SERVING_DRAIN_DELAY` seconds
the server stops accepting connections and every response says `Connection: close`,
in-flight requests get up to `SERVING_GRACEFUL_TIMEOUT` seconds to finish, then what
still runs is answered (`AppState.reach_deadline`: a sync /invoke gets 503), what
still cannot be written (a client that never reads) is cut `CUT_GRACE` later, and the
process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

import structlog

from serving.settings import Settings

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

    from serving.app import ServingApp

log = structlog.get_logger("serving.server")

BACKLOG = 2048  # a burst of connects (e.g. 1000 SSE subscribers) must not overflow the queue
KEEP_ALIVE = 5  # seconds an idle connection is kept (both servers' own default)
CUT_GRACE = 0.5  # seconds after the graceful timeout for the deadline's answers to be written
IDLE_LINGER = 0.5  # seconds an idle keep-alive connection may still bring a request at shutdown
LINGER_POLL = 0.02  # seconds between looks at uvicorn's open connections (uvicorn itself polls)


class ServerStartError(Exception):
    """The server cannot start (e.g. the port is taken); the message is one line."""


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before starting the server so a taken port is a clear error and port 0 works."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerStartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def _install_drain(
    app: ServingApp, settings: Settings, stop: Callable[[], None], force: Callable[[], None]
) -> None:
    """First SIGTERM/SIGINT: drain. A second one: stop at once (`force`)."""
    loop = asyncio.get_running_loop()
    state = app.state.serving

    def on_signal(signum: int) -> None:
        if state.draining:
            log.warning("second_signal_stopping_now", signal=signal.Signals(signum).name)
            state.forced = True
            force()
            return
        state.begin_drain()
        log.info(
            "draining",
            signal=signal.Signals(signum).name,
            drain_delay=settings.drain_delay,
            graceful_timeout=settings.graceful_timeout,
        )
        loop.call_later(settings.drain_delay, stop_then_deadline)

    def stop_then_deadline() -> None:
        stop()
        loop.call_later(settings.graceful_timeout, state.reach_deadline)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    # A supervised worker starts with these blocked (serving/worker.py), so a drain asked
    # for while it was still starting waits here instead of killing it; a no-op otherwise.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM, signal.SIGINT))


async def _serve_hypercorn(app: ServingApp, settings: Settings, sock: socket.socket) -> None:
    from hypercorn.config import Config
    from hypercorn.utils import wrap_app

    from serving import hypercorn_run

    config = Config()
    config.accesslog = None  # our middleware logs one structured line per request
    config.errorlog = logging.getLogger("hypercorn.error")  # rendered by our structlog setup
    config.keep_alive_timeout = KEEP_ALIVE  # Hypercorn notices a client's close only when this fires
    config.backlog = BACKLOG
    shutdown = asyncio.Event()
    task = asyncio.current_task()
    assert task is not None

    def force() -> None:
        task.cancel()

    def on_abort(count: int) -> None:
        if count:
            log.warning("connections_cut", count=count, reason="still open after the graceful timeout")

    _install_drain(app, settings, shutdown.set, force)
    # The same ASGI protocol, typed twice: Hypercorn's scopes are TypedDicts, Starlette's
    # (hence ServingApp's) a MutableMapping, and mypy cannot unify the two.
    await hypercorn_run.serve(
        wrap_app(cast("ASGIFramework", app), config.wsgi_max_body_size, "asgi"),
        config,
        sock,
        shutdown_trigger=shutdown.wait,
        graceful_timeout=settings.graceful_timeout,
        cut_grace=CUT_GRACE,
        idle_linger=IDLE_LINGER,
        on_closed=lambda: setattr(app.state.serving, "closing", True),
        on_abort=on_abort,
    )


async def _serve_uvicorn(app: ServingApp, settings: Settings, sock: socket.socket) -> None:
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # Our handlers drain first and never re-raise the signal, so exit is 0.
            yield

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # uvicorn closes every idle keep-alive connection at once, cutting the request
            # its client may be sending. Stop accepting first, and give those connections
            # IDLE_LINGER to bring it: it is answered with `Connection: close` (`closing`),
            # so each busy connection ends after one more answer.
            for server in self.servers:
                server.close()
            for sock in sockets or []:  # the event loop listens on a duplicate of it
                sock.close()
            app.state.serving.closing = True
            loop = asyncio.get_running_loop()
            started = loop.time()
            until = started + min(IDLE_LINGER, settings.graceful_timeout)
            while self.server_state.connections and loop.time() < until and not self.force_exit:
                await asyncio.sleep(LINGER_POLL)
            spent = loop.time() - started
            self.config.timeout_graceful_shutdown = cast(
                "int", max(0.0, settings.graceful_timeout + CUT_GRACE - spent)
            )
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        loop="none",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="on",
        # Typed as whole seconds, used as a float; past the graceful timeout the app has
        # answered what still runs (`AppState.reach_deadline`), CUT_GRACE lets it be written.
        timeout_graceful_shutdown=cast("int", settings.graceful_timeout + CUT_GRACE),
        timeout_keep_alive=KEEP_ALIVE,
        backlog=BACKLOG,
    )
    server = _Server(config)

    def stop() -> None:
        server.should_exit = True

    def force() -> None:
        server.force_exit = True  # uvicorn stops waiting for connections and tasks
        server.should_exit = True

    _install_drain(app, settings, stop, force)
    await server.serve(sockets=[sock])


def run_server(app: ServingApp, settings: Settings, worker_fd: int | None = None) -> int:
    """Serve until drained; returns the process exit status.

    `worker_fd` is the listening socket a supervisor bound and handed down
    (`serving/supervisor.py`); without it this process binds its own.
    """
    if worker_fd is None:
        sock = bind_socket(settings.host, settings.port)
        host, port = sock.getsockname()[:2]
        log.info("listening", url=f"http://{host}:{port}", server=settings.server, pipeline=settings.pipeline)
    else:
        sock = socket.socket(fileno=worker_fd)
        log.info("worker_serving", worker_pid=os.getpid(), server=settings.server)
    serve = _serve_uvicorn if settings.server == "uvicorn" else _serve_hypercorn
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            asyncio.run(serve(app, settings, sock))
        else:
            uvloop.run(serve(app, settings, sock))
    except asyncio.CancelledError:  # a second signal (Hypercorn): in-flight work was cut short
        log.warning("stopped_at_once")
        return 1
    if app.state.serving.forced:  # a second signal (uvicorn)
        log.warning("stopped_at_once")
        return 1
    with contextlib.suppress(OSError):  # Hypercorn closes the fd it was handed
        sock.close()
    log.info("stopped")
    return 0
