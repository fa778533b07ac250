"""State stores: RocksDB (rocksdict) per partition, changelogged, holding committed data only.

A write during a batch goes to the store's *pending* map. When the batch's agents are done,
``send_changes`` puts one changelog record per written key (its last value) into the
batch's Kafka transaction, so a key written several times in a batch costs one encoding
and one record. Only after that transaction commits are the writes applied to RocksDB, in
one atomic WriteBatch together with the changelog offset they reach (the checkpoint). So
RocksDB never holds a write whose transaction aborted, and after any crash a store catches
up from its checkpoint by reading the changelog with read_committed.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

from streams.common.private_files import private_dir

logger = logging.getLogger(__name__)

CHECKPOINT_KEY = b"\x00memstream:changelog-offset"
_ABSENT = object()
_DELETED = object()
Emit = Callable[[str, int, bytes, bytes | None], None]


def encode_value(value: Any) -> bytes:
    """MessagePack (bytes stay bytes; several times faster than JSON on the hot path)."""
    return msgpack.packb(value, use_bin_type=True)


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


# What a broker answers for a topic created a moment ago, until its leader is known.
_NOT_READY = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
})


def _watermarks(consumer: Consumer, tp: TopicPartition, timeout_s: float) -> tuple[int, int]:
    """Low and high offsets; retried while the broker is still electing the leader of a
    changelog topic that was just created (NOT_LEADER_FOR_PARTITION and the like)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            retriable = isinstance(err, KafkaError) and (
                err.retriable() or err.code() in _NOT_READY
            )
            if not retriable or time.monotonic() + delay > deadline:
                raise
            logger.info("changelog %s[%d] not ready (%s); retrying", tp.topic, tp.partition, err)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class PartitionStore:
    """One store's data for one partition."""

    def __init__(self, name: str, path: Path, changelog: str, partition: int, emit: Emit) -> None:
        self.name = name
        self.changelog = changelog
        self.partition = partition
        self._emit = emit
        private_dir(path)  # RocksDB files take the umask's mode: the 0700 directory guards them
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options)
        # This batch's writes not yet sent to the changelog: the values themselves (_DELETED
        # for a delete), encoded once, by send_changes.
        self._pending: dict[bytes, Any] = {}
        # Sent to the changelog, waiting for the commit: encoded values (None: delete).
        self._sent: dict[bytes, bytes | None] = {}

    # -- reads and writes inside a batch ------------------------------------------------
    def get(self, key: str) -> Any | None:
        """The value of ``key``, seeing this batch's own writes.

        A value this batch wrote is returned as the object that was put, not a copy:
        change it only to put it back.
        """
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
        self._pending[key.encode()] = value

    def delete(self, key: str) -> None:
        """Delete ``key`` (a tombstone in the changelog)."""
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
        start = prefix.encode()
        items = self._db.items(from_key=start) if start else self._db.items()
        for k, v in items:
            if start and not k.startswith(start):
                break
            if k != CHECKPOINT_KEY:
                yield k.decode(), decode_value(v)

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

    # -- recovery -------------------------------------------------------------------------------
    def restore(self, consumer_config: dict[str, Any], timeout_s: float) -> int:
        """Apply the changelog from the checkpoint to its committed end; return records read."""
        return restore_stores([self], consumer_config, timeout_s)[self]

    def _apply_restored(self, batch: WriteBatch, position: int) -> None:
        batch.put(CHECKPOINT_KEY, str(position).encode())
        self._db.write(batch)

    def _wipe(self) -> None:
        batch = WriteBatch(raw_mode=True)
        for k in self._db.keys():
            batch.delete(k)
        self._db.write(batch)

    def close(self) -> None:
        """Close RocksDB."""
        self._db.close()


def restore_stores(
    stores: list[PartitionStore], consumer_config: dict[str, Any], timeout_s: float
) -> dict[PartitionStore, int]:
    """Bring every store up to its changelog's committed end with one consumer reading all
    their changelog partitions at once; returns the records applied per store.

    read_committed stops at the last stable offset: an open transaction (a crashed worker's)
    holds it below the high watermark until that transaction is aborted or times out.
    """
    counts = dict.fromkeys(stores, 0)
    consumer = Consumer(
        {
            **consumer_config,
            "group.id": "memstream-restore",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        todo: dict[tuple[str, int], PartitionStore] = {}
        ends: dict[tuple[str, int], int] = {}
        starts: list[TopicPartition] = []
        for store in stores:
            tp = (store.changelog, store.partition)
            low, high = _watermarks(consumer, TopicPartition(*tp), timeout_s)
            start = store.checkpoint
            if start > high:
                logger.warning(
                    "store %s[%d] is ahead of its changelog (%d > %d): rebuilding from scratch",
                    store.name, store.partition, start, high,
                )
                store._wipe()
                start = 0
            if start < high:
                todo[tp], ends[tp] = store, high
                starts.append(TopicPartition(*tp, max(start, low)))
        if not todo:
            return counts
        consumer.assign(starts)
        batches = {tp: WriteBatch(raw_mode=True) for tp in todo}
        positions = {tp: 0 for tp in todo}
        pending = set(todo)
        deadline = time.monotonic() + timeout_s
        while pending:
            # consume() waits its whole timeout unless the batch fills: short, since a store
            # that is already caught up has only a commit marker left to read.
            msgs = consumer.consume(num_messages=1000, timeout=0.01)
            for msg in msgs:
                tp = (msg.topic(), msg.partition())
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"restoring {tp[0]}[{tp[1]}]: {err.str()}")
                    positions[tp] = max(positions[tp], msg.offset())
                elif msg.value() is None:
                    batches[tp].delete(msg.key())
                else:
                    batches[tp].put(msg.key(), msg.value())
                if err is None:
                    positions[tp] = msg.offset() + 1
                    counts[todo[tp]] += 1
            if not msgs:
                # Past the last data record only control markers may remain.
                for tp in consumer.position([TopicPartition(*tp) for tp in pending]):
                    key = (tp.topic, tp.partition)
                    positions[key] = max(positions[key], tp.offset)
            for tp in list(pending):
                if positions[tp] >= ends[tp]:
                    todo[tp]._apply_restored(batches[tp], positions[tp])
                    pending.discard(tp)
            if pending and time.monotonic() > deadline:
                stuck = ", ".join(f"{t}[{p}] at {positions[(t, p)]} of {ends[(t, p)]}"
                                  for t, p in sorted(pending))
                raise RuntimeError(
                    f"restoring {stuck}: stuck for {timeout_s:.0f}s "
                    "(an open transaction of another worker?)"
                )
        return counts
    finally:
        consumer.close()
