"""Atomic files: written beside the target under a temporary name, then renamed.

A reader never sees a partial dataset: the target either keeps its previous content or
has the complete new one. The manifest goes second, so a manifest always describes a
complete file (check its sha256 to be sure the pair belongs together).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from streams.common.private_files import FILE_MODE, create_private_file


def write_atomically(path: Path, write: Callable[[Path], object]) -> str:
    """Run ``write`` on a temporary sibling of ``path``, fsync, rename; return its sha256."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        create_private_file(tmp)  # 0600 from the start: the rows are every tenant's text
        write(tmp)
        os.chmod(tmp, FILE_MODE)  # in case the writer replaced the file
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        digest = sha256_of(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return digest


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_path(path: Path) -> Path:
    """``FILE.manifest.json`` beside ``FILE``."""
    return path.with_name(path.name + ".manifest.json")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
