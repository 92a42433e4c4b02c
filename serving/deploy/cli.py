"""`serving pipeline ...` and `serving deployment ...`: snapshots and deployments.

Exit status: 0 done, 1 the operation failed, 2 a usage error. Every error is one line.
Long waits show a spinner on stderr; results go to stdout.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from serving.cli_common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail, int_at_least, styled_status, when
from serving.deploy.client import ServingError
from serving.deploy.deployers import DeployError, available_flavors
from serving.deploy.deployments import Deployments, DeployOptions
from serving.deploy.names import InvalidNameError, validate_name
from serving.deploy.registry import Deployment, DeploymentStatus, RegistryError, Snapshot
from serving.deploy.render import TARGETS, RenderError, RenderOptions, cloud_run, render, spec_for, write
from serving.deploy.snapshots import SnapshotError
from serving.loader import PipelineLoadError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class UsageError(Exception):
    pass


class _Spinner:
    """Progress for long waits: a live status line on a terminal, plain lines otherwise."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._status: Any = None
        self._last = ""

    def __enter__(self) -> Callable[[str], None]:
        if err.is_terminal:
            self._status = err.status(self.title)
            self._status.__enter__()
        else:
            err.print(self.title, markup=False)
        return self.update

    def update(self, message: str) -> None:
        if self._status is not None:
            self._status.update(f"{self.title}: {message}")
        elif message.split(" (")[0] != self._last:  # keep logs short: no per-tick lines
            self._last = message.split(" (")[0]
            err.print(f"  {message}", markup=False)

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)


# -- pipeline ... ---------------------------------------------------------------------------


def _deploy_options(a: argparse.Namespace) -> DeployOptions:
    """The options `_add_deploy_options` defines (one flag per DeployOptions field)."""
    return DeployOptions(**{name: getattr(a, name) for name in DeployOptions.__struct_fields__})


def cmd_pipeline_deploy(svc: Deployments, a: argparse.Namespace) -> int:
    with _Spinner(f"deploying {a.name!r}") as progress:
        dep = svc.deploy(a.source, a.name, _deploy_options(a), progress=progress)
    _deployed(dep)
    return EXIT_OK


def _deployed(dep: Deployment) -> None:
    out.print(f"Deployment [bold]{dep.name}[/] is {styled_status(dep.status)} at {dep.url}")
    if dep.auth_key:
        out.print("It requires a bearer token: `serving deployment describe --show-secret " + dep.name + "`")
    out.print(f"Try: serving deployment describe {dep.name}")


def cmd_snapshot_create(svc: Deployments, a: argparse.Namespace) -> int:
    snap = svc.create_snapshot(a.name, a.source)
    out.print(
        f"Snapshot [bold]{snap.name}[/] ({snap.id}) of pipeline {snap.pipeline_name}, code {snap.code_hash}"
    )
    return EXIT_OK


def cmd_snapshot_list(svc: Deployments, a: argparse.Namespace) -> int:
    table = Table(title="Snapshots", title_justify="left")
    for col in ("NAME", "PIPELINE", "CODE", "CREATED"):
        table.add_column(col, overflow="fold")
    for s in svc.registry.list_snapshots():
        table.add_row(s.name, s.pipeline_name, s.code_hash[:8], when(s.created_at))
    out.print(table)
    return EXIT_OK


def cmd_snapshot_deploy(svc: Deployments, a: argparse.Namespace) -> int:
    with _Spinner(f"deploying snapshot {a.snapshot!r} as {a.deployment!r}") as progress:
        dep = svc.deploy_snapshot(a.snapshot, a.deployment, _deploy_options(a), progress=progress)
    _deployed(dep)
    return EXIT_OK


# -- deployment ... -------------------------------------------------------------------------


