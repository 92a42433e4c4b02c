"""Daemon settings: every `SERVING_*` environment variable, parsed once into one Struct.

A bad value stops the start with one line naming the variable (exit status 2), so a
typo in a deployment manifest fails loudly instead of serving with a surprise default.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

PREFIX = "SERVING_"
MiB = 1024 * 1024

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Workers = Annotated[int, msgspec.Meta(ge=1)] | Literal["auto"]


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The effective configuration of one daemon process.

    Field `x` is read from `SERVING_X`. Docs for each live in README.md's table, which a
    test keeps in step with this class.
    """

    pipeline: str | None = None
    host: str = "127.0.0.1"
    port: Port = 8000
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"
    access_log: bool = True
    auth_key: str | None = None
    cors_origins: str | None = None  # comma-separated origins allowed to call from a browser
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1)] = 16 * MiB
    invoke_timeout: Seconds | None = 300.0
    graceful_timeout: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    drain_delay: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    home: str = "~/.serving"
    deployment_name: str | None = None
    deployment: str | None = None  # a registered deployment (name or id) to serve
    server: Literal["hypercorn", "uvicorn"] = "hypercorn"
    workers: Workers = 1  # worker processes on one port; "auto": one per usable core
    runtime: str = "realtime"
    step_threads: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 32
    max_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 64
    max_queue: Annotated[int, msgspec.Meta(ge=0)] = 1024
    job_ttl: Seconds = 3600.0
    max_jobs: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    job_events_max: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    job_events_max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 4 * MiB
    events_memory_max: Annotated[int, msgspec.Meta(ge=1)] = 64 * MiB
    job_store: str = "memory"
    job_lease: Seconds = 10.0
    cancel_on_disconnect: bool = True
    sse_ping: Seconds = 15.0
    max_wait: Seconds = 60.0
    capture_url: str | None = None  # default: sqlite:///$SERVING_HOME/runs.db
    capture_max_bytes: Annotated[int, msgspec.Meta(ge=16)] = 4096
    capture_queue_size: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    capture_batch_size: Annotated[int, msgspec.Meta(ge=1)] = 500
    capture_batch_interval: Seconds = 0.25
    capture_breaker_failures: Annotated[int, msgspec.Meta(ge=1)] = 5
    capture_breaker_cooldown: Seconds = 10.0
    capture_write_deadline: Seconds = 2.5
    # The fraction of runs captured (an opt-in, for less capture than every run): each
    # run is drawn at random; 1 captures every run, 0 none.
    capture_sample: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 1.0
    capture_code: bool | None = None  # None: as the pipeline's Capture says
    capture_logs: bool | None = None
    capture_metadata: bool | None = None
    capture_visualizations: bool | None = None
    capture_metrics: bool | None = None
    capture_memory_only: bool | None = None
    cache_ttl: Seconds = 300.0
    cache_size: Annotated[int, msgspec.Meta(ge=0)] = 1024

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser()

    @property
    def effective_capture_url(self) -> str:
        return self.capture_url or f"sqlite://{(self.home_path / 'runs.db').resolve()}"

    @property
    def worker_count(self) -> int:
        """`auto` counts the cores this process may run on (taskset, cgroup cpusets),
        not the machine's: a container pinned to 2 of 64 cores gets 2 workers."""
        if self.workers == "auto":
            return max(1, len(os.sched_getaffinity(0)))
        return self.workers

    @property
    def cors_origin_list(self) -> list[str]:
        """SERVING_CORS_ORIGINS split, each origin as browsers send it (no trailing /)."""
        if not self.cors_origins:
            return []
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def capture_overrides(self) -> dict[str, bool]:
        """SERVING_CAPTURE_<OPTION> values that override the pipeline's Capture."""
        names = ("code", "logs", "metadata", "visualizations", "metrics", "memory_only")
        return {n: v for n in names if (v := getattr(self, f"capture_{n}")) is not None}

    def redacted(self) -> dict[str, Any]:
        """Settings as shown by /status: secrets replaced, never echoed."""
        data = msgspec.structs.asdict(self)
        if data["auth_key"] is not None:
            data["auth_key"] = "***"
        return data


class SettingsError(ValueError):
    """One bad variable; its message is the single line the daemon prints before exit 2."""


def _nullable(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read `SERVING_*` variables (and explicit overrides, e.g. from CLI flags).

    Values are stripped; an empty value means unset (None where the setting allows it,
    else its default).

    Raises SettingsError naming the first bad or unknown variable.
    """
    env = os.environ if environ is None else environ
    fields = {f.name: f for f in msgspec.structs.fields(Settings)}
    values: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :].lower()
        if name not in fields:
            continue  # not ours: ignore rather than fail, other tools may share the prefix
        value = raw.strip()
        if not value:
            # Empty means "not set": the default, or None where None is allowed.
            if _nullable(fields[name].type):
                values[name] = None
            continue
        values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name, raw in values.items():
        if isinstance(raw, str) and name in ("log_level", "log_format", "server", "workers"):
            values[name] = raw.strip().lower()
    try:
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(exc, values)) from None
    check_cors(settings)
    if settings.job_store != "memory":
        from jobs.redis_store import parse_store_url

        try:
            parse_store_url(settings.job_store)
        except ValueError as exc:
            raise SettingsError(f"{PREFIX}JOB_STORE={settings.job_store!r} is invalid: {exc}") from None
    return settings


def check_cors(settings: Settings) -> None:
    """`*` with a key would let any page that obtained a key use it from anywhere; an
    origin that is not `scheme://host[:port]` would never match what a browser sends.
    Checked again once a deployment's own auth key is known."""
    for origin in settings.cors_origin_list:
        if origin == "*":
            if settings.auth_key:
                raise SettingsError(
                    f"{PREFIX}CORS_ORIGINS='*' is not allowed with {PREFIX}AUTH_KEY set:"
                    " list the dashboard origins instead"
                )
            continue
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest or "*" in rest:
            raise SettingsError(
                f"{PREFIX}CORS_ORIGINS={settings.cors_origins!r} is invalid: {origin!r} is not an origin"
                " like https://dash.example.com or http://127.0.0.1:3000"
            )


def _explain(exc: msgspec.ValidationError, values: Mapping[str, Any]) -> str:
    message = str(exc)
    field = None
    if " - at `$." in message:
        message, _, path = message.partition(" - at `$.")
        field = path.rstrip("`").split(".")[0]
    message = message.replace("`", "")
    if field == "workers":  # msgspec would say "Invalid enum value" of a union
        message = "expected a whole number >= 1 or 'auto'"
    if field is None:
        return f"invalid settings: {message}"
    return f"{PREFIX}{field.upper()}={values.get(field)!r} is invalid: {message}"
