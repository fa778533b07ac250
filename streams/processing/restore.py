"""Restore: bring state stores up to their changelogs' committed end, batch by batch.

One consumer (read_committed) reads every changelog partition to restore from its store's
checkpoint. Records are applied in batches of ``batch_records`` records or ``batch_bytes``
bytes, each in one RocksDB WriteBatch together with the changelog offset it reaches, so a
restore that is interrupted resumes from its last applied batch instead of from scratch.

The end of a partition is its last stable offset (a read_committed consumer's watermark):
records of open transactions lie past it and aborted ones are skipped, leaving offset gaps,
as do transaction markers and compaction. A restore fails only when it makes *no progress*
for ``stall_timeout_s`` (Kafka Streams restores under ``task.timeout.ms`` the same way);
however long a large store takes, it may take it, logging its progress.

(A little over 300 lines: the read loop, where it starts and how it fails are one concept.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from rocksdict import WriteBatch

from streams.common.exceptions import MemstreamError
from streams.processing.store import PartitionStore

logger = logging.getLogger(__name__)

DEFAULT_BATCH_RECORDS = 10_000
DEFAULT_BATCH_BYTES = 16 * 1024 * 1024
PROGRESS_EVERY_S = 5.0


class RestoreError(MemstreamError):
    """A changelog could not be read; the batches already applied are kept."""

    retriable = True


class RestoreStalledError(RestoreError):
    """A restore made no progress for its no-progress timeout (broker away, leader lost)."""


class ChangelogConsumer(Protocol):
    """The part of ``confluent_kafka.Consumer`` a restore uses (unit tests pass fakes)."""

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]: ...
    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...
    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...
    def close(self) -> None: ...


ConsumerFactory = Callable[[dict[str, Any]], ChangelogConsumer]

# What a broker answers for a topic created a moment ago, until its leader is known.
_NOT_READY = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
})


def _watermarks(
    consumer: ChangelogConsumer, tp: TopicPartition, timeout_s: float
) -> tuple[int, int]:
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


@dataclass
class _Partition:
    """One changelog partition being restored into its store."""

    store: PartitionStore
    start: int
    end: int
    position: int
    started_at: float
    batch: WriteBatch = field(default_factory=lambda: WriteBatch(raw_mode=True))
    in_batch: int = 0
    batch_bytes: int = 0
    applied: int = 0

    @property
    def where(self) -> str:
        return f"store {self.store.name}[{self.store.partition}] from {self.store.changelog}"

    def add(self, msg: Message, offset: int) -> None:
        key, value = msg.key(), msg.value()
        if key is None:
            raise RestoreError(
                f"restoring {self.where}: record without a key at offset {offset} "
                "(a changelog is compacted: its records always have one)"
            )
        if value is None:
            self.batch.delete(key)  # a tombstone: the key was deleted
        else:
            self.batch.put(key, value)
        self.in_batch += 1
        self.batch_bytes += len(key) + len(value or b"")
        self.position = offset + 1

    def full(self, max_records: int, max_bytes: int) -> bool:
        return self.in_batch >= max_records or self.batch_bytes >= max_bytes

    def flush(self) -> None:
        """Apply the batch and the offset it reaches (also when only markers moved it)."""
        self.store.write_restored(self.batch, self.position)
        self.applied += self.in_batch
        self.batch = WriteBatch(raw_mode=True)
        self.in_batch = self.batch_bytes = 0


def _start(
    store: PartitionStore, low: int, high: int, uncommitted_high: Callable[[], int]
) -> int | None:
    """Where to read ``store``'s changelog from (None: nothing to read).

    A checkpoint past the changelog's end or before its beginning means the store does not
    match this changelog (topic recreated or truncated, another cluster): it is wiped and
    rebuilt from the beginning, as Kafka Streams does on an out-of-range checkpoint. A
    checkpoint between the last stable offset and the high watermark is not ahead: the
    markers of the store's own last commit may not be written yet.
    """
    checkpoint = store.checkpoint
    ahead = checkpoint > high and checkpoint > uncommitted_high()
    if ahead or 0 < checkpoint < low:
        logger.warning(
            "store %s[%d] checkpoint %d is outside its changelog %s[%d] (offsets %d..%d): "
            "wiping it and restoring from the beginning",
            store.name, store.partition, checkpoint, store.changelog, store.partition, low, high,
        )
        store.wipe()
        checkpoint = 0
    start = max(checkpoint, low)
    return start if start < high else None


def restore_stores(
    stores: list[PartitionStore],
    consumer_config: dict[str, Any],
    stall_timeout_s: float,
    *,
    batch_records: int = DEFAULT_BATCH_RECORDS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    progress_every_s: float = PROGRESS_EVERY_S,
    on_progress: Callable[[], None] | None = None,
    consumer_factory: ConsumerFactory = Consumer,
    clock: Callable[[], float] = time.monotonic,
) -> dict[PartitionStore, int]:
    """Bring every store up to its changelog's committed end with one consumer reading all
    their changelog partitions at once; returns the records applied per store.

    Raises ``RestoreStalledError`` (retriable) when no partition moves for
    ``stall_timeout_s``; every batch applied until then stays applied. ``on_progress`` is
    called whenever a partition moved (the worker's liveness: a long restore is not a hang).
    """
    config = {
        **consumer_config,
        "group.id": "memstream-restore",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    }
    counts = dict.fromkeys(stores, 0)
    consumer = consumer_factory(config)
    try:
        parts: dict[tuple[str, int], _Partition] = {}
        for store in stores:
            tp = TopicPartition(store.changelog, store.partition)
            low, high = _watermarks(consumer, tp, stall_timeout_s)
            uncommitted = partial(_uncommitted_high, consumer_factory, config, tp, stall_timeout_s)
            start = _start(store, low, high, uncommitted)
            if start is not None:
                parts[(store.changelog, store.partition)] = _Partition(
                    store, start, high, start, clock()
                )
        if parts:
            consumer.assign([TopicPartition(t, p, part.start) for (t, p), part in parts.items()])
            _read(consumer, parts, stall_timeout_s, batch_records, batch_bytes,
                  progress_every_s, on_progress or _nothing, clock)
        for part in parts.values():
            counts[part.store] = part.applied
        return counts
    finally:
        consumer.close()


def _uncommitted_high(
    factory: ConsumerFactory, config: dict[str, Any], tp: TopicPartition, timeout_s: float
) -> int:
    """The high watermark, open transactions included (asked only when a checkpoint lies
    past the last stable offset, which is rare)."""
    consumer = factory({**config, "isolation.level": "read_uncommitted"})
    try:
        return _watermarks(consumer, tp, timeout_s)[1]
    finally:
        consumer.close()


def _read(
    consumer: ChangelogConsumer,
    parts: dict[tuple[str, int], _Partition],
    stall_timeout_s: float,
    batch_records: int,
    batch_bytes: int,
    progress_every_s: float,
    on_progress: Callable[[], None],
    clock: Callable[[], float],
) -> None:
    pending = dict(parts)
    try:
        _read_until_caught_up(consumer, pending, stall_timeout_s, batch_records, batch_bytes,
                              progress_every_s, on_progress, clock)
    except Exception:
        _keep_progress(pending.values())
        raise


def _read_until_caught_up(
    consumer: ChangelogConsumer,
    pending: dict[tuple[str, int], _Partition],
    stall_timeout_s: float,
    batch_records: int,
    batch_bytes: int,
    progress_every_s: float,
    on_progress: Callable[[], None],
    clock: Callable[[], float],
) -> None:
    last_progress = clock()
    next_report = last_progress + progress_every_s
    while pending:
        # consume() waits its whole timeout unless the batch fills: short, since a
        # partition that is already caught up has only a commit marker left to read.
        msgs = consumer.consume(num_messages=min(batch_records, 10_000), timeout=0.05)
        moved = _take(msgs, pending, batch_records, batch_bytes)
        if not msgs:
            # Past the last data record only transaction markers may remain.
            for tp in consumer.position([TopicPartition(t, p) for t, p in pending]):
                part = pending[(tp.topic, tp.partition)]
                moved |= tp.offset > part.position
                part.position = max(part.position, tp.offset)
        for key, part in list(pending.items()):
            if part.position >= part.end:
                part.flush()
                consumer.pause([TopicPartition(*key)])
                del pending[key]
        now = clock()
        if moved:
            last_progress = now
            on_progress()
        elif pending and now - last_progress > stall_timeout_s:
            stuck = "; ".join(
                f"{p.where} at offset {p.position} of {p.end}" for p in pending.values()
            )
            raise RestoreStalledError(
                f"restoring {stuck}: no progress for {stall_timeout_s:.0f}s "
                "(broker or partition leader unavailable?); applied batches are kept"
            )
        if pending and now >= next_report:
            next_report = now + progress_every_s
            _report(pending.values(), now)


def _take(
    msgs: list[Message],
    pending: dict[tuple[str, int], _Partition],
    batch_records: int,
    batch_bytes: int,
) -> bool:
    """Add consumed records to their partitions' batches; True if any partition moved."""
    moved = False
    for msg in msgs:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        part = None if topic is None or partition is None else pending.get((topic, partition))
        err = msg.error()
        if err is not None and err.code() != KafkaError._PARTITION_EOF:
            if part is None and not err.fatal():
                # A client-level error (a broker down): librdkafka retries, and the
                # no-progress deadline decides when to give up.
                logger.warning("restore consumer: %s", err.str())
                continue
            where = part.where if part else f"{topic}[{partition}]"
            at = f" at offset {part.position}" if part else ""
            raise RestoreError(f"restoring {where}: {err.str()}{at}")
        if part is None or offset is None:
            continue  # a partition already done (nothing past its end is needed)
        if err is None:
            part.add(msg, offset)
            moved = True
            if part.full(batch_records, batch_bytes):
                part.flush()
        else:  # end of partition, at ``offset``
            moved |= offset > part.position
            part.position = max(part.position, offset)
    return moved


def _nothing() -> None:
    pass


def _report(parts: Iterable[_Partition], now: float) -> None:
    for part in parts:
        done = part.position - part.start
        rate = done / max(now - part.started_at, 1e-3)
        logger.info(
            "restoring %s: offset %d of %d (%.0f offsets/s, %d records applied)",
            part.where, part.position, part.end, rate, part.applied + part.in_batch,
        )


def _keep_progress(parts: Iterable[_Partition]) -> None:
    """A restore failed: apply what was read so far, so the retry resumes from there."""
    for part in parts:
        try:
            part.flush()
        except Exception:  # the failure being raised matters more than this one
            logger.exception("keeping the progress of %s failed", part.where)