def cmd_list(svc: Deployments, a: argparse.Namespace) -> int:
    table = Table(title="Deployments", title_justify="left")
    table.add_column("NAME", overflow="fold")
    table.add_column("PIPELINE", overflow="fold")
    table.add_column("URL", overflow="fold")
    table.add_column("STATUS")
    for dep in svc.list():
        dep = svc.refresh(dep.id)
        snap = _snapshot_or_none(svc, dep)
        table.add_row(
            dep.name, snap.pipeline_name if snap else "?", dep.url or "-", styled_status(dep.status)
        )
    out.print(table)
    return EXIT_OK


def _snapshot_or_none(svc: Deployments, dep: Deployment) -> Snapshot | None:
    try:
        return svc.registry.get_snapshot(dep.snapshot_id)
    except RegistryError:
        return None


def example_parameters(snap: Snapshot) -> dict[str, Any]:
    body = snap.input_schema.get("$defs", {}).get("PipelineInput", {})
    return {k: v.get("default") for k, v in body.get("properties", {}).items()}


def cmd_describe(svc: Deployments, a: argparse.Namespace) -> int:
    if a.key_only:  # for `export SERVING_AUTH_KEY=$(...)`: the key alone, or nothing
        dep = svc.get(a.name)
        if dep.auth_key:
            print(dep.auth_key)
        return EXIT_OK
    dep = svc.refresh(a.name)
    snap = _snapshot_or_none(svc, dep)
    key = dep.auth_key if a.show_secret else ("set (--show-secret to print)" if dep.auth_key else "none")
    rows = [
        ("Deployment", f"{dep.name} ({dep.id})"),
        ("Status", styled_status(dep.status)),
        ("Pipeline", snap.pipeline_name if snap else "? (snapshot missing)"),
        ("Snapshot", f"{snap.name} ({snap.id}), code {snap.code_hash}" if snap else dep.snapshot_id),
        ("Source", snap.origin if snap else "?"),
        ("Flavor", dep.flavor),
        ("Endpoint", f"{dep.url}/invoke" if dep.url else "-"),
        ("Docs", f"{dep.url}/docs" if dep.url else "-"),
        ("Auth key", key or "none"),
        ("PID", str(dep.flavor_data.get("pid") or "-")),
        ("Logs", str(dep.flavor_data.get("log_path") or "-")),
        *[
            (label, str(dep.flavor_data[key]))
            for label, key in (("Container", "container_name"), ("Image", "image"), ("Volume", "volume"))
            if dep.flavor_data.get(key)
        ],
        *([("Error", str(dep.flavor_data["error"]))] if dep.flavor_data.get("error") else []),
        ("Created", when(dep.created_at)),
        ("Updated", when(dep.updated_at)),
    ]
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        # One line each, never folded: ids, paths and URLs are what a reader copies.
        shown = value if label == "Status" else escape(value)
        out.print(f"[bold]{label}[/]{' ' * (width - len(label))}{shown}", soft_wrap=True)
    if snap is not None:
        params = example_parameters(snap)
        cli_args = " ".join(
            f"--{k}={shlex.quote(json.dumps(v) if not isinstance(v, str) else v)}" for k, v in params.items()
        )
        auth = ""
        if dep.auth_key:
            # Double quotes, so the shell expands the variable; a shown key is quoted as is.
            header = shlex.quote(f"Authorization: Bearer {dep.auth_key}")
            auth = f" -H {header}" if a.show_secret else ' -H "Authorization: Bearer $SERVING_AUTH_KEY"'
        body = json.dumps({"parameters": params})
        out.print("\n[bold]Invoke[/]")
        if dep.auth_key and not a.show_secret:
            out.print(
                f"  export SERVING_AUTH_KEY=$(serving deployment describe {dep.name}"
                " --show-secret --key-only)",
                markup=False,
                soft_wrap=True,
            )
        out.print(f"  serving deployment invoke {dep.name} {cli_args}".rstrip(), markup=False, soft_wrap=True)
        out.print(
            f"  curl -s {dep.url}/invoke -H 'content-type: application/json'{auth} -d {shlex.quote(body)}",
            markup=False,
            soft_wrap=True,  # one line, so it can be copied
        )
        if a.show_schema:
            out.print("\n[bold]Input schema[/]")
            out.print_json(data=snap.input_schema)
            out.print("[bold]Output schema[/]")
            out.print_json(data=snap.output_schema)
    out.print("\n[bold]Manage[/]")
    running = dep.status in (DeploymentStatus.RUNNING, DeploymentStatus.PENDING)
    for verb in ("logs -f", "refresh", "deprovision" if running else "provision", "delete"):
        out.print(f"  serving deployment {verb} {dep.name}", markup=False)
    return EXIT_OK


