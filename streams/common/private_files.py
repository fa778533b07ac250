"""Local state readable by its owner only, whatever the umask.

Snapshots, RocksDB stores and exports hold every tenant's text: directories are created
0700 and files 0600 explicitly (``mkdir``'s and ``open``'s modes are filtered by the umask,
so a default umask of 022 made them world-readable). RocksDB creates its own files with
the umask's mode; the 0700 directory around them is what keeps other users out.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, *, restrict_existing: bool = True) -> Path:
    """``mkdir -p path`` with each directory it creates set to 0700; with
    ``restrict_existing``, ``path`` itself is set to 0700 even when it existed (a state
    directory memstream owns; not a user's folder an export is written into)."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: leave its mode to them
        os.chmod(directory, DIR_MODE)
    if restrict_existing and not missing:
        os.chmod(path, DIR_MODE)
    return path


def create_private_file(path: Path) -> Path:
    """Create (or truncate) ``path`` as an empty 0600 file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def restrict_tree(path: Path) -> None:
    """Set every directory under ``path`` (itself included) to 0700 and every file to 0600."""
    os.chmod(path, DIR_MODE)
    for root, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), DIR_MODE)
        for name in files:
            os.chmod(os.path.join(root, name), FILE_MODE)
