"""Create snapshots: load a pipeline once, record its schemas, freeze its code.

A snapshot freezes the folder the pipeline imports from, not only the named file, so
editing a sibling module after a deploy does not change what a deployment runs; a new
deploy makes a new snapshot. That folder (the import root) is:

- for `path/file.py:attr`, the file's folder, or, when the file is inside a package,
  the folder holding the top-most package (`loader.package_root`);
- for `pkg.mod:attr`, the folder holding `pkg` when it lies under the current
  directory (the project); a module installed elsewhere (site-packages) is imported
  from where it lives, and only its code hash is recorded.

It is copied to `$SERVING_HOME/snapshots/<id>/code/`, whose folder the deployed daemon
works in and imports from. Left behind, so a copy stays small: hidden entries (`.git`,
`.venv`, caches), `__pycache__`, `node_modules`, `*.egg-info`, virtualenvs (a folder
with `pyvenv.cfg`), `site-packages` and `$SERVING_HOME` itself. A non-Python file over
`LINK_OVER_BYTES` is linked, not copied (data stays readable but is not frozen), and a
tree of more than `MAX_FILES` files is refused: deploy from a smaller folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import msgspec

from serving.deploy.registry import Registry, Snapshot, code_hash_of, new_uuid
from serving.home import private_dir
from serving.loader import load_pipeline, package_root

LINK_OVER_BYTES = 10 * 1024 * 1024
MAX_FILES = 5000
_SKIP_NAMES = frozenset({"__pycache__", "node_modules", "site-packages"})


class SnapshotError(Exception):
    """The code cannot be frozen (too big, unreadable); the message is one line for the CLI."""


def _resolve_file(source: str) -> tuple[Path, str] | None:
    path_part, _, attr = source.partition(":")
    if path_part.endswith(".py") or "/" in path_part:
        return Path(path_part).resolve(), attr
    return None


def _module_root(module_name: str) -> tuple[Path | None, Path | None]:
    """(the module's file, the import root to freeze if it is project code, else None)."""
    module = sys.modules.get(module_name) or __import__(module_name, fromlist=["_"])
    module_file = getattr(module, "__file__", None)
    if not module_file:
        return None, None
    path = Path(module_file).resolve()
    root = path.parent
    for _ in range(module_name.count(".") + (path.name == "__init__.py")):
        root = root.parent
    cwd = Path.cwd().resolve()
    return path, (root if root.is_relative_to(cwd) else None)


def _skipped(entry: os.DirEntry[str], home: Path) -> bool:
    name = entry.name
    if name.startswith(".") or name in _SKIP_NAMES or name.endswith(".egg-info"):
        return True
    if entry.is_dir(follow_symlinks=False):
        path = Path(entry.path)
        # a virtualenv, or SERVING_HOME under the project: never snapshot the snapshots
        return (path / "pyvenv.cfg").exists() or path.resolve() == home
    return False


def _files_to_freeze(root: Path, home: Path) -> list[Path]:
    """Every file under `root` a snapshot keeps, relative to it; raises SnapshotError."""
    home = home.resolve()
    found: list[Path] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise SnapshotError(f"cannot read {folder}: {exc}") from None
        for entry in entries:
            if _skipped(entry, home):
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
            elif entry.is_file():
                found.append(Path(entry.path).relative_to(root))
                if len(found) > MAX_FILES:
                    raise SnapshotError(
                        f"{root} holds more than {MAX_FILES} files; a snapshot freezes the pipeline's"
                        " whole folder, so deploy from a folder with only the pipeline's code"
                    )
    return sorted(found)


def freeze_tree(root: Path, target: Path, home: Path) -> str:
    """Copy the code under `root` to `target`; returns the hash of its Python files (which
    changes when any module of the pipeline's folder does)."""
    digest = hashlib.sha256()
    for rel in _files_to_freeze(root, home):
        src, dst = root / rel, target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.suffix == ".py":
            data = src.read_bytes()
            digest.update(str(rel).encode() + b"\0" + hashlib.sha256(data).digest())
            dst.write_bytes(data)
            shutil.copystat(src, dst)
        elif src.stat().st_size > LINK_OVER_BYTES:
            dst.symlink_to(src.resolve())
        else:
            shutil.copy2(src, dst)
    return digest.hexdigest()[:16]


def create_snapshot(registry: Registry, name: str, source: str, created_for: str | None = None) -> Snapshot:
    """Load `source`, then record and store a snapshot named `name` (made for deployment
    `created_for`, which then owns it, or by the user when None).

    Raises PipelineLoadError (bad source), SnapshotError (code cannot be frozen) or
    RegistryError (name taken).
    """
    pipeline = load_pipeline(source)
    snap_id = new_uuid()
    snap_dir = private_dir(registry.home / "snapshots") / snap_id  # frozen code may hold secrets
    code_dir = snap_dir / "code"
    workdir = str(Path.cwd())
    frozen = source
    file_source = _resolve_file(source)
    try:
        if file_source is not None:
            path, attr = file_source
            root = package_root(path)
            code_hash = freeze_tree(root, code_dir, registry.home)
            frozen = f"{code_dir / path.relative_to(root)}:{attr or pipeline.fn.__name__}"
            workdir = str(code_dir)
        else:
            module_file, root_or_none = _module_root(source.partition(":")[0])
            if root_or_none is not None:
                code_hash = freeze_tree(root_or_none, code_dir, registry.home)
                workdir = str(code_dir)
            else:
                code_hash = code_hash_of(module_file) if module_file else "unknown"
        snapshot = Snapshot(
            id=snap_id,
            name=name,
            pipeline_name=pipeline.name,
            source=frozen,
            origin=source,
            workdir=workdir,
            code_hash=code_hash,
            input_schema=pipeline.input_schema(),
            output_schema=pipeline.output_schema(),
            capture=msgspec.structs.asdict(pipeline.capture),
            created_at=time.time(),
            created_for=created_for,
        )
        registry.put_snapshot(snapshot)
    except BaseException:
        shutil.rmtree(snap_dir, ignore_errors=True)
        raise
    return snapshot


def delete_snapshot(registry: Registry, name_or_id: str) -> Snapshot:
    """Forget a snapshot no deployment uses and remove its frozen code; raises
    RegistryError (unknown, or in use: the message names the deployments)."""
    snap = registry.get_snapshot(name_or_id)
    registry.delete_snapshot(snap.id)
    shutil.rmtree(registry.home / "snapshots" / snap.id, ignore_errors=True)
    return snap


def unique_snapshot_name(registry: Registry, base: str) -> str:
    existing = {s.name for s in registry.list_snapshots()}
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name = f"{base}-{stamp}"
    n = 2
    while name in existing:
        name = f"{base}-{stamp}-{n}"
        n += 1
    return name


def import_root(snapshot: Snapshot) -> str:
    """The folder a deployed daemon works in and imports the pipeline's modules from:
    the frozen copy (or, for an installed module, the folder it was created from)."""
    return snapshot.workdir if os.path.isdir(snapshot.workdir) else str(Path.cwd())
