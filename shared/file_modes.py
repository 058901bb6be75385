"""Files that hold data are private: created 0600 in directories 0700 (the owner only)."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

FILE_MODE = 0o600
DIR_MODE = 0o700
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """Create `path` (and parents) if needed and make it 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)


def open_private(path: Path, flags: int) -> int:
    """os.open `path` with `flags`, the file 0600 whatever the umask or its earlier mode."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a SQLite URL; None for other databases and in-memory ones."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    if url.database.startswith("file:"):
        return None  # a URI filename: SQLite's own rules, left alone
    return Path(url.database)


def prepare_sqlite_file(database_url: str, *, create_dir: bool = False) -> None:
    """Create the SQLite file 0600 (its directory 0700, if `create_dir` and missing) before SQLite opens it.

    SQLite creates the WAL, shared-memory and journal files with the database
    file's own mode, so a private database keeps them private too.
    """
    path = sqlite_path(database_url)
    if path is None:
        return
    if not path.parent.exists():
        if not create_dir:
            return  # SQLite reports the missing directory itself
        private_dir(path.parent)
    os.close(open_private(path, os.O_RDWR | os.O_CREAT))
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.chmod(companion, FILE_MODE)