def _schema_types(snap: Snapshot) -> dict[str, Any]:
    body = snap.input_schema.get("$defs", {}).get("PipelineInput", {})
    return dict(body.get("properties", {}))


def _kinds(prop: dict[str, Any]) -> set[str]:
    if "type" in prop:
        t = prop["type"]
        return set(t) if isinstance(t, list) else {t}
    kinds: set[str] = set()
    for alt in prop.get("anyOf", []) + prop.get("oneOf", []):
        kinds |= _kinds(alt)
    if "$ref" in prop or ("enum" in prop and not kinds):
        kinds.add("json" if "$ref" in prop else "string")
    return kinds or {"json"}


def convert(name: str, raw: str, prop: dict[str, Any]) -> Any:
    """Turn `--name=raw` into the JSON type the input schema gives the parameter."""
    kinds = _kinds(prop)
    if "null" in kinds and raw.lower() in ("null", "none"):
        return None
    if "boolean" in kinds:
        if raw.lower() in ("true", "1", "yes", "on"):
            return True
        if raw.lower() in ("false", "0", "no", "off"):
            return False
    if "integer" in kinds:
        try:
            return int(raw)
        except ValueError:
            pass
    if "number" in kinds:
        try:
            return float(raw)
        except ValueError:
            pass
    if kinds & {"array", "object", "json"}:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            pass
    if "string" in kinds:
        return raw
    raise UsageError(f"--{name}={raw!r} is not a valid {' or '.join(sorted(kinds))}")


def parse_params(extra: list[str], snap: Snapshot) -> dict[str, Any]:
    props = _schema_types(snap)
    params: dict[str, Any] = {}
    items = iter(extra)
    for item in items:
        if not item.startswith("--") or item == "--":
            raise UsageError(f"unexpected argument {item!r}; pass parameters as --name=value")
        name, eq, raw = item[2:].partition("=")
        if not eq:
            raw = next(items, None)  # type: ignore[assignment]
            if raw is None:
                raise UsageError(f"--{name} needs a value")
        key = name.replace("-", "_") if name not in props else name
        if key not in props:
            known = ", ".join(f"--{k}" for k in props) or "none"
            raise UsageError(f"unknown parameter --{name} (parameters: {known})")
        params[key] = convert(key, raw, props[key])
    return params


