"""Snapshots: create, list, deploy; names are unique; the code is frozen at creation;
concurrent CLI calls share the registry safely."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from deploy_helpers import CLI_TIMEOUT, GREET, Home, failure, ok, outputs, table, write_answer

import serving
from serving.deploy import snapshots


def test_snapshot_create_list_and_deploy_freezes_the_code(home: Home) -> None:
    source = write_answer(home.cwd / "frozen.py", "v1")
    out = ok(home.cli("pipeline", "snapshot", "create", "--name", "s1", f"{source.name}:answer"))
    assert "s1" in out and "answer" in out
    snap = home.registry.get_snapshot("s1")
    assert snap.code_hash in out

    rows = table(ok(home.cli("pipeline", "snapshot", "list")))
    assert rows["s1"][:2] == ["answer", snap.code_hash[:8]]

    error = failure(home.cli("pipeline", "snapshot", "create", "--name", "s1", f"{source.name}:answer"), 1)
    assert "'s1' already exists" in error
    assert [s.name for s in home.registry.list_snapshots()] == ["s1"]

    # edit the source after the snapshot: the snapshot keeps serving the old code
    write_answer(source, "v2")
    out = ok(home.cli("pipeline", "snapshot", "deploy", "s1", "--deployment", "d1"))
    assert "RUNNING" in out
    assert outputs(ok(home.cli("deployment", "invoke", "d1", "--question=z"))) == {"answer": "v1:z"}
    assert home.deployment("d1").snapshot_id == snap.id
    meta = serving_metadata(home, "d1")
    assert meta["snapshot_name"] == "s1" and meta["snapshot_id"] == snap.id

    # a new deploy of the edited file serves the new code, next to the frozen one
    ok(home.cli("pipeline", "deploy", f"{source.name}:answer", "--name", "d2"))
    assert outputs(ok(home.cli("deployment", "invoke", "d2", "--question=z"))) == {"answer": "v2:z"}
    assert outputs(ok(home.cli("deployment", "invoke", "d1", "--question=z"))) == {"answer": "v1:z"}


def serving_metadata(home: Home, name: str) -> dict[str, object]:
    return serving.Client(home.path).get_deployment(name).invoke()["metadata"]


def test_snapshot_errors_are_one_line(home: Home) -> None:
    error = failure(home.cli("pipeline", "snapshot", "deploy", "missing", "--deployment", "d"), 1)
    assert "'missing'" in error
    error = failure(home.cli("pipeline", "snapshot", "create", "--name", "s", "nowhere.py:answer"), 1)
    assert "nowhere.py" in error
    assert home.registry.list_snapshots() == []
    assert home.registry.list_deployments() == []


def test_concurrent_snapshot_creates_all_succeed(home: Home) -> None:
    names = [f"conc-{i}" for i in range(4)]
    procs = [home.popen("pipeline", "snapshot", "create", "--name", name, GREET) for name in names]
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    finally:
        for proc in procs:  # hang guard: none is left behind
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for result in results:
        ok(result)
    rows = table(ok(home.cli("pipeline", "snapshot", "list")))
    assert set(names) <= set(rows)
    assert sorted(s.name for s in home.registry.list_snapshots()) == names


SIBLING_PIPELINE = '''"""Answers through a sibling module, and says where that module was loaded from."""

from typing import Annotated

import helper
from serving import pipeline, step


@step
def reply(question: str) -> Annotated[dict, "answer"]:
    return {"text": helper.greeting(question), "helper": helper.__file__}


@pipeline
def sibling(question: str = "q"):
    return reply(question)
'''

PACKAGED_PIPELINE = '''"""A pipeline inside a package, importing another module of its package."""

from typing import Annotated

from shop import prices
from serving import pipeline, step


@step
def quote(item: str) -> Annotated[dict, "answer"]:
    return {"text": prices.price(item), "helper": prices.__file__}


@pipeline
def packaged(item: str = "tea"):
    return quote(item)
'''


def _write_helper(path: Path, version: str) -> None:
    path.write_text(f"def greeting(q):\n    return '{version}:' + q\n")


def _write_prices(path: Path, version: str) -> None:
    path.write_text(f"def price(item):\n    return '{version}:' + item\n")


def test_a_snapshot_freezes_the_sibling_modules_too(home: Home) -> None:
    project = home.cwd / "project"
    project.mkdir()
    (project / "sibling.py").write_text(SIBLING_PIPELINE)
    _write_helper(project / "helper.py", "v1")
    ok(home.cli("pipeline", "snapshot", "create", "--name", "frozen", "project/sibling.py:sibling"))
    snap = home.registry.get_snapshot("frozen")

    # Edit the sibling after the snapshot: a daemon started from it later keeps the old one.
    _write_helper(project / "helper.py", "v2")
    ok(home.cli("pipeline", "snapshot", "deploy", "frozen", "--deployment", "old"))
    answer = outputs(ok(home.cli("deployment", "invoke", "old", "--question=z")))["answer"]
    assert answer["text"] == "v1:z"
    frozen_dir = (home.path / "snapshots" / snap.id).resolve()
    assert Path(answer["helper"]).resolve().is_relative_to(frozen_dir), answer["helper"]

    # A new snapshot picks the edit up, and its code hash says the code changed.
    ok(home.cli("pipeline", "deploy", "project/sibling.py:sibling", "--name", "new"))
    assert outputs(ok(home.cli("deployment", "invoke", "new", "--question=z")))["answer"]["text"] == "v2:z"
    assert home.snapshot_of("new").code_hash != snap.code_hash


def test_a_snapshot_of_a_module_in_a_package_freezes_the_package(home: Home) -> None:
    package = home.cwd / "src" / "shop"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pipe.py").write_text(PACKAGED_PIPELINE)
    _write_prices(package / "prices.py", "v1")
    (home.cwd / "src" / ".venv").mkdir()  # bounds: hidden folders and caches stay behind
    (home.cwd / "src" / ".venv" / "big.bin").write_bytes(b"x" * 1000)
    (package / "__pycache__").mkdir()
    ok(home.cli("pipeline", "snapshot", "create", "--name", "pkg", "src/shop/pipe.py:packaged"))
    snap = home.registry.get_snapshot("pkg")
    frozen = home.path / "snapshots" / snap.id
    assert not list(frozen.rglob(".venv")) and not list(frozen.rglob("__pycache__"))

    _write_prices(package / "prices.py", "v2")
    ok(home.cli("pipeline", "snapshot", "deploy", "pkg", "--deployment", "pkg"))
    answer = outputs(ok(home.cli("deployment", "invoke", "pkg", "--item=tea")))["answer"]
    assert answer["text"] == "v1:tea"
    assert Path(answer["helper"]).resolve().is_relative_to(frozen.resolve()), answer["helper"]


def test_freezing_leaves_environments_caches_and_the_home_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "project"
    for rel, content in {
        "pipe.py": "x = 1\n",
        "lib/util.py": "y = 2\n",
        "lib/data.json": "{}",
        "data/big.bin": "b" * 100,
        "venv/pyvenv.cfg": "home = /usr\n",
        "venv/lib/mod.py": "",
        ".git/HEAD": "ref\n",
        "pkg.egg-info/PKG-INFO": "",
        "lib/__pycache__/util.cpython-311.pyc": "",
        "node_modules/left/index.js": "",
        "serving-home/snapshots/old/code/pipe.py": "",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    monkeypatch.setattr(snapshots, "LINK_OVER_BYTES", 50)
    target = tmp_path / "frozen"
    snapshots.freeze_tree(root, target, home=root / "serving-home")
    kept = sorted(str(p.relative_to(target)) for p in target.rglob("*") if not p.is_dir())
    assert kept == ["data/big.bin", "lib/data.json", "lib/util.py", "pipe.py"]
    assert (target / "data" / "big.bin").is_symlink()  # data over the limit is linked, not copied
    assert not (target / "lib" / "util.py").is_symlink()

    monkeypatch.setattr(snapshots, "MAX_FILES", 3)
    with pytest.raises(snapshots.SnapshotError, match="more than 3 files"):
        snapshots.freeze_tree(root, tmp_path / "too-many", home=root / "serving-home")
