"""The first hour with the deployment CLI (issue 16): what it prints at 80 columns, the
printed commands pasted into a real shell, Ctrl-C on a waiting invoke, provisioning a
deprovisioned deployment again, clean-up, name validation and argparse's edges.

Every command is the real `serving` entry point in a subprocess, talking to real daemons.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from deploy_helpers import CLI_TIMEOUT, SERVING, SHOUT, Home, failure, ok, outputs, url_in, wait_dead
from polling import wait_until

from serving.deploy.deployments import Deployments
from serving.deploy.names import InvalidNameError, validate_name

HELD = f"{Path(__file__).resolve().parent / 'pipelines' / 'held.py'}:held"
BIN = str(Path(SERVING).parent)


def narrow_env(home: Home) -> dict[str, str]:
    """The home's environment on an 80-column terminal, with `serving` on PATH as after
    the README's `. .venv/bin/activate`."""
    env = home.env()
    env.update(COLUMNS="80", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def cli80(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SERVING, *args],
        cwd=home.cwd,
        env=narrow_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def shell(home: Home, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `script` in bash as a user who pasted it would (fails on the first error)."""
    environ = {**narrow_env(home), **env}
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=home.cwd,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a usage error (exit 2), without argparse's usage block."""
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"a usage error in {len(lines)} lines:\n{result.stderr}"
    assert "Traceback" not in result.stderr and result.stdout == ""
    return lines[0]


def section(stdout: str, title: str) -> list[str]:
    """The indented lines under a heading of `describe` (Invoke, Manage)."""
    lines = stdout.splitlines()
    start = lines.index(title) + 1
    body = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        body.append(line.strip())
    return body


@pytest.fixture(scope="module")
def fleet(module_home: Home) -> Home:
    ok(module_home.cli("pipeline", "deploy", SHOUT, "--name", "keyed", "--generate-auth-key"))
    ok(module_home.cli("pipeline", "deploy", HELD, "--name", "held"))
    return module_home


# -- item 2 and 6: describe at 80 columns, and its commands pasted into a shell -------


def test_describe_at_80_columns_cuts_no_id_path_or_url(fleet: Home) -> None:
    dep = fleet.deployment("keyed")
    out = ok(cli80(fleet, "deployment", "describe", "keyed"))
    lines = out.splitlines()
    grid = lines[: lines.index("")]
    fields = dict(re.split(r"\s{2,}", ln.strip(), maxsplit=1) for ln in grid)
    assert len(fields) == len(grid), f"a row was wrapped:\n{out}"
    assert fields["Logs"] == dep.flavor_data["log_path"] and len(fields["Logs"]) > 60
    assert fields["Deployment"] == f"keyed ({dep.id})"
    assert fields["Endpoint"] == f"{dep.url}/invoke"
    snap = fleet.snapshot_of("keyed")
    assert fields["Snapshot"] == f"{snap.name} ({snap.id}), code {snap.code_hash}"


def test_describe_commands_run_as_printed_with_an_auth_key(fleet: Home) -> None:
    out = ok(cli80(fleet, "deployment", "describe", "keyed"))
    invoke = section(out, "Invoke")
    assert fleet.deployment("keyed").auth_key not in out
    assert [ln.split()[0] for ln in invoke] == ["export", "serving", "curl"]
    # pasted as printed: the export fetches the key, the CLI line and the curl line use it
    result = shell(fleet, "\n".join(invoke))
    assert result.returncode == 0, result.stderr
    *cli_lines, curl_out = result.stdout.splitlines()
    assert json.loads("\n".join(cli_lines)) == {"loud": "HEY!"}
    reply = json.loads(curl_out)
    assert reply["success"] is True and reply["outputs"] == {"loud": "HEY!"}, curl_out

    shown = ok(cli80(fleet, "deployment", "describe", "keyed", "--show-secret"))
    curl = next(ln for ln in section(shown, "Invoke") if ln.startswith("curl "))
    reply = json.loads(shell(fleet, curl).stdout)
    assert reply["success"] is True and reply["outputs"] == {"loud": "HEY!"}
    refresh = next(ln for ln in section(out, "Manage") if " refresh " in ln)
    assert "RUNNING" in shell(fleet, refresh).stdout


def test_invoke_async_prints_its_url_on_one_line(fleet: Home) -> None:
    out = ok(cli80(fleet, "deployment", "invoke", "keyed", "--async"))
    assert len(out.splitlines()) == 1, out
    job_id = out.split()[1]
    url = fleet.deployment("keyed").url
    assert out.strip().endswith(f"{url}/jobs/{job_id}")


def test_stream_durations_are_rounded(fleet: Home) -> None:
    result = cli80(fleet, "deployment", "invoke", "keyed", "--stream", "--word=x")
    events = [ln for ln in ok(result).splitlines() if ln.startswith("[")]
    durations = [m for ln in events for m in re.findall(r"duration=(\S+)", ln)]
    assert durations, events
    assert all(re.fullmatch(r"\d+(\.\d)?ms|\d+\.\d\ds", d) for d in durations), durations


# -- item 4: Ctrl-C on --wait and --stream --------------------------------------------


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT,))


