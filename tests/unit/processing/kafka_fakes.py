"""Fakes of the worker's Kafka clients and codec that record every call.

They stand in for confluent-kafka only where the real broker cannot be made to fail on
demand (an error at one exact step of a transaction); the real stack is tested end to end
in tests/integration (test_runtime.py, test_faults.py, test_pipeline.py's kill -9 runs).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streams.common.codec import CodecError

GROUP_METADATA = object()
DeliveryReport = Callable[[KafkaError | None, Message], None]


@dataclass
class Produced:
    """One record produced into the fake's open transaction."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    on_delivery: DeliveryReport | None
    offset: int = -1
    delivered: bool = False


@dataclass
class FakeProducer:
    """A transactional producer that logs each call in ``calls`` and fails where told.

    ``fail[call]`` is raised by that call (once, then removed); ``refuse_topic`` makes the
    broker refuse every record of that topic (an error delivery report at flush);
    ``buffer_full`` makes that many ``produce`` calls raise BufferError first.
    """

    fail: dict[str, BaseException] = field(default_factory=dict)
    refuse_topic: str | None = None
    buffer_full: int = 0
    calls: list[str] = field(default_factory=list)
    offsets_sent: list[list[tuple[str, int, int]]] = field(default_factory=list)
    committed: list[Produced] = field(default_factory=list)
    before_commit: Callable[[], None] | None = None
    _open: list[Produced] = field(default_factory=list)
    _purged: list[Produced] = field(default_factory=list)
    _next_offset: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail.pop(name)

    def init_transactions(self, timeout: float = -1) -> None:
        self._call("init_transactions")

    def begin_transaction(self) -> None:
        self._call("begin_transaction")

    def produce(
        self,
        topic: str,
        *,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        on_delivery: DeliveryReport | None = None,
    ) -> None:
        if self.buffer_full:
            self.buffer_full -= 1
            self.calls.append("produce: BufferError")
            raise BufferError("queue full")
        self._call(f"produce {topic}[{partition}]")
        assert isinstance(key, bytes | None) and isinstance(value, bytes | None)
        slot = (topic, partition)
        record = Produced(topic, partition, key, value, on_delivery, self._next_offset[slot])
        self._next_offset[slot] += 1
        self._open.append(record)

    def _deliver(self) -> None:
        for record in self._open:
            if record.delivered:
                continue
            record.delivered = True
            if record.on_delivery is None:
                continue
            err = None
            if record.topic == self.refuse_topic:
                err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "refused by the broker")
            msg = Message(topic=record.topic, partition=record.partition, offset=record.offset)
            record.on_delivery(err, msg)

    def flush(self, timeout: float = -1) -> int:
        self._call("flush")
        self._deliver()
        return 0

    def poll(self, timeout: float = -1) -> int:
        self.calls.append(f"poll({timeout:g})")
        for record in self._purged:
            if record.on_delivery is not None:
                msg = Message(topic=record.topic, partition=record.partition, offset=-1)
                record.on_delivery(KafkaError(KafkaError._PURGE_QUEUE, "purged"), msg)
        self._purged.clear()
        return 0

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = -1
    ) -> None:
        assert group_metadata is GROUP_METADATA
        self._call("send_offsets_to_transaction")
        self.offsets_sent.append([(tp.topic, tp.partition, tp.offset) for tp in positions])

    def commit_transaction(self, timeout: float = -1) -> None:
        if self.before_commit is not None:
            self.before_commit()
        self._call("commit_transaction")
        self._deliver()
        self.committed += self._open
        self._open = []

    def abort_transaction(self, timeout: float = -1) -> None:
        self._call("abort_transaction")
        self._purged = [r for r in self._open if not r.delivered]
        self._open = []

    def committed_to(self, topic: str) -> list[Produced]:
        """The committed records of ``topic``, in produce order."""
        return [r for r in self.committed if r.topic == topic]


def message(topic: str, partition: int, offset: int, value: bytes | None = b"{}",
            key: bytes | None = b"acme", error: KafkaError | None = None) -> Message:
    """A consumed record as confluent-kafka hands it over."""
    return Message(topic=topic, partition=partition, offset=offset, key=key, value=value,
                   error=error, timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_000))


@dataclass
class FakeConsumer:
    """A group consumer that hands out ``batches`` in turn and logs seeks and closing.

    ``rebalances[i]`` (``("assign" | "revoke", partitions)``) runs the rebalance callback
    inside the i-th ``consume`` call, before it returns, as confluent-kafka does. When the
    batches run out, ``consume`` sets ``stop`` (if given) and returns nothing.
    """

    batches: list[list[Message]] = field(default_factory=list)
    rebalances: dict[int, tuple[str, list[TopicPartition]]] = field(default_factory=dict)
    stop: Any = None
    seeks: list[tuple[str, int, int]] = field(default_factory=list)
    closed: bool = False
    assigned: list[TopicPartition] = field(default_factory=list)
    consumed: int = 0
    _on_assign: Any = None
    _on_revoke: Any = None

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None) -> None:
        self._on_assign, self._on_revoke = on_assign, on_revoke

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        rebalance = self.rebalances.get(self.consumed)
        self.consumed += 1
        if rebalance is not None:
            kind, partitions = rebalance
            if kind == "assign":
                self.assigned = list(partitions)
                self._on_assign(self, partitions)
            else:
                self._on_revoke(self, partitions)
                gone = {(tp.topic, tp.partition) for tp in partitions}
                self.assigned = [tp for tp in self.assigned if (tp.topic, tp.partition) not in gone]
        if self.batches:
            return self.batches.pop(0)
        if self.stop is not None:
            self.stop.set()
        return []

    def seek(self, partition: TopicPartition) -> None:
        self.seeks.append((partition.topic, partition.partition, partition.offset))

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        return -1, -1

    def consumer_group_metadata(self) -> Any:
        return GROUP_METADATA

    def close(self) -> None:
        self.closed = True


class FakeCodec:
    """JSON instead of Avro, no registry: bytes starting with 0xff do not decode."""

    def decode(self, raw: bytes, reader: Any) -> dict[str, Any]:
        if raw.startswith(b"\xff"):
            raise CodecError("unknown magic byte 0xff")
        value = json.loads(raw)
        assert isinstance(value, dict)
        return value

    def encode(self, subject: str, schema: Any, record: dict[str, Any]) -> bytes:
        return json.dumps(record, default=str).encode()

    def schema_id(self, subject: str, schema: Any) -> int:
        return 1


def kafka_error(kind: str) -> KafkaException:
    """A transactional call's failure, as librdkafka classifies it."""
    errors = {
        "fenced": KafkaError(KafkaError._FENCED, "producer fenced by a newer instance",
                             fatal=True),
        "abortable": KafkaError(KafkaError.ILLEGAL_GENERATION,
                                "group generation moved on (rebalanced)", txn_requires_abort=True),
        "retriable": KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True),
    }
    return KafkaException(errors[kind])