def cmd_invoke(svc: Deployments, a: argparse.Namespace, extra: list[str]) -> int:
    dep = svc.get(a.name)
    snap = svc.registry.get_snapshot(dep.snapshot_id)
    params = parse_params(extra, snap)
    if dep.status == DeploymentStatus.ABSENT and not dep.flavor_data.get("pid"):
        raise DeployError(
            f"deployment {dep.name!r} is deprovisioned;"
            f" start it with `serving deployment provision {dep.name}`"
        )
    with svc.client(dep.id) as client:
        if not (a.async_ or a.wait or a.stream):
            reply = client.invoke(params, timeout=a.timeout)
            out.print_json(data=reply["outputs"])
            return EXIT_OK
        job = client.submit(params)
        job_id = job["job_id"]
        if a.async_ and not (a.wait or a.stream):
            print(f"Job {job_id} {job['status']}: {dep.url}{job['location']}", flush=True)  # never wrapped
            return EXIT_OK
        # stderr: stdout stays the outputs (and events), for scripts
        print(f"Job {job_id} {job['status']}: {dep.url}{job['location']}", file=sys.stderr, flush=True)
        try:
            if a.stream:
                for event in client.stream(job_id):
                    print(_event_line(event), flush=True)
            final = client.wait(job_id, timeout=a.timeout)
        except KeyboardInterrupt:
            print(_interrupted(dep, job_id), file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
    result = final.get("result") or {}
    if final["status"] != "completed":
        raise DeployError(
            f"job {final['job_id']} {final['status']}: {final.get('error') or result.get('error')}"
        )
    out.print_json(data=result.get("outputs"))
    return EXIT_OK


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def _interrupted(dep: Deployment, job_id: str) -> str:
    """The one line Ctrl-C leaves: the job goes on in the daemon, so say how to reach it."""
    auth = ' -H "Authorization: Bearer $SERVING_AUTH_KEY"' if dep.auth_key else ""
    return (
        f"serving: interrupted; job {job_id} is still running."
        f" Follow it: curl -sN{auth} {dep.url}/stream/{job_id}"
        f" | cancel it: curl -s -X POST{auth} {dep.url}/jobs/{job_id}/cancel"
    )


def _event_line(event: dict[str, Any]) -> str:
    details = [f"{k}={_readable(k, v)}" for k, v in event.items() if k not in ("type", "seq", "run_id", "ts")]
    return f"[{event.get('seq')}] {event.get('type')} " + " ".join(details)


def _readable(key: str, value: Any) -> str:
    """A float as a person reads it: durations in ms or s, other fractions to 3 places."""
    if not isinstance(value, float):
        return str(value)
    if "duration" in key or key.endswith("time"):
        return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"
    return f"{round(value, 3):g}"


def cmd_logs(svc: Deployments, a: argparse.Namespace) -> int:
    lines: Iterator[str] = svc.logs(a.name, tail=a.tail, follow=a.follow)
    try:
        for line in lines:
            print(line, flush=True)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def cmd_deprovision(svc: Deployments, a: argparse.Namespace) -> int:
    with _Spinner(f"deprovisioning {a.name!r}") as progress:
        dep = svc.deprovision(a.name, progress)
    out.print(f"Deployment [bold]{dep.name}[/] is {styled_status(dep.status)}")
    return EXIT_OK


def cmd_delete(svc: Deployments, a: argparse.Namespace) -> int:
    with _Spinner(f"deleting {a.name!r}") as progress:
        svc.delete(a.name, force=a.force, progress=progress)
    out.print(f"Deployment [bold]{a.name}[/] deleted")
    return EXIT_OK


def cmd_refresh(svc: Deployments, a: argparse.Namespace) -> int:
    dep = svc.refresh(a.name)
    status = styled_status(dep.status)
    out.print(f"Deployment [bold]{dep.name}[/] is {status}{escape(_next_step(dep))}", soft_wrap=True)
    return EXIT_OK if dep.status != DeploymentStatus.ERROR else EXIT_FAILED


def _render_options(a: argparse.Namespace) -> RenderOptions:
    """The options `_add_render_options` defines (one flag per RenderOptions field);
    a flag left out keeps the target's default."""
    values = {name: getattr(a, name) for name in RenderOptions.__struct_fields__}
    env: dict[str, str] = {}
    for item in values.pop("env") or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    return RenderOptions(**{k: v for k, v in values.items() if v is not None}, env=env)


def cmd_render(svc: Deployments, a: argparse.Namespace) -> int:
    dep = svc.get(a.name)
    snap = svc.registry.get_snapshot(dep.snapshot_id)
    spec = spec_for(a.flavor, dep, snap, _render_options(a))
    files = render(a.flavor, spec)
    apply = TARGETS[a.flavor].apply
    if a.output is None:
        print("---\n".join(files.values()), end="", flush=True)  # one stream kubectl/gcloud can read
        target = "-" if a.flavor == "kubernetes" else "FILE"
        err.print(f"Apply with: {apply.format(path=target)}", markup=False)
    else:
        paths = write(files, Path(a.output))
        for path in paths:
            out.print(f"Wrote {path}", markup=False)
        target = str(Path(a.output)) if len(paths) > 1 else str(paths[0])
        out.print(f"Apply with: {apply.format(path=target)}", markup=False, soft_wrap=True)
    if a.flavor == "gcp-cloud-run" and dep.auth_key:
        name = cloud_run.secret_name(spec)
        err.print(
            f"The auth key is read from Secret Manager secret {name!r}; create it once with: "
            f"serving deployment describe --show-secret {dep.name}, then "
            f"printf %s KEY | gcloud secrets create {name} --data-file=-",
            markup=False,
            soft_wrap=True,
        )
    return EXIT_OK


def _next_step(dep: Deployment) -> str:
    """What to run next for a deployment that does not serve: no status is a dead end."""
    if dep.status == DeploymentStatus.ABSENT:
        return f"; start it with `serving deployment provision {dep.name}`"
    if dep.status == DeploymentStatus.ERROR:
        return (
            f"; its process is gone: see `serving deployment logs {dep.name}`,"
            f" then `serving deployment provision {dep.name}`"
        )
    if dep.status == DeploymentStatus.PENDING:
        return f"; it is starting (or not ready): `serving deployment logs {dep.name} -f`"
    return ""


def cmd_provision(svc: Deployments, a: argparse.Namespace) -> int:
    dep = svc.refresh(a.name)
    if dep.status in (DeploymentStatus.RUNNING, DeploymentStatus.PENDING):
        out.print(f"Deployment [bold]{dep.name}[/] is already {styled_status(dep.status)} at {dep.url}")
        return EXIT_OK
    with _Spinner(f"provisioning {a.name!r}") as progress:
        dep = svc.provision(dep.id, port=a.port, progress=progress)
    _deployed(dep)
    return EXIT_OK


def cmd_snapshot_delete(svc: Deployments, a: argparse.Namespace) -> int:
    snap = svc.delete_snapshot(a.snapshot)
    out.print(f"Snapshot [bold]{escape(snap.name)}[/] ({snap.id}) deleted", soft_wrap=True)
    return EXIT_OK


# -- argparse -------------------------------------------------------------------------------


def _name_arg(text: str) -> str:
    """argparse type for a new deployment's name: a bad one is a usage error saying why."""
    try:
        return validate_name(text)
    except InvalidNameError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


NAME_HELP = "deployment name: lowercase letters, digits and '-', at most 63 characters"
EXISTING_HELP = "the deployment's name (or id); `serving deployment list` shows them"


def _add_deploy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, help="preferred port (default: a free one)")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--auth-key", help="require this bearer token")
    keys.add_argument("--generate-auth-key", action="store_true", help="require a generated bearer token")
    p.add_argument("--update", action="store_true", help="replace an existing deployment of that name")
    flavors = available_flavors()
    p.add_argument(
        "--flavor",
        default="local",
        metavar="{" + ",".join(flavors) + "}",
        help=f"where it runs: one of {', '.join(flavors)} (default: local)",
    )
    p.add_argument("--base-image", help="docker: image to build on (default: python:3.11-slim)")
    p.add_argument(
        "--network", help="docker: 'host' to run on the host's network (default: publish on 127.0.0.1)"
    )


