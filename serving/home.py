"""`$SERVING_HOME` is private to its owner: the folder 0700, its files 0600.

It holds deployment bearer keys (registry.db), every run's parameters and outputs
(runs.db) and the daemons' logs. A folder this code creates is 0700, so nothing under
it can be reached by other users; the files themselves are 0600 as well, for a home
that already existed with a wider mode (an older version made it 0755). An existing
folder keeps its mode: `SERVING_HOME` may name one the user shares on purpose.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) 0700; an existing folder is left as it is."""
    if not path.is_dir():
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        os.chmod(path, PRIVATE_DIR)  # mkdir's mode is masked by the umask
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty with mode 0600 unless it exists, and make it 0600 if it does
    (with SQLite's side files: they take the database's mode only when created)."""
    fd = os.open(path, os.O_CREAT | os.O_RDONLY, PRIVATE_FILE)
    try:
        with contextlib.suppress(PermissionError):  # another user's file: not ours to change
            os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    for suffix in _SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.chmod(side, PRIVATE_FILE)
    return path


def open_private_append(path: Path) -> int:
    """An `opener` for `open()`: append to a log, created 0600."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)


def prepare_home(home: Path, capture_url: str) -> None:
    """Before a daemon starts: the home folder, and the capture store when it lives
    there (created 0600 before the sink opens it; SQLite accepts an empty file)."""
    private_dir(home)
    for scheme in ("sqlite://", "jsonl://"):
        if capture_url.startswith(scheme):
            store = Path(capture_url[len(scheme) :]).expanduser()
            if store.is_absolute() and store.resolve().is_relative_to(home.resolve()):
                private_dir(store.parent)
                private_file(store)
