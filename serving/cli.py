"""The `serving` command line. `serving serve` (also `python -m serving`) runs the daemon."""

from __future__ import annotations

import sys
from typing import Any

import structlog

from serving.cli_common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Parser, fail
from serving.settings import SettingsError, load_settings


def serve(overrides: dict[str, Any] | None = None, worker_fd: int | None = None) -> int:
    """Load settings and the pipeline, then serve; returns the exit status.

    Every start-up problem is one line on stderr and exit status 2 (1 when the port is
    taken, which is not a usage error). The traceback is logged only at debug level.
    With SERVING_WORKERS > 1 everything is checked here once, then the supervisor starts
    the workers, each of which comes back here with the listening socket's `worker_fd`.
    """
    try:
        settings = load_settings(**(overrides or {}))
    except SettingsError as exc:
        return fail(str(exc), EXIT_USAGE)
    from serving.supervisor import workers_problem

    if (problem := workers_problem(settings)) is not None:
        return fail(problem, EXIT_USAGE)
    from serving.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if worker_fd is not None:  # every line says which worker wrote it
        import os

        structlog.contextvars.bind_contextvars(worker_pid=os.getpid())
    log = structlog.get_logger("serving.cli")
    identity, import_root = None, None
    if settings.deployment:
        try:
            settings, identity, import_root = _deployment_settings(settings)
        except Exception as exc:  # RegistryError and friends: one line
            return fail(f"SERVING_DEPLOYMENT={settings.deployment!r}: {exc}", EXIT_USAGE)
    if not settings.pipeline:
        return fail(
            "SERVING_PIPELINE is not set; name a pipeline as 'package.module:attr' or 'path/to/file.py:attr'",
            EXIT_USAGE,
        )
    if settings.server == "uvicorn":
        try:
            import uvicorn  # noqa: F401
        except ImportError:
            return fail("SERVING_SERVER=uvicorn needs the extra: pip install 'serving[uvicorn]'", EXIT_USAGE)

    from capture.sinks import CaptureURLError, display_url
    from runtimes import create_runtime
    from runtimes.base import UnknownRuntimeError

    # Import the daemon's own modules before the pipeline's folder goes on sys.path, so
    # a file next to the pipeline (a `jobs.py`, say) cannot shadow them.
    from serving.app import create_app
    from serving.loader import PipelineLoadError, load_pipeline

    if import_root is not None:
        sys.path.insert(0, import_root)  # a deployment's frozen modules, ahead of any other copy

    try:
        pipeline = load_pipeline(settings.pipeline)
    except PipelineLoadError as exc:
        if settings.log_level == "debug":
            log.debug("pipeline_load_failed", exc_info=exc.__cause__ or exc)
        return fail(f"cannot load pipeline: {exc}", EXIT_USAGE)
    from serving.home import prepare_home

    # SERVING_HOME 0700, and a capture store in it 0600 before the sink opens it.
    chosen = runtime_name(settings, pipeline)
    prepare_home(settings.home_path, settings.effective_capture_url if chosen == "realtime" else "")
    try:
        runtime = create_runtime(chosen, runtime_options(settings))
    except UnknownRuntimeError as exc:
        return fail(f"SERVING_RUNTIME: {exc}", EXIT_USAGE)
    except CaptureURLError as exc:
        return fail(f"SERVING_CAPTURE_URL={exc}", EXIT_USAGE)
    if runtime.name == "realtime":
        problem = _capture_store_problem(settings.effective_capture_url)
        if problem is not None:
            shown = display_url(settings.effective_capture_url)
            return fail(f"SERVING_CAPTURE_URL={shown!r}: {problem}", EXIT_USAGE)

    if settings.job_store != "memory":
        problem = _job_store_problem(settings.job_store)
        if problem is not None:
            return fail(f"SERVING_JOB_STORE={settings.job_store!r}: {problem}", EXIT_USAGE)

    from serving.server import ServerStartError, run_server

    try:
        app = create_app(pipeline, runtime, settings, identity)
    except Exception as exc:  # e.g. a type no schema can describe: one line, not a traceback
        log.debug("app_build_failed", exc_info=exc)
        return fail(f"cannot serve pipeline '{pipeline.name}': {type(exc).__name__}: {exc}", EXIT_USAGE)
    try:
        if worker_fd is not None:
            return run_server(app, settings, worker_fd=worker_fd)
        if settings.worker_count > 1:
            from serving.supervisor import run_supervisor

            del app  # built only to check; each worker builds its own
            return run_supervisor(settings, overrides or {})
        return run_server(app, settings)
    except ServerStartError as exc:
        return fail(str(exc), EXIT_FAILED)


