"""State stores: RocksDB (rocksdict) per partition, changelogged, holding committed data only.

A write during a batch goes to the store's *pending* map. When the batch's agents are done,
``send_changes`` puts one changelog record per written key (its last value) into the
batch's Kafka transaction, so a key written several times in a batch costs one encoding
and one record. Only after that transaction commits are the writes applied to RocksDB, in
one atomic WriteBatch together with the changelog offset they reach (the checkpoint). So
RocksDB never holds a write whose transaction aborted, and after any crash a store catches
up from its checkpoint by reading the changelog with read_committed (``restore.py``).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import msgpack
from rocksdict import BlockBasedOptions, Cache, DBCompressionType, Options, Rdict, WriteBatch

from streams.common.private_files import private_dir
from streams.processing.exceptions import StoreClosedError

logger = logging.getLogger(__name__)

CHECKPOINT_KEY = b"\x00memstream:changelog-offset"
# RocksDB's table options, as Quix Streams sets them: one block cache for every store of
# the process (a ceiling, filled as blocks are read; RocksDB's default is 8 MB per store,
# less than one tenant's memories), a bloom filter of 10 bits per key (a get for a key
# that is not there, as for every new text, skips the data blocks: 0.3 instead of 3.2 µs)
# and lz4 blocks. Files written before keep their format; RocksDB reads both.
BLOCK_CACHE_BYTES = 128 * 1024 * 1024
BLOOM_BITS_PER_KEY = 10
_block_cache: Cache | None = None
_ABSENT = object()
_DELETED = object()
Emit = Callable[[str, int, bytes, bytes | None], None]


def encode_value(value: Any) -> bytes:
    """MessagePack (bytes stay bytes; several times faster than JSON on the hot path)."""
    return cast(bytes, msgpack.packb(value, use_bin_type=True))


def decode_value(data: bytes) -> Any:
    """Inverse of ``encode_value`` (tuples come back as lists). Values written by the first
    releases, which used JSON with bytes as ``{"$b64": ...}``, still read."""
    try:
        return msgpack.unpackb(data, raw=False)
    except msgpack.ExtraData:
        return json.loads(data, object_hook=_legacy_bytes)


def _legacy_bytes(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "$b64" in obj:
        return base64.b64decode(obj["$b64"])
    return obj


def _options() -> Options:
    global _block_cache  # noqa: PLW0603 - one cache per process, made on first use
    if _block_cache is None:
        _block_cache = Cache(BLOCK_CACHE_BYTES)
    table = BlockBasedOptions()
    table.set_block_cache(_block_cache)
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, True)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_block_based_table_factory(table)
    options.set_compression_type(DBCompressionType.lz4())
    return options


class PartitionStore:
    """One store's data for one partition."""

    def __init__(self, name: str, path: Path, changelog: str, partition: int, emit: Emit) -> None:
        self.name = name
        self.changelog = changelog
        self.partition = partition
        self._emit = emit
        private_dir(path)  # RocksDB files take the umask's mode: the 0700 directory guards them
        options = _options()
        self._db = Rdict(str(path), options)
        # This batch's writes not yet sent to the changelog: the values themselves (_DELETED
        # for a delete), encoded once, by send_changes.
        self._pending: dict[bytes, Any] = {}
        # Sent to the changelog, waiting for the commit: encoded values (None: delete).
        self._sent: dict[bytes, bytes | None] = {}
        self._closed = False

    # -- reads and writes inside a batch ------------------------------------------------
    def get(self, key: str) -> Any | None:
        """The value of ``key``, seeing this batch's own writes.

        A value this batch wrote is returned as the object that was put, not a copy:
        change it only to put it back.
        """
        if self._closed:
            self._refuse("get")
        k = key.encode()
        value = self._pending.get(k, _ABSENT)
        if value is not _ABSENT:
            return None if value is _DELETED else value
        raw = self._sent[k] if k in self._sent else self._db.get(k)
        return None if raw is None else decode_value(raw)

    def put(self, key: str, value: Any) -> None:
        """Write ``key`` (sent by ``send_changes``; applied to RocksDB once the batch commits).

        The store keeps ``value`` itself until then: its state at ``send_changes`` is what
        is written.
        """
        if self._closed:
            self._refuse("put")
        self._pending[key.encode()] = value

    def delete(self, key: str) -> None:
        """Delete ``key`` (a tombstone in the changelog)."""
        if self._closed:
            self._refuse("delete")
        self._pending[key.encode()] = _DELETED

    def send_changes(self) -> int:
        """Produce one changelog record per key written since the last call (its last value)
        into the open transaction; returns how many."""
        for k, value in self._pending.items():
            raw = None if value is _DELETED else encode_value(value)
            self._sent[k] = raw
            self._emit(self.changelog, self.partition, k, raw)
        count = len(self._pending)
        self._pending.clear()
        return count

    def committed_items(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Every committed (key, value) whose key starts with ``prefix``, in key order, for
        rebuilding derived in-memory state."""
        if self._closed:
            self._refuse("committed_items")
        start = prefix.encode()
        items = self._db.items(from_key=start) if start else self._db.items()
        for k, v in items:
            key = cast(bytes, k)  # raw mode: keys are bytes
            if start and not key.startswith(start):
                break
            if key != CHECKPOINT_KEY:
                yield key.decode(), decode_value(v)

    # -- transaction outcome ------------------------------------------------------------------
    def apply(self, next_offset: int | None) -> None:
        """The batch committed: write its sent changes and the new checkpoint atomically."""
        if self._pending:
            raise RuntimeError(
                f"store {self.name}[{self.partition}]: {len(self._pending)} writes were never "
                "sent to the changelog (send_changes before the commit)"
            )
        if not self._sent and next_offset is None:
            return
        batch = WriteBatch(raw_mode=True)
        for k, v in self._sent.items():
            if v is None:
                batch.delete(k)
            else:
                batch.put(k, v)
        if next_offset is not None:
            batch.put(CHECKPOINT_KEY, str(next_offset).encode())
        self._db.write(batch)
        self._sent.clear()

    def discard(self) -> None:
        """The batch aborted: forget its writes."""
        self._pending.clear()
        self._sent.clear()

    @property
    def checkpoint(self) -> int:
        """The next changelog offset this store has not applied."""
        raw = self._db.get(CHECKPOINT_KEY)
        return int(raw) if raw is not None else 0

    # -- recovery (restore.py) ------------------------------------------------------------------
    def write_restored(self, batch: WriteBatch, position: int) -> None:
        """Apply changelog records read by a restore, atomically with the offset they reach."""
        batch.put(CHECKPOINT_KEY, str(position).encode())
        self._db.write(batch)

    def wipe(self, chunk: int = 10_000) -> None:
        """Delete every key, ``chunk`` keys per write; the checkpoint goes last, so a crash
        mid-wipe leaves a store whose checkpoint still calls for the wipe."""
        batch = WriteBatch(raw_mode=True)
        count = 0
        for k in self._db.keys():  # the iterator reads a snapshot: deleting behind it is safe
            if k == CHECKPOINT_KEY:
                continue
            batch.delete(k)
            count += 1
            if count % chunk == 0:
                self._db.write(batch)
                batch = WriteBatch(raw_mode=True)
        batch.delete(CHECKPOINT_KEY)
        self._db.write(batch)

    def close(self) -> None:
        """Forget unapplied writes and close RocksDB (its files and lock are released).

        A later read or write raises ``StoreClosedError`` (not rocksdict's own error): an
        agent still holding the store after its partition was revoked is a bug to surface.
        """
        self.discard()
        self._closed = True
        self._db.close()

    def _refuse(self, call: str) -> None:
        raise StoreClosedError(f"store {self.name}[{self.partition}]: {call} after close "
                               "(the partition was revoked; this worker no longer owns it)")


def close_partitions(
    stores: dict[tuple[str, int], PartitionStore], partitions: Iterable[int]
) -> list[PartitionStore]:
    """Close and forget the stores of ``partitions`` (revoked or lost): another worker may
    own them now, and an open RocksDB keeps its files and memory. Returns those closed."""
    gone = set(partitions)
    closed = [stores.pop(key) for key in [k for k in stores if k[1] in gone]]
    for store in closed:
        store.close()
    if closed:
        logger.info("closed %d stores of partitions %s", len(closed), sorted(gone))
    return closed
