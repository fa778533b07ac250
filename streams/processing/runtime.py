"""The exactly-once runtime: consume a batch, run the agents, commit everything in one transaction.

One transactional producer per worker (transactional id ``<app_id>-<worker_id>``) carries a
batch's output records, its state-store changelog records and its consumed offsets
(``send_offsets_to_transaction`` with the consumer's group metadata, KIP-447). The batch
commits as a whole or not at all; state stores apply their writes only after the commit
(see ``store.py``). A restarted worker's ``init_transactions`` aborts whatever its crashed
predecessor left open, and the group's committed offsets say where to resume.

Why not faust-streaming's ``exactly_once``: its transaction manager chooses the producer
by the *destination* partition, and it commits without flushing buffered changelog
writes; a kill -9 probe against Kafka 4.1 lost and duplicated records (docs/exactly-once.md).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from streams.common.codec import AvroCodec, CodecError
from streams.common.exceptions import MemstreamError, UnavailableError
from streams.common.observability import WorkerMetrics
from streams.common.partitioning import partition_for_tenant
from streams.common.registry import latest_schema, registry_client, subject_for
from streams.common.settings import Settings
from streams.common.topics import LARGEST_MESSAGE_BYTES, topic_spec
from streams.processing.deadletter import DeadLetterReason, SourceCoordinates, dead_letter
from streams.processing.restore import restore_stores
from streams.processing.store import PartitionStore, close_partitions
from streams.processing.watchdog import Liveness, Watchdog

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputRecord:
    """One consumed record, decoded with its topic's latest schema."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes | None
    value: dict[str, Any]
    # The broker timestamp (ms): what an event_time is bounded against (None: not known).
    timestamp_ms: int | None = None

    def coordinates(self, full_topic: str) -> SourceCoordinates:
        """Where it came from, for a dead letter."""
        return SourceCoordinates(full_topic, self.partition, self.offset, self.key, self.raw)


class Agent(Protocol):
    """A stream agent: plain logic over a batch of decoded records of its input topics."""

    name: str
    inputs: tuple[str, ...]
    stores: tuple[str, ...]

    def on_assigned(self, partitions: frozenset[int], stores: StoreAccess) -> None:
        """Rebuild in-memory derived state for the partitions now owned."""

    def process(self, records: list[InputRecord], ctx: BatchContext) -> None:
        """Handle one batch's records (in partition order) through ``ctx``."""


class StoreAccess:
    """Committed state stores of the owned partitions."""

    def __init__(self, stores: dict[tuple[str, int], PartitionStore]) -> None:
        self._stores = stores

    def store(self, name: str, partition: int) -> PartitionStore:
        """The store ``name`` of ``partition``."""
        return self._stores[(name, partition)]

    def has(self, name: str, partition: int) -> bool:
        """Whether this worker keeps ``name`` for ``partition``."""
        return (name, partition) in self._stores


class BatchContext(StoreAccess):
    """What an agent may do inside a batch: send records, dead-letter, use stores."""

    def __init__(self, processor: Processor) -> None:
        super().__init__(processor.stores)
        self._processor = processor
        self.agent = ""

    def send(self, topic: str, record: dict[str, Any], *, key: str) -> None:
        """Send ``record`` to ``topic`` (base name), on its tenant's partition."""
        self._processor.send(topic, record, key=key, agent=self.agent)

    def dead_letter(
        self,
        record: InputRecord,
        reason: DeadLetterReason,
        detail: str,
        *,
        tenant: str | None = None,
    ) -> None:
        """Send ``record``'s original bytes to deadletter.v1 with the reason."""
        self._processor.dead_letter(record, reason, detail, agent=self.agent, tenant=tenant)

    def flush(self) -> None:
        """Deliver what was sent so far to the broker (still inside the open transaction)."""
        self._processor.flush()


