"""The local registry of snapshots and deployments: `$SERVING_HOME/registry.db` (SQLite).

Several CLI processes may touch it at once (a deploy while another lists), so every
write is one `BEGIN IMMEDIATE` transaction under WAL with a busy timeout: writers queue
instead of failing, readers never block. Records are msgspec Structs.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from serving.home import private_dir, private_file


class DeploymentStatus:
    RUNNING = "RUNNING"
    PENDING = "PENDING"
    ERROR = "ERROR"
    ABSENT = "ABSENT"
    UNKNOWN = "UNKNOWN"


class Snapshot(msgspec.Struct, kw_only=True):
    """A pipeline frozen for deployment: where its code is, what it accepts and returns."""

    id: str
    name: str
    pipeline_name: str
    source: str  # module:attr or /abs/path/file.py:attr (a copy under the snapshot folder)
    origin: str  # what the user named when creating it
    workdir: str  # the daemon's cwd and import root: the frozen copy (an installed module: the cwd)
    code_hash: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    capture: dict[str, Any]
    created_at: float
    # The deployment a `pipeline deploy` made it for: deleting that deployment deletes it
    # too (when nothing else uses it). None for snapshots a user made by name.
    created_for: str | None = None


class Deployment(msgspec.Struct, kw_only=True):
    id: str
    name: str
    snapshot_id: str
    flavor: str
    url: str | None = None
    status: str = DeploymentStatus.UNKNOWN
    auth_key: str | None = None
    flavor_data: dict[str, Any] = {}
    created_at: float
    updated_at: float


class RegistryError(Exception):
    """A registry lookup or constraint failed; the message is one line for the CLI."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS deployments (id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, data BLOB NOT NULL);
"""


def code_hash_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class Registry:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "registry.db"
        private_file(private_dir(home) / "registry.db")  # it holds the deployments' bearer keys
        with self._conn() as conn:
            conn.executescript(SCHEMA)

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- snapshots ---------------------------------------------------------------------

    def put_snapshot(self, snap: Snapshot) -> None:
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO snapshots VALUES (?, ?, ?)", (snap.id, snap.name, msgspec.json.encode(snap))
                )
            except sqlite3.IntegrityError:
                raise RegistryError(f"a snapshot named {snap.name!r} already exists") from None

    def get_snapshot(self, name_or_id: str) -> Snapshot:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT data FROM snapshots WHERE id = ? OR name = ?", (name_or_id, name_or_id)
            ).fetchone()
        if row is None:
            raise RegistryError(
                f"no snapshot named or with id {name_or_id!r}; `serving pipeline snapshot list` shows them"
            )
        return msgspec.json.decode(row[0], type=Snapshot)

    def list_snapshots(self) -> list[Snapshot]:
        with self._conn() as conn:
            rows = conn.execute("SELECT data FROM snapshots").fetchall()
        snaps = [msgspec.json.decode(r[0], type=Snapshot) for r in rows]
        return sorted(snaps, key=lambda s: s.created_at, reverse=True)

    def delete_snapshot(self, snap_id: str) -> None:
        """Forget a snapshot no deployment uses; raises RegistryError naming the users.

        The check and the delete are one write transaction, and `put_deployment` checks
        that its snapshot exists in its own, so a deploy racing this delete either sees
        the snapshot gone or keeps it in use: never a deployment without its snapshot.
        """
        with self._write() as conn:
            users = sorted(d.name for d in self._deployments(conn) if d.snapshot_id == snap_id)
            if users:
                names = ", ".join(repr(u) for u in users)
                raise RegistryError(
                    f"snapshot {self._snapshot_name(conn, snap_id)!r} is used by deployment {names};"
                    f" delete it first (`serving deployment delete {users[0]}`)"
                )
            conn.execute("DELETE FROM snapshots WHERE id = ?", (snap_id,))

    @staticmethod
    def _snapshot_name(conn: sqlite3.Connection, snap_id: str) -> str:
        row = conn.execute("SELECT name FROM snapshots WHERE id = ?", (snap_id,)).fetchone()
        return str(row[0]) if row else snap_id

    @staticmethod
    def _deployments(conn: sqlite3.Connection) -> list[Deployment]:
        rows = conn.execute("SELECT data FROM deployments").fetchall()
        return [msgspec.json.decode(r[0], type=Deployment) for r in rows]

    # -- deployments -------------------------------------------------------------------

    def put_deployment(self, dep: Deployment) -> None:
        dep.updated_at = time.time()
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM snapshots WHERE id = ?", (dep.snapshot_id,)).fetchone() is None:
                raise RegistryError(
                    f"snapshot {dep.snapshot_id!r} of deployment {dep.name!r} no longer exists"
                    " (deleted meanwhile?); deploy again"
                )
            try:
                conn.execute(
                    "INSERT INTO deployments VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                    "name = excluded.name, data = excluded.data",
                    (dep.id, dep.name, msgspec.json.encode(dep)),
                )
            except sqlite3.IntegrityError:
                raise RegistryError(f"a deployment named {dep.name!r} already exists") from None

    def find_deployment(self, name_or_id: str) -> Deployment | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT data FROM deployments WHERE id = ? OR name = ?", (name_or_id, name_or_id)
            ).fetchone()
        return None if row is None else msgspec.json.decode(row[0], type=Deployment)

    def get_deployment(self, name_or_id: str) -> Deployment:
        dep = self.find_deployment(name_or_id)
        if dep is None:
            raise RegistryError(
                f"no deployment named or with id {name_or_id!r}; `serving deployment list` shows them"
            )
        return dep

    def list_deployments(self) -> list[Deployment]:
        with self._conn() as conn:
            deps = self._deployments(conn)
        return sorted(deps, key=lambda d: d.name)

    def delete_deployment(self, dep_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM deployments WHERE id = ?", (dep_id,))


def new_uuid() -> str:
    return str(uuid.uuid4())
