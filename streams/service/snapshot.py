"""Snapshots of the replica on disk: index + metadata + the offsets they cover, atomically.

Layout under the snapshot directory::

    CURRENT                 name of the latest complete snapshot (replaced atomically)
    000000000042/           one snapshot; written as .tmp-<uuid>/, fsynced, then renamed
        manifest.json       model, dimension, topics, offsets, tenants
        t<i>.npy            tenant i's vectors (rows × dimension float32, unit norm)
        t<i>.npz            tenant i's other row arrays (alive, filter columns)
        t<i>.hnsw           tenant i's HNSW graph (only when it has one)
        t<i>.msgpack        tenant i's metadata, row ids, string codes
        summaries.msgpack   the summaries, by tenant

A parallel rebuild writes one such set per part (disjoint partitions, so disjoint tenants),
its files prefixed ``p<j>-``, and one manifest listing them all.

A crash at any point leaves either the previous snapshot or the new one as CURRENT,
never a half-written one; start-up loads CURRENT and catches up from its offsets.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import msgpack
import numpy as np

from streams.common.exceptions import CorruptStateError
from streams.common.private_files import create_private_file, private_dir, restrict_tree
from streams.models.index import IndexPolicy
from streams.service.memories import TenantMemories
from streams.service.replica import Replica

logger = logging.getLogger(__name__)

FORMAT = 2  # 2: metadata in MessagePack, summaries in per-part files
KEEP = 2


class SnapshotStore:
    """Writes and finds snapshots in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, replica: Replica, topics: dict[str, str], keep: int | None = None) -> Path:
        """Write a snapshot of ``replica`` (caller holds its lock) and make it CURRENT;
        ``keep=1`` deletes every older snapshot (after a deletion: none may keep it)."""
        started = time.monotonic()
        tmp = self.begin()
        part = write_part(tmp, replica, "")
        final = self.commit(tmp, manifest(replica.model_id, replica.dimension, topics, [part]),
                            keep=keep)
        logger.info("snapshot %s: %d records applied, written in %.2fs",
                    final, replica.applied, time.monotonic() - started)
        return final

    def begin(self) -> Path:
        """A fresh directory (0700, like the snapshot directory) to write a snapshot's files
        into (``write_part``)."""
        private_dir(self.directory)
        tmp = self.directory / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir(mode=0o700)
        os.chmod(tmp, 0o700)
        return tmp

    def commit(self, tmp: Path, manifest: dict[str, Any], keep: int | None = None) -> Path:
        """Write ``manifest`` into ``tmp``, then make ``tmp`` the CURRENT snapshot, keeping
        ``keep`` snapshots (default ``KEEP``)."""
        _write_bytes(tmp / "manifest.json", json.dumps(manifest).encode())
        restrict_tree(tmp)  # every tenant's text: the owner's only, whatever the umask
        _fsync_path(tmp)
        name = f"{_next_seq(self.directory):012d}"
        final = self.directory / name
        os.rename(tmp, final)
        _write_bytes(self.directory / "CURRENT.tmp", json.dumps({"snapshot": name}).encode())
        os.replace(self.directory / "CURRENT.tmp", self.directory / "CURRENT")
        _fsync_path(self.directory)
        self._prune(name, KEEP if keep is None else keep)
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
        with paused_gc():
            return self._load(current, manifest, model_id, dimension, policy)

    def _load(self, current: Path, manifest: dict[str, Any], model_id: str, dimension: int,
              policy: IndexPolicy) -> Replica:
        replica = Replica(model_id, manifest["dimension"] or dimension, policy)
        replica.offsets = {b: {int(p): o for p, o in offs.items()}
                           for b, offs in manifest["offsets"].items()}
        replica.applied = manifest["applied"]
        for entry in manifest["tenants"]:
            shard = TenantMemories(entry["tenant"], replica.dimension, policy)
            with np.load(current / f"{entry['file']}.npz") as arrays:
                loaded = {k: arrays[k] for k in arrays.files}
            loaded["matrix"] = np.load(current / f"{entry['file']}.npy")
            side = _read_msgpack(current / f"{entry['file']}.msgpack")
            shard.restore(loaded, side["ids"], side["codes"], side["meta"], side.get("history"))
            if entry["hnsw"]:
                path = current / f"{entry['file']}.hnsw"
                # read_index returns the concrete class (and owns it; a downcast_index
                # proxy would not, and the graph would be freed under it).
                graph = faiss.read_index(str(path))
                if not isinstance(graph, faiss.IndexHNSWFlat):
                    raise CorruptStateError(f"snapshot {current}: {entry['file']}.hnsw holds "
                                            f"a {type(graph).__name__}, not an HNSW graph")
                graph.hnsw.efSearch = policy.hnsw_ef_search
                shard.vectors.ann = graph
            replica.tenants[entry["tenant"]] = shard
        for name in manifest["summaries"]:
            for tenant, found in _read_msgpack(current / name).items():
                replica.summaries.setdefault(tenant, {}).update(found)
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

    def _prune(self, current: str, count: int) -> None:
        names = sorted(p.name for p in self.directory.iterdir() if p.is_dir() and p.name.isdigit())
        for name in names[:-count]:
            if name != current:
                shutil.rmtree(self.directory / name, ignore_errors=True)
        for leftover in self.directory.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while building millions of small objects that all stay
    alive (a snapshot's metadata, a rebuild's records): each full collection walks every one
    of them, which doubled the time to load a snapshot. Reference counting still frees."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def write_part(tmp: Path, replica: Replica, prefix: str) -> dict[str, Any]:
    """Write ``replica``'s tenants and summaries into ``tmp`` (file names start with
    ``prefix``); return the part of the manifest that describes them. A snapshot is one part,
    or several written by parallel rebuilds of disjoint partitions (``manifest``)."""
    tenants = []
    # Each file is fsynced by a second thread while this one encodes the next (fsync waits
    # for the disk without the GIL); all are synced before the part counts as written.
    with ThreadPoolExecutor(1, thread_name_prefix="snapshot-fsync") as syncer:
        synced = []
        for i, (name, shard) in enumerate(sorted(replica.tenants.items())):
            shard.settle()
            shard.vectors.flush()
            file = f"{prefix}t{i}"
            arrays = shard.arrays()
            # The rows as a plain .npy (no zip, no CRC over ~1.5 KB a memory).
            np.save(tmp / f"{file}.npy", arrays.pop("matrix"))
            synced.append(syncer.submit(_fsync_path, tmp / f"{file}.npy"))
            with (tmp / f"{file}.npz").open("wb") as fh:
                np.savez(fh, allow_pickle=False, **arrays)  # numeric columns only
            synced.append(syncer.submit(_fsync_path, tmp / f"{file}.npz"))
            if shard.vectors.ann is not None:
                faiss.write_index(shard.vectors.ann, str(tmp / f"{file}.hnsw"))
                synced.append(syncer.submit(_fsync_path, tmp / f"{file}.hnsw"))
            (tmp / f"{file}.msgpack").write_bytes(msgpack.packb(
                {"ids": shard.id_of_row, "codes": shard.codes, "meta": shard.meta,
                 "history": shard.history}))
            synced.append(syncer.submit(_fsync_path, tmp / f"{file}.msgpack"))
            tenants.append({"tenant": name, "file": file, "memories": len(shard),
                            "hnsw": shard.vectors.ann is not None})
        summaries = f"{prefix}summaries.msgpack"
        (tmp / summaries).write_bytes(msgpack.packb(replica.summaries))
        synced.append(syncer.submit(_fsync_path, tmp / summaries))
        for done in synced:
            done.result()
    return {
        "dimension": replica.dimension,
        "offsets": {b: {str(p): o for p, o in offs.items()} for b, offs in replica.offsets.items()},
        "applied": replica.applied,
        "tenants": tenants,
        "summaries": [summaries],
    }