class Processor:
    """Runs agents over their input topics with exactly-once transactions."""

    def __init__(
        self,
        settings: Settings,
        agents: Sequence[Agent],
        metrics: WorkerMetrics | None = None,
        codec: AvroCodec | None = None,
        *,
        watchdog: Watchdog | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        self.settings = settings
        self.watchdog = watchdog
        self.liveness = liveness or Liveness(settings.liveness_timeout_s)
        self.agents = list(agents)
        self.metrics = metrics or WorkerMetrics()
        self.codec = codec or AvroCodec(registry_client(settings))
        self.stores: dict[tuple[str, int], PartitionStore] = {}
        self._dispatch: dict[str, list[Agent]] = defaultdict(list)
        for agent in self.agents:
            for base in agent.inputs:
                self._dispatch[settings.topic(base)].append(agent)
        self._base = {settings.topic(t): t for a in self.agents for t in a.inputs}
        self._readers = {
            full: latest_schema(topic_spec(base).schema) for full, base in self._base.items()
        }
        self._owned: frozenset[int] = frozenset()
        self._changelog_offsets: dict[tuple[str, int], int] = {}
        self._delivery_errors: list[str] = []
        self._timeout = settings.request_timeout_s
        self._last_lag = 0.0
        self._failed_agent: str | None = None
        # Per-batch metric counts, added to the metrics once the batch has committed.
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._outputs: dict[str, tuple[str, str, dict[str, Any]]] = {}
        # Tenant -> partition (murmur2 in Python costs more than the produce call).
        self._partition_of: dict[str, int] = {}
        self.consumer = Consumer(self._consumer_config())
        self.producer = Producer(self._producer_config())

    # -- configuration -------------------------------------------------------------------
    def _consumer_config(self) -> dict[str, Any]:
        # Static membership: a restarted worker takes its old place at once, without waiting
        # for the session of its killed predecessor to time out. After a broker restart
        # librdkafka may find the member fenced (fatal): the worker exits and is restarted.
        static = (
            {"group.instance.id": f"{self.settings.app_id}-{self.settings.worker_id}"}
            if self.settings.static_membership else {}
        )
        return {
            **self.settings.kafka_client_config(),
            "group.id": self.settings.app_id,
            **static,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            # range keeps equal partition numbers of co-partitioned topics on one worker
            "partition.assignment.strategy": "range",
            "session.timeout.ms": self.settings.session_timeout_ms,
            "max.poll.interval.ms": 600_000,
            "log_level": 3,
        }

    def _producer_config(self) -> dict[str, Any]:
        return {
            **self.settings.kafka_client_config(),
            "transactional.id": f"{self.settings.app_id}-{self.settings.worker_id}",
            "transaction.timeout.ms": self.settings.transaction_timeout_ms,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": self.settings.compression,
            "linger.ms": 5,
            "message.max.bytes": LARGEST_MESSAGE_BYTES,
            "log_level": 3,
        }

    def changelog_topic(self, store: str) -> str:
        """The compacted topic that backs ``store``."""
        return self.settings.topic(f"{self.settings.app_id}-{store}-changelog")

    # -- main loop ----------------------------------------------------------------------
    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Process until ``stop`` is set; a fatal Kafka error propagates (crash-only: the
        supervisor restarts the worker, and the restart is exactly-once)."""
        with self._guard("init_transactions", self._timeout * 4):
            self.producer.init_transactions(self._timeout * 4)
        self.consumer.subscribe(
            list(self._dispatch), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        if on_ready:
            on_ready()
        self.liveness.beat(in_hand=False)
        backoff = 0.5
        try:
            while not stop.is_set():
                msgs = self.consumer.consume(
                    num_messages=self.settings.batch_max_records,
                    timeout=self.settings.batch_max_wait_s,
                )
                self._maybe_report_lag()
                msgs = [m for m in msgs if self._usable(m)]
                self.liveness.beat(in_hand=bool(msgs))
                if not msgs:
                    continue
                try:
                    self._handle(msgs)
                    backoff = 0.5
                except MemstreamError as exc:
                    if not exc.retriable:
                        raise
                    # Infrastructure (registry, model, broker): nothing of the batch was
                    # committed and its partitions were rewound; wait and read it again.
                    logger.warning("batch failed, retrying in %.1fs: %s", backoff, exc)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            self.liveness.stopped()
            self.close()

    def _guard(self, call: str, timeout_s: float) -> AbstractContextManager[None]:
        """The watchdog's deadline for a blocking client call (librdkafka's transactional
        calls have been seen blocking far past their timeout after a broker restart)."""
        if self.watchdog is None:
            return nullcontext()
        return self.watchdog.deadline(call, timeout_s)

    def flush(self) -> None:
        """Deliver what was produced so far (inside the open transaction), bounded."""
        with self._guard("flush", self._timeout):
            self.producer.flush(self._timeout)

    def _commit(self, offsets: list[TopicPartition]) -> None:
        """Send the consumed offsets into the transaction and commit it."""
        with self._guard("send_offsets_to_transaction", self._timeout):
            self.producer.send_offsets_to_transaction(
                offsets, self.consumer.consumer_group_metadata(), self._timeout
            )
        fault_point("before-commit")
        with self._guard("commit_transaction", self._timeout):
            self.producer.commit_transaction(self._timeout)

    # -- error policy (KIP-1033's processing handler, decided once here) ------------------
    def _handle(self, msgs: list[Message]) -> None:
        """Process a batch; if agent code raises on it, keep the partition flowing.

        A non-retriable ``MemstreamError`` is the data's fault: the batch is bisected at
        once. Any other exception is retried once (it may be transient), then, under
        ``on_processing_error=deadletter``, bisected; under ``fail`` it stops the worker.
        Bisecting commits the halves that succeed and dead-letters each single record that
        still fails, each in its own transaction with its offset. Broker errors and
        retriable errors are raised: they are never a record's fault.
        """
        error = self._attempt(msgs)
        if error is None:
            return
        done: dict[tuple[str, int], int] = {}
        try:
            if not _is_data_error(error):
                logger.error("%s raised on a batch of %d records, retrying it once: %r",
                             self._failed_agent, len(msgs), error)
                error = self._attempt(msgs)
                if error is None:
                    _mark_done(done, msgs)
                    return
                self._check_policy(error)
            logger.warning("isolating the record(s) of a batch of %d that %s fails on: %r",
                           len(msgs), self._failed_agent, error)
            self._bisect(msgs, done)
        finally:
            # Aborts rewound the batch's partitions: go past what was committed since.
            first: dict[tuple[str, int], int] = {}
            for msg in msgs:
                first.setdefault(_slot(msg), cast(int, msg.offset()))
            for (topic, partition), offset in first.items():
                position = done.get((topic, partition), offset)
                self.consumer.seek(TopicPartition(topic, partition, position))

    def _attempt(self, msgs: list[Message]) -> Exception | None:
        """Process ``msgs`` in one transaction; return what agent code raised (the
        transaction was aborted and its partitions rewound), raise infrastructure errors."""
        try:
            self._process_batch(msgs)
        except KafkaException:
            raise
        except MemstreamError as exc:
            if exc.retriable:
                raise
            return exc
        except Exception as exc:  # noqa: BLE001 - agent code's failure, handled by the policy
            return exc
        return None

    def _check_policy(self, error: Exception) -> None:
        if not _is_data_error(error) and self.settings.on_processing_error == "fail":
            raise ProcessingError(
                f"agent {self._failed_agent} raised {type(error).__name__}: {error} "
                "(MEMSTREAM_ON_PROCESSING_ERROR=fail: stopping, nothing committed)"
            ) from error

    def _bisect(self, msgs: list[Message], done: dict[tuple[str, int], int]) -> None:
        """Commit the halves that succeed; dead-letter each single record that fails.
        ``done`` gets the next offset of each partition as far as committed."""
        todo = [msgs]
        while todo:
            part = todo.pop()
            error = self._attempt(part)
            if error is not None and len(part) > 1:
                half = len(part) // 2
                todo += [part[half:], part[:half]]  # left half first: log order
                continue
            if error is not None:
                self._check_policy(error)
                self._dead_letter_failed(part[0], error)
            _mark_done(done, part)

    def _dead_letter_failed(self, msg: Message, exc: Exception) -> None:
        agent = self._failed_agent or self._dispatch[msg.topic()][0].name
        logger.error("dead-lettering %s[%d]@%d: %s failed on it: %r",
                     msg.topic(), msg.partition(), msg.offset(), agent, exc)
        reason = (DeadLetterReason.INVALID_DATA if _is_data_error(exc)
                  else DeadLetterReason.PROCESSING_FAILED)
        self.producer.begin_transaction()
        self._counts.clear()
        try:
            source = SourceCoordinates(msg.topic(), msg.partition(), msg.offset(), msg.key(),
                                       msg.value())
            self._dead_letter_at(source, reason, _summary(agent, exc), agent, None)
            self.flush()
            self._commit([TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)])
        except BaseException:
            self._abort({(msg.topic(), msg.partition()): msg.offset()})
            raise
        self._committed()

    def _usable(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return True
        if err.fatal():
            raise KafkaException(err)
        logger.warning("consumer: %s", err.str())
        return False

    def _process_batch(self, msgs: list[Message]) -> None:
        self._failed_agent = None
        first: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
        for msg in msgs:
            tp = (msg.topic(), msg.partition())
            first.setdefault(tp, msg.offset())
            last[tp] = msg.offset()
        self.producer.begin_transaction()
        self._counts.clear()
        try:
            ctx = BatchContext(self)
            by_agent = self._decode(msgs, ctx)
            for agent in self.agents:
                records = by_agent.get(agent.name)
                if records:
                    ctx.agent = self._failed_agent = agent.name
                    agent.process(records, ctx)
            self._failed_agent = None
            for store in self.stores.values():
                store.send_changes()
            fault_point("after-process")
            self.flush()
            self._raise_delivery_errors()
            self._commit([TopicPartition(t, p, o + 1) for (t, p), o in last.items()])
        except BaseException:
            self._abort(first)
            raise
        self._committed()
        fault_point("after-commit")
        self._apply_stores()

    def _raise_delivery_errors(self) -> None:
        if self._delivery_errors:
            raise KafkaException(KafkaError(KafkaError._FAIL, "; ".join(self._delivery_errors)))

    def _committed(self) -> None:
        """Count a committed transaction and what it carried."""
        self.metrics.transactions.labels("commit").inc()
        self.liveness.progress()
        for (metric, agent_name, label), count in self._counts.items():
            getattr(self.metrics, metric).labels(agent_name, label).inc(count)
        self._counts.clear()

    def _decode(self, msgs: list[Message], ctx: BatchContext) -> dict[str, list[InputRecord]]:
        by_agent: dict[str, list[InputRecord]] = defaultdict(list)
        for msg in msgs:
            full = msg.topic()
            base = self._base[full]
            raw = msg.value()
            for agent in self._dispatch[full]:
                self._counts[("events_in", agent.name, base)] += 1
            try:
                value = self._decode_value(raw, full)
            except CodecError as exc:
                ctx.agent = self._dispatch[full][0].name
                source = SourceCoordinates(full, msg.partition(), msg.offset(), msg.key(), raw)
                self._dead_letter_at(
                    source, DeadLetterReason.UNDECODABLE, str(exc), ctx.agent, None
                )
                continue
            kind, stamp = msg.timestamp()
            record = InputRecord(base, msg.partition(), msg.offset(), msg.key(), raw, value,
                                 stamp if kind != TIMESTAMP_NOT_AVAILABLE else None)
            for agent in self._dispatch[full]:
                by_agent[agent.name].append(record)
        return by_agent

    def _decode_value(self, raw: bytes | None, full_topic: str) -> dict[str, Any]:
        if raw is None:
            raise CodecError("null value (tombstone) on an event topic")
        return self.codec.decode(raw, self._readers[full_topic])

    def _abort(self, first: dict[tuple[str, int], int]) -> None:
        self.metrics.transactions.labels("abort").inc()
        self._counts.clear()
        for store in self.stores.values():
            store.discard()
        try:
            with self._guard("abort_transaction", self._timeout):
                self.producer.abort_transaction(self._timeout)
        except KafkaException:
            logger.exception("abort_transaction failed")
            raise
        # The aborted records' delivery reports ("purged") arrive now: serve and forget them,
        # or the next batch would fail on them.
        self.producer.poll(0)
        self._delivery_errors.clear()
        self._changelog_offsets.clear()
        for (topic, partition), offset in first.items():
            self.consumer.seek(TopicPartition(topic, partition, offset))
        # In-memory state may hold the aborted batch's effects: rebuild it from the stores.
        self._notify_agents()

    def _apply_stores(self) -> None:
        for (_name, partition), store in self.stores.items():
            offset = self._changelog_offsets.pop((store.changelog, partition), None)
            store.apply(None if offset is None else offset + 1)

    # -- sending --------------------------------------------------------------------------
    def send(self, topic: str, record: dict[str, Any], *, key: str, agent: str) -> None:
        """Encode and produce ``record`` inside the open transaction."""
        full, subject, schema = self._output(topic)
        value = self.codec.encode(subject, schema, record)
        tenant = str(record["tenant"])
        partition = self._partition_of.get(tenant)
        if partition is None:
            partition = partition_for_tenant(tenant, self.settings.partitions)
            if len(self._partition_of) < 100_000:
                self._partition_of[tenant] = partition
        self._produce(full, partition, key.encode(), value)
        self._counts[("events_out", agent, topic)] += 1

    def _output(self, topic: str) -> tuple[str, str, dict[str, Any]]:
        """(full topic, subject, schema) of an output topic, its schema id looked up once: a
        subject the registry lacks is a deployment fault, waited out, never a record's."""
        target = self._outputs.get(topic)
        if target is None:
            spec = topic_spec(topic)
            subject, schema = subject_for(self.settings, spec), latest_schema(spec.schema)
            try:
                self.codec.schema_id(subject, schema)
            except CodecError as exc:
                raise UnavailableError(f"output {topic}: {exc}") from exc
            target = self._outputs[topic] = (self.settings.topic(topic), subject, schema)
        return target

    def dead_letter(
        self,
        record: InputRecord,
        reason: DeadLetterReason,
        detail: str,
        *,
        agent: str,
        tenant: str | None,
    ) -> None:
        """Dead-letter a decoded input record."""
        full = self.settings.topic(record.topic)
        self._dead_letter_at(record.coordinates(full), reason, detail, agent, tenant)

    def _dead_letter_at(
        self,
        source: SourceCoordinates,
        reason: DeadLetterReason,
        detail: str,
        agent: str,
        tenant: str | None,
    ) -> None:
        letter = dead_letter(source, agent=agent, reason=reason, detail=detail, tenant=tenant)
        _full, subject, schema = self._output("deadletter.v1")
        value = self.codec.encode(subject, schema, letter)
        # Same partition number as the source: a dead letter stays with its tenant.
        self._produce(
            self.settings.topic("deadletter.v1"), source.partition, source.topic.encode(), value
        )
        self._counts[("dead_letters", agent, reason.value)] += 1
        logger.warning(
            "dead letter from %s[%d]@%d by %s: %s (%s)",
            source.topic, source.partition, source.offset, agent, reason.value, detail,
        )

    def emit_changelog(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        """Produce a state-store change inside the open transaction."""

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self._delivery_errors.append(f"{topic}[{partition}]: {err.str()}")
                return
            slot = (topic, partition)
            self._changelog_offsets[slot] = max(self._changelog_offsets.get(slot, -1), msg.offset())

        self._produce(topic, partition, key, value, delivered)

    def _produce(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes | None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        # Outputs need no per-record callback: if any record of the transaction fails,
        # commit_transaction fails (abortable) and the batch is retried. Changelog records
        # have one, to learn the offsets their store's checkpoint advances to.
        while True:
            try:
                if on_delivery is None:
                    self.producer.produce(topic, value=value, key=key, partition=partition)
                else:
                    self.producer.produce(
                        topic, value=value, key=key, partition=partition, on_delivery=on_delivery
                    )
            except BufferError:
                self.producer.poll(0.1)
            else:
                return

    # -- rebalancing ------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Eager (range) rebalancing: each assignment is the whole new set.
        owned = frozenset(tp.partition for tp in partitions)
        self._open_stores(owned)
        self._owned = owned
        logger.info("assigned partitions %s", sorted(owned))
        self._notify_agents()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        remaining = {tp.partition for tp in consumer.assignment()} - revoked
        self._owned = frozenset(remaining)
        logger.info("revoked partitions %s", sorted(revoked))
        # Also called for lost partitions (no on_lost callback): their stores close too.
        close_partitions(self.stores, revoked)

    def _open_stores(self, partitions: Iterable[int]) -> None:
        opened: list[PartitionStore] = []
        for agent in self.agents:
            for name in agent.stores:
                for partition in partitions:
                    store = self.stores.get((name, partition))
                    if store is None:
                        path = self.settings.worker_data_dir / name / str(partition)
                        store = PartitionStore(
                            name, path, self.changelog_topic(name), partition, self.emit_changelog
                        )
                        self.stores[(name, partition)] = store
                    opened.append(store)
        started = time.monotonic()
        counts = restore_stores(
            opened,
            {**self.settings.kafka_client_config(), "log_level": 3},
            self.settings.transaction_timeout_ms / 1000 + 30,  # no progress for this long
            batch_records=self.settings.restore_batch_records,
            batch_bytes=self.settings.restore_batch_bytes,
            on_progress=self.liveness.progress,  # a long restore is progress, not a hang
        )
        for store, count in counts.items():
            if count:
                logger.info("restored %s[%d]: %d changes", store.name, store.partition, count)
        logger.info(
            "%d store partitions caught up with their changelogs in %.2fs",
            len(opened), time.monotonic() - started,
        )

    def _notify_agents(self) -> None:
        access = StoreAccess(self.stores)
        for agent in self.agents:
            agent.on_assigned(self._owned, access)

    def _maybe_report_lag(self) -> None:
        """Consumer lag per agent and input, from the high watermarks the fetches already
        brought (no broker round trip on the processing thread)."""
        now = time.monotonic()
        if now - self._last_lag < LAG_REPORT_INTERVAL_S:
            return
        self._last_lag = now
        totals: dict[tuple[str, str], int] = defaultdict(int)
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    continue  # nothing fetched from this partition yet
                lag = max(0, high - tp.offset) if tp.offset >= 0 else high
                for agent in self._dispatch.get(tp.topic, []):
                    totals[(agent.name, self._base[tp.topic])] += lag
        except KafkaException as exc:
            logger.warning("lag report failed: %s", exc)
            return
        for (agent_name, base), lag in totals.items():
            self.metrics.consumer_lag.labels(agent_name, base).set(lag)
        self.liveness.set_backlog(sum(totals.values()))

    def close(self) -> None:
        """Leave the group and close stores."""
        try:
            with self._guard("consumer close", self._timeout):
                self.consumer.close()
        finally:
            for store in self.stores.values():
                store.close()
            self.stores.clear()


LAG_REPORT_INTERVAL_S = 5.0

_FAULT = os.environ.get("MEMSTREAM_FAULT_INJECT", "")
_fault_hits: dict[str, int] = defaultdict(int)


class ProcessingError(MemstreamError):
    """Agent code raised on a batch twice and the policy is ``fail``: the worker stops."""


def _is_data_error(error: Exception) -> bool:
    """A non-retriable MemstreamError: an agent refused the record's data."""
    return isinstance(error, MemstreamError) and not error.retriable


def _mark_done(done: dict[tuple[str, int], int], msgs: list[Message]) -> None:
    for msg in msgs:
        done[_slot(msg)] = cast(int, msg.offset()) + 1


def _slot(msg: Message) -> tuple[str, int]:
    """(topic, partition) of a consumed record (both always set on one)."""
    return cast(str, msg.topic()), cast(int, msg.partition())


def _summary(agent: str, exc: BaseException) -> str:
    """``agent``, the exception and where it was raised, for a dead letter (bounded)."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        frame = frames[-1]
        where = f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"
    return f"agent {agent} raised {type(exc).__name__}: {str(exc)[:800]}{where}"


def fault_point(name: str, prepare: Callable[[], None] | None = None) -> None:
    """Crash tests only: ``MEMSTREAM_FAULT_INJECT=<point>:<n>`` kill -9s this process the
    n-th time it reaches ``<point>`` (after-process, before-commit, after-commit,
    memorize-embedded), after calling ``prepare`` (e.g. to put sent records on the broker)."""
    if not _FAULT:
        return
    point, _, nth = _FAULT.partition(":")
    if point == name:
        _fault_hits[name] += 1
        if _fault_hits[name] >= int(nth or 1):
            if prepare is not None:
                prepare()
            logger.warning("fault injection: SIGKILL at %s", name)
            os.kill(os.getpid(), signal.SIGKILL)


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT finish the current batch, then stop."""

    def handler(signum: int, _frame: object) -> None:
        logger.info("signal %d: stopping after the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
