"""The worker's two Kafka clients: their configuration, and what the runtime calls on them.

``TransactionalProducer`` and ``GroupConsumer`` name the calls the runtime makes, so that the
commit protocol can be run against fakes (tests/unit/processing); confluent-kafka's
``Producer`` and ``Consumer`` are the real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from streams.common.settings import Settings
from streams.common.topics import LARGEST_MESSAGE_BYTES

DeliveryReport = Callable[[KafkaError | None, Message], None]
RebalanceCallback = Callable[[Any, list[TopicPartition]], None]


class TransactionalProducer(Protocol):
    """The calls the runtime makes on its transactional producer."""

    def init_transactions(self, timeout: float = -1) -> None: ...
    def begin_transaction(self) -> None: ...
    def produce(
        self,
        topic: str,
        *,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        on_delivery: DeliveryReport | None = None,
    ) -> None: ...
    def poll(self, timeout: float = -1) -> int: ...
    def flush(self, timeout: float = -1) -> int: ...
    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = -1
    ) -> None: ...
    def commit_transaction(self, timeout: float = -1) -> None: ...
    def abort_transaction(self, timeout: float = -1) -> None: ...


class GroupConsumer(Protocol):
    """The calls the runtime makes on its group consumer."""

    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None: ...
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def assignment(self) -> list[TopicPartition]: ...
    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...
    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]: ...
    def consumer_group_metadata(self) -> Any: ...
    def close(self) -> None: ...


def consumer_config(settings: Settings) -> dict[str, Any]:
    """The group consumer's configuration (read_committed, manual offsets, range assignor)."""
    # Static membership: a restarted worker takes its old place at once, without waiting
    # for the session of its killed predecessor to time out. After a broker restart
    # librdkafka may find the member fenced (fatal): the worker exits and is restarted.
    static = (
        {"group.instance.id": f"{settings.app_id}-{settings.worker_id}"}
        if settings.static_membership else {}
    )
    return {
        **settings.kafka_client_config(),
        "group.id": settings.app_id,
        **static,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        # range keeps equal partition numbers of co-partitioned topics on one worker
        "partition.assignment.strategy": "range",
        "session.timeout.ms": settings.session_timeout_ms,
        "max.poll.interval.ms": 600_000,
        "log_level": 3,
    }


def producer_config(settings: Settings) -> dict[str, Any]:
    """The transactional producer's configuration (one transactional id per worker)."""
    return {
        **settings.kafka_client_config(),
        "transactional.id": f"{settings.app_id}-{settings.worker_id}",
        "transaction.timeout.ms": settings.transaction_timeout_ms,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": settings.worker_compression,
        "linger.ms": 5,
        "message.max.bytes": LARGEST_MESSAGE_BYTES,
        "log_level": 3,
    }


def make_clients(settings: Settings) -> tuple[GroupConsumer, TransactionalProducer]:
    """The real consumer and producer for ``settings``."""
    return Consumer(consumer_config(settings)), Producer(producer_config(settings))