class Interruptible:
    """The CLI as a process whose stderr is read as it comes, to interrupt it mid-wait."""

    def __init__(self, home: Home, *args: str) -> None:
        self.proc = subprocess.Popen(
            [SERVING, *args],
            cwd=home.cwd,
            env=narrow_env(home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A runner may start the suite with SIGINT ignored (in the background) or
            # blocked, and children inherit both: a Python started so never raises
            # KeyboardInterrupt. The CLI gets what a terminal gives it.
            preexec_fn=_sigint_default,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def finish(self) -> tuple[int, str]:
        try:
            code = self.proc.wait(CLI_TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        assert self.proc.stdout is not None
        return code, self.proc.stdout.read()


@pytest.mark.parametrize("mode", ["--wait", "--stream"])
def test_ctrl_c_names_the_job_and_how_to_follow_or_cancel_it(fleet: Home, tmp_path: Path, mode: str) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    cli = Interruptible(
        fleet, "deployment", "invoke", "held", mode, f"--started={started}", f"--release={release}"
    )
    try:
        accepted = wait_until(
            lambda: next((ln for ln in cli.lines if ln.startswith("Job ")), None),
            "the CLI to show the accepted job's id",
            timeout=CLI_TIMEOUT,
            detail=lambda: "\n".join(cli.lines),
        )
        wait_until(started.exists, "the job's step to start", timeout=CLI_TIMEOUT)
        job_id = accepted.split()[1]
        cli.proc.send_signal(signal.SIGINT)
        code, _ = cli.finish()
        assert code == 130
        last = [ln for ln in cli.lines if ln.strip()][-1]
        assert "Traceback" not in "\n".join(cli.lines)
        assert last.startswith("serving: interrupted;") and job_id in last, cli.lines
        follow = re.search(r"Follow it: (curl .*?) \| cancel it: (curl .*)$", last)
        assert follow, last
        url = fleet.deployment("held").url
        assert httpx.get(f"{url}/jobs/{job_id}", timeout=10).json()["status"] == "running"

        canceled = shell(fleet, follow.group(2))
        assert canceled.returncode == 0 and json.loads(canceled.stdout)["job_id"] == job_id, canceled
        streamed = shell(fleet, follow.group(1))  # ends with the job's terminal event
        assert streamed.returncode == 0 and "run_canceled" in streamed.stdout, streamed
        job = httpx.get(f"{url}/jobs/{job_id}", params={"wait": 30}, timeout=40).json()
        assert job["status"] == "canceled"
    finally:
        release.touch()  # whatever happened, the step must not hold forever
        if cli.proc.poll() is None:
            cli.proc.kill()
            cli.proc.wait()


# -- item 7: deprovisioned is not a dead end ------------------------------------------


def test_provision_starts_a_deprovisioned_deployment_again(home: Home) -> None:
    url = url_in(ok(home.cli("pipeline", "deploy", SHOUT, "--name", "again", "--generate-auth-key")))
    key = home.deployment("again").auth_key
    ok(home.cli("deployment", "deprovision", "again"))

    error = failure(home.cli("deployment", "invoke", "again"), 1)
    assert "`serving deployment provision again`" in error
    assert "`serving deployment provision again`" in ok(home.cli("deployment", "refresh", "again"))
    manage = section(ok(home.cli("deployment", "describe", "again")), "Manage")
    assert "serving deployment provision again" in manage

    out = ok(home.cli("deployment", "provision", "again"))
    assert url_in(out) == url  # its old port was free: the URL stays
    assert home.deployment("again").auth_key == key
    assert outputs(ok(home.cli("deployment", "invoke", "again", "--word=back"))) == {"loud": "BACK!"}
    assert "already RUNNING" in ok(home.cli("deployment", "provision", "again"))


def test_a_dead_daemon_names_the_commands_that_help(home: Home) -> None:
    ok(home.cli("pipeline", "deploy", SHOUT, "--name", "crashed"))
    pid = home.pid("crashed")
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)

    error = failure(home.cli("deployment", "invoke", "crashed"), 1)
    assert "ERROR" in error and "`serving deployment logs crashed`" in error
    assert "`serving deployment provision crashed`" in error
    refreshed = home.cli("deployment", "refresh", "crashed")
    assert refreshed.returncode == 1 and "`serving deployment provision crashed`" in refreshed.stdout

    ok(home.cli("deployment", "provision", "crashed"))
    assert outputs(ok(home.cli("deployment", "invoke", "crashed"))) == {"loud": "HEY!"}


# -- item 8: clean-up -----------------------------------------------------------------


def test_delete_removes_its_folder_and_its_own_snapshots(home: Home) -> None:
    ok(home.cli("pipeline", "snapshot", "create", "--name", "mine", SHOUT))
    mine = home.registry.get_snapshot("mine")
    ok(home.cli("pipeline", "snapshot", "deploy", "mine", "--deployment", "from-mine"))
    ok(home.cli("pipeline", "deploy", SHOUT, "--name", "owner"))
    owner, from_mine = home.deployment("owner"), home.deployment("from-mine")
    owned = home.snapshot_of("owner")
    for dep in (owner, from_mine):
        assert (home.path / "deployments" / dep.id / "daemon.log").exists()

    refused = failure(home.cli("pipeline", "snapshot", "delete", "mine"), 1)
    assert "'from-mine'" in refused and "`serving deployment delete from-mine`" in refused
    assert (home.path / "snapshots" / mine.id / "code").is_dir()

    ok(home.cli("deployment", "delete", "owner", "--force"))
    assert not (home.path / "deployments" / owner.id).exists()
    assert not (home.path / "snapshots" / owned.id).exists()
    assert [s.name for s in home.registry.list_snapshots()] == ["mine"]

    ok(home.cli("deployment", "delete", "from-mine", "--force"))
    assert not (home.path / "deployments" / from_mine.id).exists()
    assert (home.path / "snapshots" / mine.id).is_dir()  # made by the user: kept

    ok(home.cli("pipeline", "snapshot", "delete", "mine"))
    assert home.registry.list_snapshots() == []
    assert not (home.path / "snapshots" / mine.id).exists()
    assert "no snapshot" in failure(home.cli("pipeline", "snapshot", "delete", "mine"), 1)


# -- item 9: names and argparse's edges -----------------------------------------------

BAD_NAMES = ["my dep/1", "Upper", "under_score", "-lead", "trail-", "x" * 64, "dot.ted"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_deployment_names_are_usage_errors(home: Home, name: str) -> None:
    line = usage_error(home.cli("pipeline", "deploy", SHOUT, f"--name={name}"))
    assert repr(name) in line and "lowercase letters, digits and '-'" in line
    line = usage_error(home.cli("pipeline", "snapshot", "deploy", "any", f"--deployment={name}"))
    assert repr(name) in line
    assert home.registry.list_snapshots() == []  # refused before anything was made


def test_names_are_checked_for_the_sdk_too(tmp_path: Path) -> None:
    assert validate_name("a") == "a" and validate_name("a-1") == "a-1"
    assert validate_name("x" * 63) == "x" * 63
    for name in [*BAD_NAMES, ""]:
        with pytest.raises(InvalidNameError):
            validate_name(name)
    with pytest.raises(InvalidNameError, match="'Bad Name'"):
        Deployments(tmp_path).deploy(SHOUT, "Bad Name")
    assert not (tmp_path / "snapshots").exists()


def test_bare_serving_prints_help() -> None:
    result = subprocess.run(
        [SERVING], capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0 and result.stdout.startswith("usage: serving")
    assert "serve" in result.stdout and "deployment" in result.stdout


@pytest.mark.parametrize("argv", [[sys.executable, "-m", "serving"], [SERVING, "serve"]])
def test_python_m_serving_and_serve_start_the_daemon(tmp_path: Path, argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env["SERVING_HOME"] = str(tmp_path)
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=CLI_TIMEOUT)
    # no pipeline named: the daemon's own start-up check answers, not the help
    assert result.returncode == 2 and "SERVING_PIPELINE is not set" in result.stderr


@pytest.mark.parametrize(
    ("args", "verbs"),
    [
        (["deployment"], ["list", "describe", "invoke", "provision", "delete"]),
        (["pipeline"], ["deploy", "snapshot"]),
        (["pipeline", "snapshot"], ["create", "list", "deploy", "delete"]),
        (["runs"], ["list", "show"]),
    ],
)
def test_a_group_without_its_verb_lists_the_verbs_in_one_line(
    home: Home, args: list[str], verbs: list[str]
) -> None:
    line = usage_error(home.cli(*args))
    assert line.startswith(f"serving {' '.join(args)}: error: ")
    assert all(verb in line for verb in verbs) and "_command" not in line


def test_usage_errors_are_one_line(home: Home) -> None:
    assert "--tail" in usage_error(home.cli("deployment", "logs", "x", "--tail", "-1"))
    assert "--bogus" in usage_error(home.cli("runs", "list", "--bogus"))
    assert "name" in usage_error(home.cli("deployment", "describe"))
    assert "'nope'" in usage_error(home.cli("nope"))


def test_help_says_how_to_pass_parameters_and_lists_flavors(home: Home) -> None:
    invoke = ok(cli80(home, "deployment", "invoke", "--help"))
    assert "--name=value" in invoke
    deploy = ok(cli80(home, "pipeline", "deploy", "--help"))
    assert re.search(r"--flavor \{[a-z,]*local[a-z,]*\}", deploy), deploy
    assert "docker" in deploy and "kubernetes" in deploy
    logs = ok(cli80(home, "deployment", "logs", "--help"))
    assert re.search(r"-f, --follow\s+\S", logs), logs


def test_every_argument_has_help() -> None:
    import argparse

    from serving.cli import build_parser

    missing = []
    pending: list[argparse.ArgumentParser] = [build_parser()]
    while pending:
        parser = pending.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif not action.help and not isinstance(action, argparse._HelpAction):
                missing.append(f"{parser.prog} {action.dest}")
    assert missing == []
