"""Bare Starlette baseline for the serving daemon benchmark.

The daemon's overhead is only meaningful relative to the cheapest app that
does the same HTTP + JSON work on the same server stack.  This module is that
floor: same route, same request/response shape, same codec (msgspec), same
server settings, and nothing else.  If the daemon is slow, the ratio against
this app tells us how much of the cost is ours rather than the server's.

Run as ``python bench/bare_app.py --server hypercorn|uvicorn --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PIPELINE_NAME = "hello"

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def _run_name() -> str:
    """Mimic the daemon's run-name timestamp so response sizes match."""
    return f"{PIPELINE_NAME}-{datetime.now(UTC):%Y_%m_%d-%H_%M_%S_%f}"


def build_response(parameters: dict[str, Any], execution_time: float) -> dict[str, Any]:
    """Build a payload byte-for-byte comparable to the daemon's, so the
    encoder and the socket do the same amount of work in both targets."""
    return {
        "success": True,
        "outputs": {"greeting": f"Hello {parameters.get('name', 'World')}!"},
        "execution_time": execution_time,
        "metadata": {
            "deployment_id": None,
            "deployment_name": None,
            "snapshot_id": None,
            "snapshot_name": None,
            "pipeline_name": PIPELINE_NAME,
            "run_id": str(uuid.uuid4()),
            "run_name": _run_name(),
            "parameters_used": parameters,
        },
        "error": None,
    }


async def invoke(request: Request) -> Response:
    """The same JSON round trip as the daemon's /invoke, minus the daemon."""
    started = time.perf_counter()
    payload = _decoder.decode(await request.body())
    parameters = payload.get("parameters") or {}
    body = _encoder.encode(build_response(parameters, time.perf_counter() - started))
    return Response(content=body, media_type="application/json")


async def readyz(_: Request) -> Response:
    """Lets the harness use one readiness probe for both targets."""
    return Response(status_code=200)


app = Starlette(
    routes=[
        Route("/invoke", invoke, methods=["POST"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
)


def _uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def serve_hypercorn(host: str, port: int, loop: str) -> None:
    """Serve in-process so the harness measures this pid, not a supervisor.

    ``hypercorn.asyncio.serve`` ignores ``Config.worker_class`` (it runs on
    whatever loop it is given), so uvloop must be chosen here via the runner's
    loop factory; setting ``worker_class = "uvloop"`` alone changes nothing.
    """
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(app, config))


def serve_uvicorn(host: str, port: int, loop: str) -> None:
    """Use uvicorn's fastest built-in settings; anything slower would flatter the daemon."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    uvicorn.Server(config).run()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("hypercorn", "uvicorn"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop; 'auto' means uvloop if installed (default)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    loop = args.loop
    if loop == "auto":
        loop = "uvloop" if _uvloop_available() else "asyncio"
    if args.server == "hypercorn":
        serve_hypercorn(args.host, args.port, loop)
    else:
        serve_uvicorn(args.host, args.port, loop)


if __name__ == "__main__":
    main()
