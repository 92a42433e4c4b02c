"""`$SERVING_HOME` is private: created 0700, its files (registry.db with the bearer keys,
runs.db, logs) 0600, against real daemons and the real CLI."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path
from typing import Any

import httpx
from deploy_helpers import Home, ok, url_in, write_answer
from polling import wait_until

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"
HELLO = f"{EXAMPLES / 'hello.py'}:hello"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sqlite_files(db: Path) -> list[Path]:
    return [p for p in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm"))) if p.exists()]


def runs_in(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
        except sqlite3.OperationalError:  # the table is not there yet
            return 0


def test_a_daemon_creates_its_home_0700_and_its_run_store_0600(daemon: Any, tmp_path: Path) -> None:
    home = tmp_path / "fresh" / "home"
    d = daemon(HELLO, SERVING_HOME=str(home))
    assert httpx.post(f"{d.url}/invoke", json={}, timeout=10).status_code == 200
    db = home / "runs.db"
    wait_until(lambda: db.exists() and runs_in(db) == 1, "the run to reach runs.db")
    assert mode(home) == 0o700
    files = sqlite_files(db)
    assert {p.name for p in files} >= {"runs.db"}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_files_of_an_older_wider_home_are_made_0600(daemon: Any, tmp_path: Path) -> None:
    """A home an older version made (0755, runs.db 0644) keeps its folder mode (it may
    be one the user chose), but its files are no longer readable by others."""
    home = tmp_path / "old"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    with sqlite3.connect(home / "runs.db"):
        pass
    (home / "runs.db").chmod(0o644)
    d = daemon(HELLO, SERVING_HOME=str(home))
    assert httpx.post(f"{d.url}/invoke", json={}, timeout=10).status_code == 200
    wait_until(lambda: runs_in(home / "runs.db") == 1, "the run to reach runs.db")
    assert mode(home / "runs.db") == 0o600
    assert mode(home) == 0o755


def test_a_deployment_keeps_its_key_and_log_where_only_the_owner_reads_them(tmp_path: Path) -> None:
    h = Home(tmp_path / "fresh" / "home", tmp_path / "work")
    h.path.rmdir()  # the CLI creates it
    try:
        pipeline = write_answer(h.cwd / "answer.py", "v1")
        deploy = ("pipeline", "deploy", f"{pipeline}:answer", "--name", "private", "--generate-auth-key")
        out = ok(h.cli(*deploy))
        url = url_in(out)
        dep = h.deployment("private")
        assert dep.auth_key
        bearer = {"Authorization": f"Bearer {dep.auth_key}"}
        r = httpx.post(f"{url}/invoke", json={}, headers=bearer, timeout=10)
        assert r.status_code == 200, r.text
        assert mode(h.path) == 0o700
        for db in sqlite_files(h.path / "registry.db"):
            assert mode(db) == 0o600, db
        log = Path(dep.flavor_data["log_path"])
        assert log.is_relative_to(h.path)
        assert mode(log) == 0o600
        assert mode(log.parent) == 0o700
        assert mode(h.path / "deployments") == 0o700
        assert mode(h.path / "snapshots") == 0o700
        wait_until(lambda: runs_in(h.path / "runs.db") == 1, "the run to reach runs.db")
        for db in sqlite_files(h.path / "runs.db"):
            assert mode(db) == 0o600, db
    finally:
        h.kill_daemons()
