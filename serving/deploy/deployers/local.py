"""The `local` flavor: `python -m serving` as a detached process on this machine.

The daemon gets its own session (it outlives the CLI), a port (the preferred one or a
free one) and a log file under `$SERVING_HOME/deployments/<id>/`. Provisioning waits
for `/readyz`; status comes from the pid and a health probe; deprovisioning sends
SIGTERM, waits for the graceful timeout, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from serving.deploy.deployers.base import DeployError, Progress
from serving.deploy.registry import Deployment, DeploymentStatus, Snapshot
from serving.deploy.snapshots import import_root
from serving.home import open_private_append, private_dir

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0  # the daemon's default graceful timeout (30 s) plus its capture flush


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick on the loopback address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int | None) -> bool:
    """Alive and not a zombie; reaps the process if it is our own exited child."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_our_daemon(pid: int, deployment_id: str) -> bool:
    """The pid still belongs to this deployment's daemon (pids get reused)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return True  # cannot tell (no /proc): trust the record
    return f"SERVING_DEPLOYMENT={deployment_id}".encode() in environ.split(b"\0")


class LocalDeployer:
    flavor = "local"

    def __init__(self, home: Path) -> None:
        self.home = home

    def log_path(self, deployment: Deployment) -> Path:
        return self.home / "deployments" / deployment.id / "daemon.log"

    def provision(
        self, deployment: Deployment, snapshot: Snapshot, *, port: int | None, progress: Progress
    ) -> Deployment:
        if port is not None:
            if not port_free(port):
                raise DeployError(f"port {port} is already in use on {HOST}; pick another or omit --port")
        else:
            port = free_port()
        log_path = self.log_path(deployment)
        private_dir(log_path.parent.parent)
        private_dir(log_path.parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
        env.update(
            SERVING_DEPLOYMENT=deployment.id,
            SERVING_HOME=str(self.home),
            SERVING_HOST=HOST,
            SERVING_PORT=str(port),
            SERVING_LOG_FORMAT="json",
        )
        for key in ("SERVING_LOG_LEVEL", "SERVING_SERVER", "SERVING_RUNTIME"):
            if key in os.environ:
                env[key] = os.environ[key]
        progress(f"starting the daemon on {HOST}:{port}")
        with open(log_path, "ab", opener=lambda path, flags: open_private_append(Path(path))) as log:
            proc = subprocess.Popen(
                # -P: the working folder (the snapshot's code) is not put first on sys.path,
                # so no module of the pipeline's folder can shadow one of the daemon's own;
                # the daemon adds it itself once it has imported its own modules.
                [sys.executable, "-P", "-m", "serving"],
                cwd=import_root(snapshot),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://{HOST}:{port}"
        deployment.url = url
        deployment.flavor_data = {
            "pid": proc.pid,
            "port": port,
            "log_path": str(log_path),
            "started_at": time.time(),
        }
        try:
            self._wait_ready(proc, url, log_path, progress)
        except DeployError:
            proc.kill()  # exited already, or never got ready: nothing of it may linger
            proc.wait()
            deployment.flavor_data["pid"] = None
            raise
        deployment.status = DeploymentStatus.RUNNING
        return deployment

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], url: str, log_path: Path, progress: Progress
    ) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        started = time.monotonic()
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                code = proc.poll()
                if code is not None:
                    raise DeployError(
                        f"the daemon exited with status {code} while starting: {_last_line(log_path)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{url}/readyz").status_code == 200:
                        return
                progress(f"waiting for {url}/readyz ({time.monotonic() - started:.1f}s)")
                time.sleep(0.1)
        raise DeployError(f"the daemon was not ready within {READY_TIMEOUT:g}s; see {log_path}")

    def deprovision(self, deployment: Deployment, *, progress: Progress) -> Deployment:
        pid = deployment.flavor_data.get("pid")
        if pid and pid_alive(pid) and _is_our_daemon(pid, deployment.id):
            progress(f"stopping pid {pid} (SIGTERM)")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                progress(f"pid {pid} did not stop in {STOP_TIMEOUT:g}s; SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                while pid_alive(pid):
                    time.sleep(0.05)
        deployment.status = DeploymentStatus.ABSENT
        deployment.flavor_data = {**deployment.flavor_data, "pid": None}
        return deployment

    def status(self, deployment: Deployment) -> str:
        pid = deployment.flavor_data.get("pid")
        if not pid:
            return DeploymentStatus.ABSENT
        if not pid_alive(pid) or not _is_our_daemon(pid, deployment.id):
            return DeploymentStatus.ERROR  # it should run, and it does not
        try:
            r = httpx.get(f"{deployment.url}/readyz", timeout=2.0)
        except httpx.HTTPError:
            return DeploymentStatus.PENDING
        return DeploymentStatus.RUNNING if r.status_code == 200 else DeploymentStatus.PENDING

    def logs(self, deployment: Deployment, *, tail: int | None, follow: bool) -> Iterator[str]:
        path = Path(deployment.flavor_data.get("log_path") or self.log_path(deployment))
        if not path.exists():
            raise DeployError(f"no log file for deployment {deployment.name!r} at {path}")
        with open(path, errors="replace") as f:
            lines = f.readlines()
            for line in lines if tail is None else lines[max(len(lines) - tail, 0) :]:
                yield line.rstrip("\n")
            while follow:
                line = f.readline()
                if line:
                    yield line.rstrip("\n")
                else:
                    time.sleep(0.2)


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:500] if lines else "(empty log)"
