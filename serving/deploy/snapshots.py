"""Create snapshots: load a pipeline once, record its schemas, freeze its code.

A pipeline named by file (`path/file.py:attr`) is copied into
`$SERVING_HOME/snapshots/<id>/`, so later edits do not change a deployed snapshot; a
new deploy makes a new snapshot. A pipeline named by module (`pkg.mod:attr`) is
imported from where it lives (its code hash is still recorded).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import msgspec

from serving.deploy.registry import Registry, Snapshot, code_hash_of, new_uuid
from serving.loader import load_pipeline


def _resolve_file(source: str) -> tuple[Path, str] | None:
    path_part, _, attr = source.partition(":")
    if path_part.endswith(".py") or "/" in path_part:
        return Path(path_part).resolve(), attr
    return None


def create_snapshot(registry: Registry, name: str, source: str) -> Snapshot:
    """Load `source`, then record and store a snapshot named `name`.

    Raises PipelineLoadError (bad source) or RegistryError (name taken).
    """
    pipeline = load_pipeline(source)
    snap_id = new_uuid()
    workdir = str(Path.cwd())
    file_source = _resolve_file(source)
    if file_source is not None:
        path, attr = file_source
        target_dir = registry.home / "snapshots" / snap_id
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / path.name
        shutil.copy2(path, target)
        frozen = f"{target}:{attr or pipeline.fn.__name__}"
        code_hash = code_hash_of(path)
        workdir = str(path.parent)
    else:
        module = __import__(source.partition(":")[0], fromlist=["_"])
        module_file = getattr(module, "__file__", None)
        code_hash = code_hash_of(Path(module_file)) if module_file else "unknown"
        frozen = source
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
    )
    try:
        registry.put_snapshot(snapshot)
    except Exception:
        if file_source is not None:
            shutil.rmtree(registry.home / "snapshots" / snap_id, ignore_errors=True)
        raise
    return snapshot


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
    """The folder a deployed daemon works in and imports sibling modules from."""
    return snapshot.workdir if os.path.isdir(snapshot.workdir) else str(Path.cwd())
