"""The commit protocol: one batch, one Kafka transaction; state stores apply only after it commits.

``Transactions.run_batch`` takes a batch through these steps, in this order:

1. ``begin_transaction``;
2. ``process()``: the agents run; their outputs, dead letters and store writes are produced
   into the transaction (``produce``, ``emit_changelog``);
3. every store sends its pending writes to its changelog (``send_changes``);
4. ``flush``; a changelog record the broker refused fails the batch;
5. ``send_offsets_to_transaction`` (the batch's next offsets, the consumer's group metadata:
   KIP-447), then ``commit_transaction``;
6. the commit is counted (metrics, liveness), then every store applies its sent writes with
   the changelog offset they reach (its checkpoint).

If anything raises before the commit returns — the agent, a delivery error, either client
call — the batch is aborted: ``abort_transaction``, every store discards its pending and sent
writes, the purged records' delivery reports are served and forgotten, the consumer seeks
back to the batch's first offsets, and ``on_reset`` lets the agents rebuild their in-memory
state from the committed stores. Then the exception propagates. Kafka errors are not told
apart here (fenced, fatal, abortable, retriable alike): the caller lets a ``KafkaException``
end the worker, whose restart is exactly-once (``init_transactions`` aborts what is open).
If ``abort_transaction`` itself fails, that error propagates and nothing else is undone.

``run_single`` is the same protocol for one dead letter of one record, with its offset.
Each branch has a unit test with fake clients (tests/unit/processing/test_commit_protocol.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import cast

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from streams.common.observability import WorkerMetrics
from streams.processing.clients import DeliveryReport, GroupConsumer, TransactionalProducer
from streams.processing.faults import fault_point
from streams.processing.store import PartitionStore
from streams.processing.watchdog import Liveness

logger = logging.getLogger(__name__)

Slot = tuple[str, int]  # (topic, partition)
Guard = Callable[[str, float], AbstractContextManager[None]]


def slot(msg: Message) -> Slot:
    """(topic, partition) of a consumed record (both always set on one)."""
    return cast(str, msg.topic()), cast(int, msg.partition())


def offset(msg: Message) -> int:
    """The offset of a consumed record (always set on one)."""
    return cast(int, msg.offset())


def no_guard(_call: str, _timeout_s: float) -> AbstractContextManager[None]:
    """No deadline on client calls (no watchdog)."""
    return nullcontext()


class Transactions:
    """The worker's transactional producer, run batch by batch (see the module docstring)."""

    def __init__(
        self,
        producer: TransactionalProducer,
        consumer: GroupConsumer,
        stores: dict[tuple[str, int], PartitionStore],
        *,
        metrics: WorkerMetrics,
        liveness: Liveness,
        timeout_s: float,
        on_reset: Callable[[], None],
        guard: Guard = no_guard,
    ) -> None:
        self.producer = producer
        self.consumer = consumer
        self.stores = stores  # shared with the rebalance callbacks, which open and close them
        self.metrics = metrics
        self.liveness = liveness
        self.timeout_s = timeout_s
        self.on_reset = on_reset
        self.guard = guard
        # Per-batch metric counts (metric, agent, label), added once the batch has committed.
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self._changelog_offsets: dict[Slot, int] = {}
        self._delivery_errors: list[str] = []

    # -- the protocol ---------------------------------------------------------------------
    def run_batch(self, msgs: list[Message], process: Callable[[], None]) -> None:
        """Process ``msgs`` and commit all of it in one transaction, or abort and rewind."""
        first: dict[Slot, int] = {}
        last: dict[Slot, int] = {}
        for msg in msgs:
            first.setdefault(slot(msg), offset(msg))
            last[slot(msg)] = offset(msg)
        self._begin()
        try:
            process()
            for store in self.stores.values():
                store.send_changes()
            fault_point("after-process")
            self.flush()
            self._raise_delivery_errors()
            self._commit([TopicPartition(t, p, o + 1) for (t, p), o in last.items()])
        except BaseException:
            self.abort(first)
            raise
        self._committed()
        fault_point("after-commit")
        self._apply_stores()

    def run_single(self, msg: Message, produce: Callable[[], None]) -> None:
        """Commit what ``produce`` sends (a dead letter) with ``msg``'s offset, or abort."""
        (topic, partition), at = slot(msg), offset(msg)
        self._begin()
        try:
            produce()
            self.flush()
            self._commit([TopicPartition(topic, partition, at + 1)])
        except BaseException:
            self.abort({(topic, partition): at})
            raise
        self._committed()

    def _begin(self) -> None:
        self.producer.begin_transaction()
        self.counts.clear()

    def flush(self) -> None:
        """Deliver what was produced so far (inside the open transaction), bounded."""
        with self.guard("flush", self.timeout_s):
            self.producer.flush(self.timeout_s)

    def _raise_delivery_errors(self) -> None:
        if self._delivery_errors:
            raise KafkaException(KafkaError(KafkaError._FAIL, "; ".join(self._delivery_errors)))

    def _commit(self, offsets: list[TopicPartition]) -> None:
        """Send the consumed offsets into the transaction and commit it."""
        with self.guard("send_offsets_to_transaction", self.timeout_s):
            self.producer.send_offsets_to_transaction(
                offsets, self.consumer.consumer_group_metadata(), self.timeout_s
            )
        fault_point("before-commit")
        with self.guard("commit_transaction", self.timeout_s):
            self.producer.commit_transaction(self.timeout_s)

    def _committed(self) -> None:
        """Count a committed transaction and what it carried."""
        self.metrics.transactions.labels("commit").inc()
        self.liveness.progress()
        for (metric, agent_name, label), count in self.counts.items():
            getattr(self.metrics, metric).labels(agent_name, label).inc(count)
        self.counts.clear()

    def _apply_stores(self) -> None:
        for (_name, partition), store in self.stores.items():
            changelog_offset = self._changelog_offsets.pop((store.changelog, partition), None)
            store.apply(None if changelog_offset is None else changelog_offset + 1)

    def abort(self, first: dict[Slot, int]) -> None:
        """Abort the open transaction, forget its writes, rewind to ``first``, reset agents."""
        self.metrics.transactions.labels("abort").inc()
        self.counts.clear()
        for store in self.stores.values():
            store.discard()
        try:
            with self.guard("abort_transaction", self.timeout_s):
                self.producer.abort_transaction(self.timeout_s)
        except KafkaException:
            logger.exception("abort_transaction failed")
            raise
        # The aborted records' delivery reports ("purged") arrive now: serve and forget them,
        # or the next batch would fail on them.
        self.producer.poll(0)
        self._delivery_errors.clear()
        self._changelog_offsets.clear()
        for (topic, partition), at in first.items():
            self.consumer.seek(TopicPartition(topic, partition, at))
        # In-memory state may hold the aborted batch's effects: rebuild it from the stores.
        self.on_reset()

    # -- producing into the open transaction ----------------------------------------------
    def emit_changelog(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        """Produce a state-store change inside the open transaction."""

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self._delivery_errors.append(f"{topic}[{partition}]: {err.str()}")
                return
            at = (topic, partition)
            self._changelog_offsets[at] = max(self._changelog_offsets.get(at, -1), offset(msg))

        self.produce(topic, partition, key, value, delivered)

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes | None,
        on_delivery: DeliveryReport | None = None,
    ) -> None:
        """Produce one record inside the open transaction, waiting while the queue is full."""
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
