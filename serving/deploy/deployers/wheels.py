"""Wheels of this project and its dependencies, built on the host for a container image.

An image gets `serving` with no index to reach (a registry may be unreachable from the
engine, and the project may be an unreleased checkout): `pip wheel` runs here, with
whatever index this machine's pip uses, and the image installs with `--no-index`. The
wheels are cached per project content and Python version, so only the first image of a
checkout pays for them. The wheels are for this machine's Python, so the base image needs
the same minor version (`python:3.11-slim` for a 3.11 host). pip resolves markers for the
host's exact Python, so a dependency only an older patch release needs (redis wants
`async-timeout` before 3.11.3) is added by evaluating every wheel's requirements again for
the image's Python version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from serving.deploy.deployers.base import DeployError, Progress

WHEEL_TIMEOUT = 600.0
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".*")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "serving" / "wheels"


def project_root() -> Path | None:
    """The source checkout `serving` runs from (an editable install), or None."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "serving").is_dir() else None


def _project_files(root: Path) -> list[Path]:
    """What a wheel of the checkout needs: pyproject, the readme and the packages (never
    the tests, a virtualenv or build leftovers)."""
    files = [root / "pyproject.toml"]
    files += [p for p in (root / "README.md", root / "LICENSE") if p.is_file()]
    files += [p for p in sorted(root.iterdir()) if p.is_dir() and (p / "__init__.py").is_file()]
    return files


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for top in paths:
        walk = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in walk:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(str(path.relative_to(top.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _pip_wheel(staging: Path, requirements: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(staging), *requirements]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=WHEEL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DeployError(f"pip wheel did not finish in {WHEEL_TIMEOUT:g}s") from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        raise DeployError(f"pip wheel failed: {lines[-1] if lines else 'exit ' + str(done.returncode)}")


def _missing_for(staging: Path, python_version: str) -> list[str]:
    """Requirements of the wheels in `staging` that the image's Python needs and no wheel
    there provides (markers evaluated for `python_version`, e.g. "3.11.2")."""
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env.update(python_full_version=python_version, python_version=".".join(python_version.split(".")[:2]))
    have = {canonicalize_name(parse_wheel_filename(w.name)[0]) for w in staging.glob("*.whl")}
    missing: list[str] = []
    for wheel in sorted(staging.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            meta = HeaderParser().parsestr(zf.read(meta_name).decode())
        for line in meta.get_all("Requires-Dist") or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            if canonicalize_name(req.name) not in have:
                missing.append(str(_without_marker(req)))
    return sorted(set(missing))


def _without_marker(req: Requirement) -> Requirement:
    """The requirement without its marker (it was evaluated for the image already)."""
    req = Requirement(str(req))
    req.marker = None
    return req


def build_wheels(progress: Progress, python_version: str) -> Path:
    """A folder of wheels holding `serving` and every dependency the image's Python
    (`python_version`, e.g. "3.11.2") needs; raises DeployError."""
    root = project_root()
    if root is not None:
        files = _project_files(root)
        key = _digest(files)
    else:
        version = importlib.metadata.version("serving")
        key = hashlib.sha256(f"{sys.version}\0{version}".encode()).hexdigest()[:16]
    target = cache_root() / f"{key}-py{python_version}"
    if (target / ".complete").exists():
        return target
    host_wheels = cache_root() / key  # what pip resolved for this Python: shared by every image
    if not (host_wheels / ".complete").exists():
        progress(f"building wheels of serving and its dependencies into {host_wheels}")
        with tempfile.TemporaryDirectory(prefix="serving-wheels-") as tmp:
            if root is not None:
                # A copy: pip builds in the source tree and would leave build/ in the checkout.
                src = Path(tmp) / "src"
                src.mkdir()
                for path in files:
                    if path.is_dir():
                        shutil.copytree(path, src / path.name, ignore=_SKIP)
                    else:
                        shutil.copy2(path, src / path.name)
                requirement = str(src)
            else:
                requirement = f"serving=={importlib.metadata.version('serving')}"
            _pip_wheel(Path(tmp) / "wheels", [requirement])
            _publish(Path(tmp) / "wheels", host_wheels)
    with tempfile.TemporaryDirectory(prefix="serving-wheels-") as tmp:
        staging = Path(tmp) / "wheels"
        shutil.copytree(host_wheels, staging, ignore=shutil.ignore_patterns(".complete"))
        for _ in range(5):  # each round may bring wheels with requirements of their own
            missing = _missing_for(staging, python_version)
            if not missing:
                break
            progress(f"adding wheels the image's Python {python_version} needs: {', '.join(missing)}")
            _pip_wheel(staging, missing)
        _publish(staging, target)
    return target


def _publish(staging: Path, target: Path) -> None:
    """Move a finished folder into the cache; `.complete` marks it whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(staging, target)
    (target / ".complete").touch()
