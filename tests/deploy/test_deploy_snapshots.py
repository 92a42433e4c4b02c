"""Snapshots: create, list, deploy; names are unique; the code is frozen at creation;
concurrent CLI calls share the registry safely."""

from __future__ import annotations

import subprocess

from deploy_helpers import CLI_TIMEOUT, GREET, Home, failure, ok, outputs, table, write_answer

import serving


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