def _add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--image", help="container image (default: serving-<name>:<snapshot>, as --flavor docker builds)"
    )
    p.add_argument("--port", type=int_at_least(1), help="container port (default: 8000)")
    p.add_argument("--replicas", type=int_at_least(1), help="replicas (minimum instances) (default: 1)")
    p.add_argument(
        "--max-replicas", type=int_at_least(1), help="the autoscaler's ceiling (default: --replicas)"
    )
    p.add_argument(
        "--job-store", help="SERVING_JOB_STORE, e.g. redis://HOST:6379/0; needed beyond one replica"
    )
    p.add_argument("--namespace", help="Kubernetes namespace (default: kubectl's)")
    p.add_argument("--cpu", help="CPU in the platform's units (500m; 1; '1 vCPU')")
    p.add_argument("--memory", help="memory in the platform's units (512Mi; '2 GB')")
    p.add_argument("--drain-delay", type=float, help="SERVING_DRAIN_DELAY seconds")
    p.add_argument("--graceful-timeout", type=float, help="SERVING_GRACEFUL_TIMEOUT seconds")
    p.add_argument(
        "--max-concurrency",
        type=int_at_least(1),
        help="SERVING_MAX_CONCURRENCY (Cloud Run: containerConcurrency)",
    )
    p.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="another variable, e.g. SERVING_CAPTURE_URL=... (repeat)",
    )
    p.add_argument("--auth-secret", help="Cloud Run: Secret Manager secret name; App Runner: secret ARN")
    p.add_argument("--access-role-arn", help="App Runner: role that may pull a private ECR image")
    p.add_argument("--auto-scaling-arn", help="App Runner: auto scaling configuration ARN")


