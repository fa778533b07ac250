"""Snapshots, RocksDB stores and exports are the owner's only (0700 / 0600), whatever the
umask: they hold every tenant's text."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.ops.export.dataset import WRITERS, RowFilter, dataset_rows
from streams.ops.export.files import write_atomically
from streams.processing.store import PartitionStore
from tests.unit.export.test_dataset import MEMORIES

pytestmark = pytest.mark.usefixtures("open_umask")


@pytest.fixture(params=[0o022, 0o000])
def open_umask(request: pytest.FixtureRequest) -> Iterator[None]:
    """The default umask, and one that masks nothing."""
    old = os.umask(request.param)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def others_can_read(root: Path) -> list[str]:
    """Paths under ``root`` (itself included) with any permission for group or others."""
    found = [root, *root.rglob("*")]
    return [f"{p} {oct(mode(p))}" for p in found if mode(p) & 0o077]


def test_state_store_directories_are_private(tmp_path: Path) -> None:
    path = tmp_path / "worker" / "app" / "w0" / "things" / "0"
    store = PartitionStore("things", path, "cl", 0, lambda *_: None)
    try:
        for directory in (tmp_path / "worker", tmp_path / "worker" / "app", path):
            assert mode(directory) == 0o700, directory
    finally:
        store.close()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_exports_are_private_files(fmt: str, tmp_path: Path) -> None:
    rows = dataset_rows(MEMORIES, RowFilter(include_unknown=True))
    out = tmp_path / f"data.{fmt}"
    write_atomically(out, lambda tmp: WRITERS[fmt](rows, tmp))
    assert mode(out) == 0o600
