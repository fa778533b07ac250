"""The memories as of given offsets: latest committed record per key of ``memories.v1``.

An export covers, per partition, every record below an end offset: the end when the
export starts (for a read_committed consumer the broker answers with the last stable
offset, so an open transaction's records are not covered and never block the export), or
offsets pinned from an earlier manifest (``--to-offsets``) so two exports of the same
offsets read the same records. Compaction only ever removes a
record that a later one of the same key replaced; a pinned export is exact as long as the
replacing records are also below the pinned offsets, i.e. until compaction has cleaned a
key that changed after them.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams.common.codec import AvroCodec
from streams.common.exceptions import UnavailableError
from streams.common.messages import coordinates
from streams.common.registry import latest_schema, registry_client
from streams.common.settings import Settings
from streams.common.topics import topic_spec
from streams.ops.export.exceptions import ExportError, ExportStalledError

logger = logging.getLogger(__name__)

TOPIC = "memories.v1"


class Progress(Protocol):
    """Where reading reports how far it got (a progress bar, or nothing)."""

    def start(self, total: int) -> None:
        """``total`` records are to be read."""

    def advance(self, count: int) -> None:
        """``count`` more offsets were read."""


class NoProgress:
    """Reports nothing."""

    def start(self, total: int) -> None:
        """Ignore."""

    def advance(self, count: int) -> None:
        """Ignore."""


@dataclass(frozen=True)
class Snapshot:
    """The live memories (key → record without its embedding) below ``offsets``."""

    topic: str
    offsets: dict[int, int]
    memories: dict[str, dict[str, Any]]


def read_memories(
    settings: Settings,
    *,
    to_offsets: dict[int, int] | None = None,
    progress: Progress | None = None,
    stall_timeout_s: float = 30.0,
) -> Snapshot:
    """Read ``memories.v1`` (read_committed) up to its end or ``to_offsets``."""
    progress = progress or NoProgress()
    name = settings.topic(TOPIC)
    codec = AvroCodec(registry_client(settings))
    reader = latest_schema(topic_spec(TOPIC).schema)
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"memstream-export-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "log_level": 3,
        }
    )
    try:
        starts, ends = _bounds(consumer, name, settings.request_timeout_s, to_offsets)
        progress.start(sum(ends[p] - starts[p] for p in ends))
        position = dict(starts)
        memories: dict[str, dict[str, Any]] = {}
        pending = {p for p in ends if position[p] < ends[p]}
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in pending])
        last_move = time.monotonic()
        while pending:
            msgs = consumer.consume(num_messages=500, timeout=0.5)
            if not msgs and time.monotonic() - last_move > stall_timeout_s:
                stuck = {p: (position[p], ends[p]) for p in sorted(pending)}
                raise ExportStalledError(
                    f"export of {name}: stuck below the end offsets for {stall_timeout_s:.0f}s "
                    f"(partition: (reached, end) {stuck}); an open transaction holds the last "
                    "stable offset; retry later"
                )
            for msg in msgs:
                if msg.partition() not in pending:
                    continue  # or an event about no partition: the stall timeout bounds it
                _, p, offset = coordinates(msg)
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise UnavailableError(f"reading {name}[{p}]: {err.str()}")
                    reached = min(offset, ends[p])
                elif offset >= ends[p]:
                    reached = ends[p]
                else:
                    _apply(memories, msg.key(), msg.value(), codec, reader)
                    reached = offset + 1
                if reached > position[p]:
                    progress.advance(reached - position[p])
                    position[p] = reached
                    last_move = time.monotonic()
                if position[p] >= ends[p]:
                    pending.discard(p)
        return Snapshot(name, ends, memories)
    finally:
        consumer.close()


def _bounds(
    consumer: Consumer, name: str, timeout: float, to_offsets: dict[int, int] | None
) -> tuple[dict[int, int], dict[int, int]]:
    metadata = consumer.list_topics(name, timeout=timeout)
    topic = metadata.topics.get(name)
    if topic is None or topic.error is not None:
        why = topic.error.str() if topic is not None else "unknown topic"
        raise UnavailableError(f"topic {name}: {why}")
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for p in sorted(topic.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=timeout)
        starts[p], ends[p] = low, high
    if to_offsets is None:
        return starts, ends
    if set(to_offsets) != set(ends):
        raise ExportError(
            f"pinned offsets name partitions {sorted(to_offsets)}, {name} has {sorted(ends)}"
        )
    for p, pinned in to_offsets.items():
        if not starts[p] <= pinned <= ends[p]:
            raise ExportError(
                f"pinned offset {pinned} of {name}[{p}] is outside [{starts[p]}, {ends[p]}]"
            )
    return starts, dict(to_offsets)


def _apply(
    memories: dict[str, dict[str, Any]],
    key: bytes | None,
    raw: bytes | None,
    codec: AvroCodec,
    reader: dict[str, Any],
) -> None:
    """Latest record per key wins; a tombstone or a deleted memory removes the key."""
    if key is None:
        logger.warning("memories record without a key: skipped")
        return
    k = key.decode("utf-8", "replace")
    if raw is None:
        memories.pop(k, None)
        return
    value = codec.decode(raw, reader)
    if value.get("deleted"):
        memories.pop(k, None)
        return
    value.pop("embedding", None)  # not part of the dataset; the largest field by far
    memories[k] = value