def add_parsers(sub: Any) -> None:
    pipe = sub.add_parser("pipeline", help="deploy pipelines and manage snapshots")
    pipe_sub = pipe.add_subparsers(dest="pipeline_command", required=True, metavar="COMMAND")
    deploy = pipe_sub.add_parser("deploy", help="snapshot a pipeline and run it as a deployment")
    deploy.add_argument("source", help="module:attr or path/file.py:attr")
    deploy.add_argument("--name", required=True, type=_name_arg, help=NAME_HELP)
    _add_deploy_options(deploy)
    deploy.set_defaults(handler=cmd_pipeline_deploy)
    snap = pipe_sub.add_parser("snapshot", help="create, list, deploy and delete snapshots")
    snap_sub = snap.add_subparsers(dest="snapshot_command", required=True, metavar="COMMAND")
    create = snap_sub.add_parser("create", help="freeze a pipeline's code and schemas")
    create.add_argument("source", help="module:attr or path/file.py:attr")
    create.add_argument("--name", required=True, help="snapshot name")
    create.set_defaults(handler=cmd_snapshot_create)
    snap_sub.add_parser("list", help="all snapshots").set_defaults(handler=cmd_snapshot_list)
    sdeploy = snap_sub.add_parser("deploy", help="run a snapshot as a deployment")
    sdeploy.add_argument("snapshot", help="snapshot name or id")
    sdeploy.add_argument("--deployment", required=True, type=_name_arg, help=NAME_HELP)
    _add_deploy_options(sdeploy)
    sdeploy.set_defaults(handler=cmd_snapshot_deploy)
    sdelete = snap_sub.add_parser("delete", help="remove a snapshot and its code (refused while deployed)")
    sdelete.add_argument("snapshot", help="snapshot name or id (`serving pipeline snapshot list`)")
    sdelete.set_defaults(handler=cmd_snapshot_delete)

    dep = sub.add_parser("deployment", help="list, describe, invoke and manage deployments")
    dep_sub = dep.add_subparsers(dest="deployment_command", required=True, metavar="COMMAND")
    dep_sub.add_parser("list", help="all deployments and their observed status").set_defaults(
        handler=cmd_list
    )
    describe = dep_sub.add_parser("describe", help="status, endpoint, examples, schemas")
    describe.add_argument("name", help=EXISTING_HELP)
    describe.add_argument(
        "--show-schema", action="store_true", help="print the input and output JSON Schemas"
    )
    describe.add_argument("--show-secret", action="store_true", help="print the auth key")
    describe.add_argument(
        "--key-only", action="store_true", help="print only the auth key (nothing if none), for scripts"
    )
    describe.set_defaults(handler=cmd_describe)
    invoke = dep_sub.add_parser(
        "invoke",
        help="run it: serving deployment invoke NAME --param=value ...",
        usage="serving deployment invoke NAME [--PARAM=VALUE ...]"
        " [--async | --wait | --stream] [--timeout S]",
        description="Run the deployment's pipeline. Its parameters go as --name=value (or --name value),"
        " one per parameter, typed by its input schema: numbers, true/false, JSON for lists and"
        " objects. `serving deployment describe NAME` shows an example.",
    )
    invoke.add_argument("name", help=EXISTING_HELP)
    invoke.add_argument("--async", dest="async_", action="store_true", help="submit a job and print its id")
    invoke.add_argument("--wait", action="store_true", help="submit a job and wait for its result")
    invoke.add_argument("--stream", action="store_true", help="submit a job and print its events live")
    invoke.add_argument("--timeout", type=float, help="seconds to wait for the result")
    invoke.set_defaults(handler=cmd_invoke, takes_extra=True)
    logs = dep_sub.add_parser("logs", help="the daemon's log")
    logs.add_argument("name", help=EXISTING_HELP)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    logs.add_argument("--tail", type=int_at_least(0), help="only the last N lines (0: none, with --follow)")
    logs.set_defaults(handler=cmd_logs)
    for verb, helptext, fn in (
        ("deprovision", "stop it (SIGTERM, then SIGKILL after the graceful timeout)", cmd_deprovision),
        ("refresh", "probe the process and record its status", cmd_refresh),
    ):
        p = dep_sub.add_parser(verb, help=helptext)
        p.add_argument("name", help=EXISTING_HELP)
        p.set_defaults(handler=fn)
    rend = dep_sub.add_parser(
        "render", help="write what a platform applies: Kubernetes manifests, Cloud Run YAML, App Runner JSON"
    )
    rend.add_argument("name", help=EXISTING_HELP)
    rend.add_argument("--flavor", required=True, choices=list(TARGETS), help="the platform")
    rend.add_argument("-o", "--output", metavar="DIR", help="write the files into DIR (default: print them)")
    _add_render_options(rend)
    rend.set_defaults(handler=cmd_render)
    provision = dep_sub.add_parser("provision", help="start it again from its snapshot (after deprovision)")
    provision.add_argument("name", help=EXISTING_HELP)
    provision.add_argument("--port", type=int, help="port to use (default: its previous one if free)")
    provision.set_defaults(handler=cmd_provision)
    delete = dep_sub.add_parser("delete", help="remove it, its log folder and the snapshots made for it")
    delete.add_argument("name", help=EXISTING_HELP)
    delete.add_argument("--force", action="store_true", help="deprovision first if it is running")
    delete.set_defaults(handler=cmd_delete)


def _unreachable(svc: Deployments, name: str, exc: httpx.HTTPError) -> str:
    """Why a deployment did not answer, and the command that helps (not just `refresh`)."""
    try:
        dep = svc.refresh(name)
    except Exception:  # the registry itself is the problem: say what we know
        return f"cannot reach deployment {name!r}: {exc}"
    hint = _next_step(dep) or f"; it is RUNNING again, retry (`serving deployment logs {dep.name}`)"
    return f"cannot reach deployment {name!r} at {dep.url}: {exc}; it is {dep.status}{hint}"


def run(args: argparse.Namespace, extra: list[str]) -> int:
    try:
        svc = Deployments()
        if getattr(args, "takes_extra", False):
            return int(args.handler(svc, args, extra))
        if extra:
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
        return int(args.handler(svc, args))
    except (UsageError, RenderError, InvalidNameError) as exc:
        return fail(str(exc), EXIT_USAGE)
    except (RegistryError, SnapshotError, DeployError, PipelineLoadError, ServingError) as exc:
        return fail(str(exc), EXIT_FAILED)
    except httpx.HTTPError as exc:
        return fail(_unreachable(svc, getattr(args, "name", "?"), exc), EXIT_FAILED)
    except OSError as exc:
        return fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return 130
