"""A third-party deployer flavor: a tiny package that declares one under the
`serving.deployers` entry-point group is installed into a venv of its own (which sees
this project through a .pth file, so nothing is installed into the test venv), and the
whole CLI life cycle runs through it: deploy, list, describe, invoke, logs, deprovision,
delete. A broken plug-in is one error line naming its package."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_helpers import CLI_TIMEOUT, SHOUT, Home, failure, ok, outputs, table

from serving.deploy.deployers import available_flavors

PACKAGE = "serving_tiny_flavor"
DIST = "serving_tiny_flavor-0.1"

# The plug-in: the local flavor's process handling, with its own name, a marker line in
# the log and its own flavor_data, so the test can tell its code ran.
MODULE = '''
"""A tiny deployer flavor, as a third party would write one."""

from pathlib import Path

from serving.deploy.deployers.local import LocalDeployer


class TinyDeployer(LocalDeployer):
    flavor = "tiny"

    def provision(self, deployment, snapshot, *, port, progress):
        progress("tiny: provisioning")
        log = self.log_path(deployment)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"tiny-flavor: provisioning {deployment.name} from snapshot {snapshot.name}\\n")
        deployment = super().provision(deployment, snapshot, port=port, progress=progress)
        deployment.flavor_data["tiny"] = True
        return deployment

    def deprovision(self, deployment, *, progress):
        with open(self.log_path(deployment), "a") as f:
            f.write(f"tiny-flavor: deprovisioning {deployment.name}\\n")
        return super().deprovision(deployment, progress=progress)
'''

ENTRY_POINTS = f"""[serving.deployers]
tiny = {PACKAGE}:TinyDeployer
tiny-broken = {PACKAGE}:NoSuchDeployer
"""


def build_wheel(folder: Path) -> Path:
    """A pure-Python wheel of the plug-in, written by hand: no build backend needed."""
    files = {
        f"{PACKAGE}/__init__.py": MODULE,
        f"{DIST}.dist-info/METADATA": "Metadata-Version: 2.1\nName: serving-tiny-flavor\nVersion: 0.1\n",
        f"{DIST}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{DIST}.dist-info/entry_points.txt": ENTRY_POINTS,
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{DIST}.dist-info/RECORD,,")
    files[f"{DIST}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{DIST}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The python of a venv with the plug-in installed by pip, seeing this project's
    packages (serving, its dependencies) through a .pth file."""
    base = tmp_path_factory.mktemp("plugin")
    venv = base / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=CLI_TIMEOUT
    )
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(purelib, "_serving_project.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    wheel = build_wheel(base)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            wheel,
        ],
        check=True,
        capture_output=True,
        timeout=CLI_TIMEOUT,
    )
    yield python


def cli(home: Home, python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "serving", *args],
        cwd=home.cwd,
        env=home.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def test_the_plugin_is_only_in_its_venv(plugin_python: Path, home: Home) -> None:
    assert "tiny" not in available_flavors()  # nothing leaked into the test venv
    help_text = " ".join(cli(home, plugin_python, "pipeline", "deploy", "--help").stdout.split())
    assert "where it runs: one of docker, kubernetes, local, tiny, tiny-broken" in help_text


def test_life_cycle_through_a_custom_flavor(plugin_python: Path, home: Home) -> None:
    # deploy
    out = ok(cli(home, plugin_python, "pipeline", "deploy", SHOUT, "--name", "mine", "--flavor", "tiny"))
    assert "RUNNING" in out
    record = home.deployment("mine")
    assert record.flavor == "tiny" and record.flavor_data.get("tiny") is True

    # list and describe
    rows = table(ok(cli(home, plugin_python, "deployment", "list")))
    assert rows["mine"] == ["shout", record.url, "RUNNING"]
    described = ok(cli(home, plugin_python, "deployment", "describe", "mine"))
    assert any(line.split() == ["Flavor", "tiny"] for line in described.splitlines())

    # invoke
    reply = ok(cli(home, plugin_python, "deployment", "invoke", "mine", "--word=plug"))
    assert outputs(reply) == {"loud": "PLUG!"}

    # logs: the plug-in's own line, then the daemon's
    logs = ok(cli(home, plugin_python, "deployment", "logs", "mine")).splitlines()
    assert logs[0].startswith("tiny-flavor: provisioning mine from snapshot ")
    assert any('"ready"' in line for line in logs[1:])

    # deprovision, then delete
    assert "ABSENT" in ok(cli(home, plugin_python, "deployment", "deprovision", "mine"))
    assert home.deployment("mine").status == "ABSENT"
    assert "tiny-flavor: deprovisioning mine" in ok(cli(home, plugin_python, "deployment", "logs", "mine"))
    ok(cli(home, plugin_python, "deployment", "delete", "mine"))
    assert home.registry.find_deployment("mine") is None


def test_a_broken_plugin_is_one_line(plugin_python: Path, home: Home) -> None:
    result = cli(home, plugin_python, "pipeline", "deploy", SHOUT, "--name", "bad", "--flavor", "tiny-broken")
    error = failure(result, 1)
    assert "'tiny-broken' deployer flavor (from serving-tiny-flavor) failed to load" in error
    assert home.registry.find_deployment("bad") is None
