"""The replica's feed: read memories.v1 and summaries.v1 (read_committed) into the replica.

It uses no consumer group: partitions are assigned at the replica's own offsets (from its
snapshot, or the beginning), so every service instance is an independent replica and
nothing it does moves another consumer. Snapshots are taken in this thread, between
batches, every ``snapshot_every_records`` records or ``snapshot_every_s`` seconds, and at
once after a memory was deleted: as soon as the replica has caught up (so the summaries
re-derived in the delete's transaction are in too), a snapshot replaces every older one,
so no snapshot on disk keeps a deleted memory or a summary that quoted it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streams.common.codec import AvroCodec, CodecError
from streams.common.exceptions import UnavailableError
from streams.common.heap import freeze_heap
from streams.common.registry import latest_schema, registry_client
from streams.common.settings import Settings
from streams.service.replica import MEMORIES, SUMMARIES, Replica
from streams.service.snapshot import SnapshotStore

logger = logging.getLogger(__name__)

BASES = (MEMORIES, SUMMARIES)
_SCHEMAS = {MEMORIES: "memory", SUMMARIES: "summary"}


def feed_topics(settings: Settings) -> dict[str, str]:
    """Base name -> full topic name of what the replica consumes."""
    return {base: settings.topic(base) for base in BASES}


class ReplicaFeed:
    """A thread applying committed records to a replica, tracking its lag."""

    def __init__(
        self,
        settings: Settings,
        replica: Replica,
        snapshots: SnapshotStore | None = None,
        on_batch: Callable[[ReplicaFeed], None] | None = None,
        partitions: Collection[int] | None = None,
    ) -> None:
        self.settings = settings
        # Only these partitions of each topic (a parallel rebuild's share), or all.
        self.partitions = None if partitions is None else frozenset(partitions)
        self.replica = replica
        self.snapshots = snapshots
        self.on_batch = on_batch
        self.topics = feed_topics(settings)
        self._base_of = {full: base for base, full in self.topics.items()}
        # Timestamps stay epoch milliseconds, as the replica keeps them.
        self._codec = AvroCodec(registry_client(settings), logical_types=False)
        self._readers = {base: latest_schema(_SCHEMAS[base]) for base in BASES}
        self.high: dict[tuple[str, int], int] = {}
        self.caught_up = threading.Event()
        self.failed: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._consumer: Consumer | None = None
        self._high_at = 0.0  # when the end offsets were last read
        self._purge_after: float | None = None  # a deletion applied at this time, not saved

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self._run_logged, name="replica-feed", daemon=True)
        self._thread.start()

    def stop(self, snapshot: bool = True) -> None:
        """Stop after the current batch; write a last snapshot when asked."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        if snapshot and self.snapshots is not None and self._since_snapshot:
            self.snapshot()

    @property
    def alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _run_logged(self) -> None:
        try:
            self.run()
        except Exception as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.exception("replica feed stopped")

    # -- the loop -------------------------------------------------------------------------------
    def run(self, until_end: bool = False) -> None:
        """Apply records until stopped (or, with ``until_end``, until the ends seen at start)."""
        consumer = self._consumer = Consumer(self._config())
        try:
            assignment = self._assign(consumer)
            self._refresh_high(consumer, assignment)
            last_high = time.monotonic()
            while not self._stop.is_set():
                msgs = consumer.consume(num_messages=2000, timeout=0.2)
                if msgs:
                    self._apply(consumer, msgs)
                self._advance_positions(consumer, assignment)
                if not until_end and time.monotonic() - last_high > 0.5:
                    self._refresh_high(consumer, assignment)
                    last_high = time.monotonic()
                if self.on_batch is not None:
                    self.on_batch(self)
                if self.lag() == 0:
                    if not self.caught_up.is_set():
                        # Before ready: the replica loaded so far leaves full collections
                        # (~100 ms at 100,000 memories, every recall waiting on it).
                        freeze_heap()
                    self.caught_up.set()
                    if until_end:
                        break
                self._maybe_snapshot()
        finally:
            consumer.close()
            self._consumer = None

    def _config(self) -> dict[str, object]:
        return {
            **self.settings.kafka_client_config(),
            "group.id": f"memstream-serve-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
            # Memory records are ~1.7 KB (the vector): 16 MB per partition and fetch instead
            # of 1 MB cut a rebuild's fetch round trips; reads went from 36k to 42k records/s.
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "log_level": 3,
        }

    def _assign(self, consumer: Consumer) -> list[TopicPartition]:
        assignment: list[TopicPartition] = []
        for base, full in self.topics.items():
            meta = consumer.list_topics(full, timeout=self.settings.request_timeout_s)
            topic = meta.topics.get(full)
            if topic is None or topic.error is not None:
                raise UnavailableError(f"topic {full} is missing (run `memstream topics create`)")
            for p in sorted(topic.partitions):
                if self.partitions is not None and p not in self.partitions:
                    continue
                start = self.replica.offsets[base].get(p)
                assignment.append(TopicPartition(full, p, OFFSET_BEGINNING if not start else start))
        consumer.assign(assignment)
        logger.info("replica feed assigned %s", ", ".join(
            f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in assignment))
        return [TopicPartition(tp.topic, tp.partition) for tp in assignment]

    def _apply(self, consumer: Consumer, msgs: list) -> None:  # type: ignore[type-arg]
        replica, base_of, decode, readers = (
            self.replica, self._base_of, self._codec.decode, self._readers)
        deletions = replica.deletions
        with replica.lock:
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaException(err)
                    continue
                base = base_of[msg.topic()]
                raw = msg.value()
                try:
                    value = None if raw is None else decode(raw, readers[base])
                except UnavailableError as exc:
                    # Registry down: apply nothing more of this partition now; retry later.
                    logger.warning("replica feed waits for the registry: %s", exc)
                    consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
                    time.sleep(1.0)
                    break
                except CodecError as exc:
                    replica.skipped["undecodable"] += 1
                    logger.warning("skipping %s[%d]@%d: %s", msg.topic(), msg.partition(),
                                   msg.offset(), exc)
                    value = None
                replica.apply(base, msg.partition(), msg.offset(), value)
            replica.sync(build=False)
            if replica.deletions != deletions:  # the latest one counts
                self._purge_after = time.monotonic()
        replica.build_graphs()
        self._since_snapshot += len(msgs)

    def _advance_positions(self, consumer: Consumer, assignment: list[TopicPartition]) -> None:
        # The position moves past transaction markers and aborted records, which carry no
        # data: the replica has applied everything below it.
        with self.replica.lock:
            for tp in consumer.position(assignment):
                if tp.offset >= 0:
                    offsets = self.replica.offsets[self._base_of[tp.topic]]
                    offsets[tp.partition] = max(offsets.get(tp.partition, 0), tp.offset)

    def _refresh_high(self, consumer: Consumer, assignment: list[TopicPartition]) -> None:
        for tp in assignment:
            try:
                _low, high = consumer.get_watermark_offsets(tp, timeout=2.0, cached=False)
            except KafkaException as exc:
                logger.warning("watermarks of %s[%d]: %s", tp.topic, tp.partition, exc)
                continue
            self.high[(self._base_of[tp.topic], tp.partition)] = high
        self._high_at = time.monotonic()

    def lag(self) -> int:
        """Records (and markers) between what was applied and the end of each partition."""
        return sum(
            max(0, high - self.replica.position(base, p)) for (base, p), high in self.high.items()
        )

    def _maybe_snapshot(self) -> None:
        if self.snapshots is None or not self._since_snapshot:
            return
        purge = self._purge_after
        if purge is not None and self._high_at > purge and self.lag() == 0:
            self.snapshot(purge=True)
            return
        due = (
            self._since_snapshot >= self.settings.snapshot_every_records
            or time.monotonic() - self._last_snapshot >= self.settings.snapshot_every_s
        )
        if due:
            self.snapshot()

    def snapshot(self, purge: bool = False) -> None:
        """Write a snapshot now; with ``purge`` (or a deletion not yet saved) delete every
        older one."""
        assert self.snapshots is not None
        pending = self._purge_after
        # Caught up since the deletion: the summaries re-derived with it are in this one.
        complete = pending is not None and self._high_at > pending and self.lag() == 0
        with self.replica.lock:
            self.snapshots.save(self.replica, self.topics,
                                keep=1 if purge or pending is not None else None)
        if complete:
            self._purge_after = None
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