def _job_store_problem(url: str, attempts: int = 5) -> str | None:
    """Ping the job store, retrying briefly (Redis may be starting next to us), so an
    unreachable one fails the start in one line instead of every request later."""
    import time

    import redis

    from jobs.redis_store import parse_store_url

    client = redis.Redis.from_url(parse_store_url(url)[0], socket_connect_timeout=2, socket_timeout=2)
    try:
        for attempt in range(attempts):
            try:
                client.ping()
                return None
            except redis.RedisError as exc:
                problem = f"cannot reach Redis after {attempts} attempts: {exc}"
                if attempt + 1 < attempts:
                    time.sleep(0.2 * 2**attempt)
        return problem
    finally:
        client.close()


def _capture_store_problem(url: str) -> str | None:
    """Open and close the capture store once, so a bad one fails the start in one line."""
    import sqlite3

    from capture.sinks import SchemaError, StoreUnavailable, sink_from_url

    sink = sink_from_url(url)
    try:
        sink.open()
        sink.close()
    except (OSError, sqlite3.Error, SchemaError, StoreUnavailable) as exc:
        return f"cannot open the capture store: {exc}"
    return None


def _deployment_settings(settings: Any) -> tuple[Any, Any, str]:
    """Settings, identity and import root of a registered deployment: its snapshot's
    code, its auth key and its names; explicit SERVING_* variables still win."""
    import msgspec

    from jobs import InvocationMetadata
    from serving.deploy.registry import Registry
    from serving.deploy.snapshots import import_root
    from serving.settings import check_cors

    registry = Registry(settings.home_path)
    dep = registry.get_deployment(settings.deployment)
    snap = registry.get_snapshot(dep.snapshot_id)
    settings = msgspec.structs.replace(
        settings,
        pipeline=snap.source,
        auth_key=settings.auth_key or dep.auth_key,
        deployment_name=settings.deployment_name or dep.name,
    )
    check_cors(settings)  # the deployment's key may be the one that rules out '*'
    identity = InvocationMetadata(
        deployment_id=dep.id,
        deployment_name=dep.name,
        snapshot_id=snap.id,
        snapshot_name=snap.name,
        pipeline_name=snap.pipeline_name,
    )
    return settings, identity, import_root(snap)


def runtime_options(settings: Any) -> Any:
    from runtimes import RuntimeOptions

    return RuntimeOptions(
        max_threads=settings.step_threads,
        capture_url=settings.effective_capture_url,
        capture_max_bytes=settings.capture_max_bytes,
        capture_queue_size=settings.capture_queue_size,
        capture_batch_size=settings.capture_batch_size,
        capture_batch_interval=settings.capture_batch_interval,
        capture_breaker_failures=settings.capture_breaker_failures,
        capture_breaker_cooldown=settings.capture_breaker_cooldown,
        capture_write_deadline=settings.capture_write_deadline,
        capture_sample=settings.capture_sample,
        capture_overrides=settings.capture_overrides,
        cache_ttl=settings.cache_ttl,
        cache_size=settings.cache_size,
        deployment_name=settings.deployment_name,
    )


def runtime_name(settings: Any, pipeline: Any) -> str:
    """`Capture(memory_only=True)` (or SERVING_CAPTURE_MEMORY_ONLY) selects the MemoryOnly
    runtime when SERVING_RUNTIME is the default: nothing is published or stored."""
    memory_only = settings.capture_overrides.get("memory_only", pipeline.capture.memory_only)
    if memory_only and settings.runtime == "realtime":
        return "memory"
    return str(settings.runtime)


def build_parser(full: bool = True) -> Parser:
    """The CLI. `full=False` leaves out the management commands, whose imports (rich,
    httpx, the registry) would otherwise slow every daemon start."""
    parser = Parser(
        prog="serving",
        description="Serve a Python pipeline over HTTP.",
        epilog="`serving serve` (or `python -m serving`) starts the daemon; the other commands manage it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    srv = sub.add_parser("serve", help="run the daemon (settings from SERVING_* variables)")
    srv.add_argument("pipeline", nargs="?", help="module:attr or path/file.py:attr (SERVING_PIPELINE)")
    srv.add_argument("--host", help="SERVING_HOST")
    srv.add_argument("--port", type=int, help="SERVING_PORT")
    srv.add_argument("--server", choices=["hypercorn", "uvicorn"], help="SERVING_SERVER")
    srv.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="SERVING_LOG_LEVEL")
    if full:
        from serving import runs_cli
        from serving.deploy import cli as deploy_cli

        runs_cli.add_parser(sub)
        deploy_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(full=not argv or argv[0] not in ("serve",))
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:  # bare `serving`: say what it can do; starting a daemon is `serve`
        parser.print_help()
        return EXIT_OK
    if args.command == "serve":
        overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
        return serve(overrides)
    if args.command == "runs":
        from serving import runs_cli

        try:
            settings = load_settings()
        except SettingsError as exc:
            return fail(str(exc), EXIT_USAGE)
        return runs_cli.main(args, settings)
    if args.command in ("pipeline", "deployment"):
        from serving.deploy import cli as deploy_cli

        return deploy_cli.run(args, extra)
    parser.print_help()  # pragma: no cover - every subcommand is handled above
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
