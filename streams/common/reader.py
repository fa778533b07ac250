"""Read a topic back, decoded through the registry, with ``read_committed`` isolation."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams.common.codec import AvroCodec
from streams.common.exceptions import UnavailableError
from streams.common.messages import coordinates
from streams.common.registry import latest_schema, registry_client
from streams.common.settings import Settings
from streams.common.topics import topic_spec


@dataclass(frozen=True)
class ReadRecord:
    """One decoded record with its coordinates."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: dict[str, Any] | None


def read_topic(
    settings: Settings,
    topic: str,
    *,
    max_records: int | None = None,
    idle_timeout_s: float = 5.0,
    committed: bool = True,
) -> Iterator[ReadRecord]:
    """Every committed record of ``topic`` from the beginning, up to its current end.

    Stops at the end offsets seen when it starts (or after ``max_records``); uses no
    consumer group offsets, so reading changes nothing for other consumers.
    ``committed=False`` also shows records of open or aborted transactions (diagnostics).
    """
    spec = topic_spec(topic, settings.topic_prefix)
    name = settings.topic(spec.base)
    codec = AvroCodec(registry_client(settings))
    reader_schema = latest_schema(spec.schema)
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"memstream-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            "log_level": 3,
        }
    )
    try:
        metadata = consumer.list_topics(name, timeout=settings.request_timeout_s)
        if metadata.topics[name].error is not None:
            raise UnavailableError(f"topic {name}: {metadata.topics[name].error.str()}")
        ends: dict[int, int] = {}
        for p in metadata.topics[name].partitions:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(name, p), timeout=settings.request_timeout_s
            )
            ends[p] = high
        # The high watermark may include an open or aborted transaction's records and
        # control markers: stop at it, or when nothing more arrives for idle_timeout_s.
        pending = {p for p, high in ends.items() if high > 0}
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in ends])
        count = 0
        last = time.monotonic()
        while pending and (max_records is None or count < max_records):
            msg = consumer.poll(0.5)
            if msg is None:
                # Past the last data record only control markers may remain.
                for tp in consumer.position([TopicPartition(name, p) for p in pending]):
                    if tp.offset >= ends[tp.partition]:
                        pending.discard(tp.partition)
                if time.monotonic() - last > idle_timeout_s:
                    break
                continue
            last = time.monotonic()
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise UnavailableError(f"reading {name}: {err.str()}")
            _, partition, offset = coordinates(msg)
            if offset + 1 >= ends[partition]:
                pending.discard(partition)
            raw = msg.value()
            key = msg.key()
            yield ReadRecord(
                name,
                partition,
                offset,
                key.decode("utf-8", "replace") if key is not None else None,
                codec.decode(raw, reader_schema) if raw is not None else None,
            )
            count += 1
    finally:
        consumer.close()
