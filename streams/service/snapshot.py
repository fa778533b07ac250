"""Snapshots of the replica on disk: index + metadata + the offsets they cover, atomically.

Layout under the snapshot directory::

    CURRENT                 name of the latest complete snapshot (replaced atomically)
    000000000042/           one snapshot; written as .tmp-<uuid>/, fsynced, then renamed
        manifest.json       model, dimension, topics, offsets, tenants
        t<i>.npz            tenant i's row arrays (vectors, alive, filter columns)
        t<i>.hnsw           tenant i's HNSW graph (only when it has one)
        t<i>.json           tenant i's metadata, row ids, string codes
        summaries.json

A crash at any point leaves either the previous snapshot or the new one as CURRENT,
never a half-written one; start-up loads CURRENT and catches up from its offsets.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from streams.service.memories import TenantMemories
from streams.service.replica import Replica
from streams.service.vectors import IndexPolicy

logger = logging.getLogger(__name__)

FORMAT = 1
KEEP = 2


class SnapshotStore:
    """Writes and finds snapshots in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, replica: Replica, topics: dict[str, str]) -> Path:
        """Write a snapshot of ``replica`` (caller holds its lock) and make it CURRENT."""
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        tenants = []
        for i, (name, shard) in enumerate(sorted(replica.tenants.items())):
            shard.vectors.flush()
            with (tmp / f"t{i}.npz").open("wb") as fh:
                np.savez(fh, **shard.arrays())
                _fsync(fh)
            if shard.vectors.ann is not None:
                faiss.write_index(shard.vectors.ann, str(tmp / f"t{i}.hnsw"))
                _fsync_path(tmp / f"t{i}.hnsw")
            _write_json(tmp / f"t{i}.json", {
                "ids": shard.id_of_row, "codes": shard.codes, "meta": shard.meta,
            })
            tenants.append({"tenant": name, "file": f"t{i}", "memories": len(shard),
                            "hnsw": shard.vectors.ann is not None})
        _write_json(tmp / "summaries.json", replica.summaries)
        manifest = {
            "format": FORMAT,
            "model_id": replica.model_id,
            "dimension": replica.dimension,
            "topics": topics,
            "offsets": {
                b: {str(p): o for p, o in offs.items()} for b, offs in replica.offsets.items()
            },
            "applied": replica.applied,
            "tenants": tenants,
            "created_ms": int(time.time() * 1000),
        }
        _write_json(tmp / "manifest.json", manifest)
        _fsync_path(tmp)
        name = f"{_next_seq(self.directory):012d}"
        final = self.directory / name
        os.rename(tmp, final)
        _write_json(self.directory / "CURRENT.tmp", {"snapshot": name})
        os.replace(self.directory / "CURRENT.tmp", self.directory / "CURRENT")
        _fsync_path(self.directory)
        self._prune(keep=name)
        logger.info("snapshot %s: %d records applied, written in %.2fs",
                    final, replica.applied, time.monotonic() - started)
        return final

    def load(self, model_id: str, dimension: int, topics: dict[str, str],
             policy: IndexPolicy) -> Replica | None:
        """The CURRENT snapshot as a replica, or None (none, unreadable, or for another
        model, dimension or set of topics: those are rebuilt from the log instead)."""
        current = self.current()
        if current is None:
            return None
        try:
            manifest = json.loads((current / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            logger.warning("snapshot %s unreadable (%s): rebuilding from the log", current, exc)
            return None
        mismatch = _mismatch(manifest, model_id, dimension, topics)
        if mismatch:
            logger.warning("snapshot %s is for %s: rebuilding from the log", current, mismatch)
            return None
        replica = Replica(model_id, manifest["dimension"] or dimension, policy)
        replica.offsets = {b: {int(p): o for p, o in offs.items()}
                           for b, offs in manifest["offsets"].items()}
        replica.applied = manifest["applied"]
        for entry in manifest["tenants"]:
            shard = TenantMemories(entry["tenant"], replica.dimension, policy)
            with np.load(current / f"{entry['file']}.npz") as arrays:
                loaded = {k: arrays[k] for k in arrays.files}
            side = json.loads((current / f"{entry['file']}.json").read_text())
            shard.restore(loaded, side["ids"], side["codes"], side["meta"])
            if entry["hnsw"]:
                shard.vectors.ann = faiss.read_index(str(current / f"{entry['file']}.hnsw"))
                shard.vectors.ann.hnsw.efSearch = policy.hnsw_ef_search
            replica.tenants[entry["tenant"]] = shard
        replica.summaries = json.loads((current / "summaries.json").read_text())
        logger.info("loaded snapshot %s: %d records applied", current, replica.applied)
        return replica

    def current(self) -> Path | None:
        """The directory CURRENT names, if it exists."""
        try:
            name = json.loads((self.directory / "CURRENT").read_text())["snapshot"]
        except (OSError, ValueError, KeyError):
            return None
        path = self.directory / name
        return path if path.is_dir() else None

    def drop(self) -> None:
        """Delete every snapshot (the next start rebuilds from the log)."""
        if self.directory.exists():
            shutil.rmtree(self.directory)

    def _prune(self, keep: str) -> None:
        names = sorted(p.name for p in self.directory.iterdir() if p.is_dir() and p.name.isdigit())
        for name in names[:-KEEP]:
            if name != keep:
                shutil.rmtree(self.directory / name, ignore_errors=True)
        for leftover in self.directory.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _mismatch(manifest: dict[str, Any], model_id: str, dimension: int,
              topics: dict[str, str]) -> str | None:
    if manifest.get("format") != FORMAT:
        return f"format {manifest.get('format')}"
    if manifest["model_id"] != model_id:
        return f"model {manifest['model_id']!r}, not {model_id!r}"
    if dimension and manifest["dimension"] and manifest["dimension"] != dimension:
        return f"dimension {manifest['dimension']}, not {dimension}"
    if manifest["topics"] != topics:
        return f"topics {manifest['topics']}, not {topics}"
    return None


def _next_seq(directory: Path) -> int:
    seqs = [int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(seqs, default=0) + 1


def _write_json(path: Path, value: Any) -> None:
    # dumps, not dump: dump streams through the pure-Python encoder, ~10x slower.
    text = json.dumps(value, separators=(",", ":"))
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)
        _fsync(fh)


def _fsync(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