def manifest(model_id: str, dimension: int, topics: dict[str, str],
             parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest of a snapshot made of ``parts`` (disjoint tenants and partitions)."""
    tenants = [t for part in parts for t in part["tenants"]]
    names = [t["tenant"] for t in tenants]
    if len(set(names)) != len(names):
        raise ValueError("snapshot parts share a tenant: they must cover disjoint partitions")
    offsets: dict[str, dict[str, int]] = {}
    for part in parts:
        for base, offs in part["offsets"].items():
            mine = offsets.setdefault(base, {})
            for p, o in offs.items():
                mine[p] = max(mine.get(p, 0), o)
    return {
        "format": FORMAT,
        "model_id": model_id,
        "dimension": dimension or max((part["dimension"] for part in parts), default=0),
        "topics": topics,
        "offsets": offsets,
        "applied": sum(part["applied"] for part in parts),
        "tenants": tenants,
        "summaries": [name for part in parts for name in part["summaries"]],
        "created_ms": int(time.time() * 1000),
    }


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


def _write_bytes(path: Path, data: bytes) -> None:
    with create_private_file(path).open("wb") as fh:
        fh.write(data)
        _fsync(fh)


def _read_msgpack(path: Path) -> Any:
    # Metadata is MessagePack, not JSON: at 1M memories JSON took most of a restart.
    return msgpack.unpackb(path.read_bytes(), strict_map_key=False)


def _fsync(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
