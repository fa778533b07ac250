"""State stores: RocksDB (rocksdict) per partition, changelogged, holding committed data only.

A write during a batch goes to the store's *pending* map and, as a changelog record, into
the batch's Kafka transaction. Only after that transaction commits are the pending writes
applied to RocksDB, in one atomic WriteBatch together with the changelog offset they reach
(the checkpoint). So RocksDB never holds a write whose transaction aborted, and after any
crash a store catches up from its checkpoint by reading the changelog with read_committed.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

logger = logging.getLogger(__name__)

CHECKPOINT_KEY = b"\x00memstream:changelog-offset"
Emit = Callable[[str, int, bytes, bytes | None], None]


def encode_value(value: Any) -> bytes:
    """JSON, with bytes carried as ``{"$b64": ...}``."""
    return json.dumps(value, default=_default, separators=(",", ":")).encode()


def decode_value(data: bytes) -> Any:
    """Inverse of ``encode_value``."""
    return json.loads(data, object_hook=_object_hook)


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(value)).decode()}
    raise TypeError(f"cannot store a {type(value).__name__}")


def _object_hook(obj: dict[str, Any]) -> Any:
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
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options)
        self._pending: dict[bytes, bytes | None] = {}

    # -- reads and writes inside a batch ------------------------------------------------
    def get(self, key: str) -> Any | None:
        """The value of ``key``, seeing this batch's own writes."""
        k = key.encode()
        if k in self._pending:
            raw = self._pending[k]
        else:
            raw = self._db.get(k)
        return None if raw is None else decode_value(raw)

    def put(self, key: str, value: Any) -> None:
        """Write ``key`` (applied to RocksDB only once the batch commits)."""
        k, v = key.encode(), encode_value(value)
        self._pending[k] = v
        self._emit(self.changelog, self.partition, k, v)

    def delete(self, key: str) -> None:
        """Delete ``key`` (a tombstone in the changelog)."""
        k = key.encode()
        self._pending[k] = None
        self._emit(self.changelog, self.partition, k, None)

    def committed_items(self) -> Iterator[tuple[str, Any]]:
        """Every committed (key, value), for rebuilding derived in-memory state."""
        for k, v in self._db.items():
            if k != CHECKPOINT_KEY:
                yield k.decode(), decode_value(v)

    # -- transaction outcome ------------------------------------------------------------------
    def apply(self, next_offset: int | None) -> None:
        """The batch committed: write its pending changes and the new checkpoint atomically."""
        if not self._pending and next_offset is None:
            return
        batch = WriteBatch(raw_mode=True)
        for k, v in self._pending.items():
            if v is None:
                batch.delete(k)
            else:
                batch.put(k, v)
        if next_offset is not None:
            batch.put(CHECKPOINT_KEY, str(next_offset).encode())
        self._db.write(batch)
        self._pending.clear()

    def discard(self) -> None:
        """The batch aborted: forget its writes."""
        self._pending.clear()

    @property
    def checkpoint(self) -> int:
        """The next changelog offset this store has not applied."""
        raw = self._db.get(CHECKPOINT_KEY)
        return int(raw) if raw is not None else 0

    # -- recovery -------------------------------------------------------------------------------
    def restore(self, consumer_config: dict[str, Any], timeout_s: float) -> int:
        """Apply the changelog from the checkpoint to its committed end; return records read."""
        consumer = Consumer(
            {
                **consumer_config,
                "group.id": f"memstream-restore-{self.changelog}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
        try:
            tp = TopicPartition(self.changelog, self.partition)
            low, high = _watermarks(consumer, tp, timeout_s)
            start = self.checkpoint
            if start > high:
                logger.warning(
                    "store %s[%d] is ahead of its changelog (%d > %d): rebuilding from scratch",
                    self.name, self.partition, start, high,
                )
                self._wipe()
                start = 0
            if start >= high:
                return 0
            consumer.assign([TopicPartition(self.changelog, self.partition, max(start, low))])
            return self._read_to_end(consumer, high, timeout_s)
        finally:
            consumer.close()

    def _read_to_end(self, consumer: Consumer, high: int, timeout_s: float) -> int:
        # read_committed stops at the last stable offset: an open transaction (a crashed
        # worker's) holds it below ``high`` until that transaction is aborted or times out.
        count = 0
        batch = WriteBatch(raw_mode=True)
        position = 0
        deadline = time.monotonic() + timeout_s
        while position < high:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(
                            f"restoring {self.changelog}[{self.partition}]: {err.str()}"
                        )
                    position = max(position, msg.offset())
                    continue
                if msg.value() is None:
                    batch.delete(msg.key())
                else:
                    batch.put(msg.key(), msg.value())
                position = msg.offset() + 1
                count += 1
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"restoring {self.changelog}[{self.partition}]: stuck at offset {position} "
                    f"of {high} for {timeout_s:.0f}s (an open transaction of another worker?)"
                )
        batch.put(CHECKPOINT_KEY, str(position).encode())
        self._db.write(batch)
        return count

    def _wipe(self) -> None:
        batch = WriteBatch(raw_mode=True)
        for k in self._db.keys():
            batch.delete(k)
        self._db.write(batch)

    def close(self) -> None:
        """Close RocksDB."""
        self._db.close()
