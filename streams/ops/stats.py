"""Per-stage counts from the broker: ingested = memorized + merged + dead-lettered + in flight."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams.common.codec import AvroCodec, CodecError
from streams.common.registry import latest_schema, registry_client
from streams.common.settings import Settings

EOF_TIMEOUT_S = 10.0


@dataclass
class PipelineStats:
    """Committed records per topic, the app's unprocessed records, and the memory tallies."""

    records: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    memories: int = 0
    memorized_events: int = 0
    deleted_memories: int = 0
    deleted_events: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    # (agent, source topic base name, reason code) -> dead letters
    dead_letter_detail: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # Ingested events dead-lettered: telemetry and transcripts refused by score, and scored
    # events memorize refused (each event once, whatever its revisions).
    ingested_dead: int = 0

    @property
    def ingested(self) -> int:
        """Events that should become memories: telemetry and transcripts."""
        return self.records.get("telemetry.v1", 0) + self.records.get("transcripts.v1", 0)

    @property
    def merged(self) -> int:
        """Events merged into an existing memory (exact or near duplicates)."""
        return self.memorized_events - self.memories

    @property
    def dead_lettered(self) -> int:
        """Ingested events dead-lettered on their way to memories (by score or memorize);
        dead feedback and voice notes are not ingested events, so they are not counted."""
        return self.ingested_dead

    @property
    def in_flight(self) -> int:
        """Ingested events not yet accounted for downstream."""
        return self.ingested - self.memorized_events - self.deleted_events - self.dead_lettered


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"memstream-stats-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "log_level": 3,
        }
    )


def _scan(
    settings: Settings, topic: str, starts: dict[int, int] | None = None
) -> list[bytes | None]:
    """Values of the committed records of ``topic`` from ``starts`` (default: beginning)."""
    consumer = _consumer(settings)
    try:
        meta = consumer.list_topics(topic, timeout=settings.request_timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        partitions = list(meta.partitions)
        tps = [TopicPartition(topic, p, (starts or {}).get(p, 0)) for p in partitions]
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in partitions
        }
        todo = {tp.partition for tp in tps if tp.offset < ends[tp.partition]}
        if not todo:
            return []
        consumer.assign(tps)
        values: list[bytes | None] = []
        idle = 0.0
        while todo and idle < EOF_TIMEOUT_S:
            msgs = consumer.consume(num_messages=1000, timeout=0.5)
            idle = idle + 0.5 if not msgs else 0.0
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(msg.partition())
                    continue
                values.append(msg.value())
        return values
    finally:
        consumer.close()


def _committed(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": settings.app_id, "log_level": 3}
    )
    try:
        meta = consumer.list_topics(topic, timeout=settings.request_timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        found = consumer.committed(tps, timeout=settings.request_timeout_s)
        return {tp.partition: max(tp.offset, 0) for tp in found}
    finally:
        consumer.close()


def _scored_event_id(codec: AvroCodec, schema: dict[str, object], raw: bytes | None,
                     offset: object) -> str:
    """The event id of a dead-lettered scored record (its offset if it does not decode)."""
    try:
        return str(codec.decode(raw, schema)["event_id"]) if raw else f"@{offset}"
    except CodecError:
        return f"@{offset}"


def pipeline_stats(settings: Settings) -> PipelineStats:
    """Count what the log holds at each stage (reads the topics; seconds per 100k records)."""
    stats = PipelineStats()
    # commands.v1: the deletes users asked for; its unprocessed ones are not applied yet.
    for base in ("telemetry.v1", "transcripts.v1", "feedback.v1", "voice.v1", "scored.v1",
                 "commands.v1"):
        topic = settings.topic(base)
        stats.records[base] = len(_scan(settings, topic))
        stats.lag[base] = len(_scan(settings, topic, _committed(settings, topic)))
    codec = AvroCodec(registry_client(settings))
    latest: dict[str, dict[str, object]] = {}
    memory_schema = latest_schema("memory")
    for raw in _scan(settings, settings.topic("memories.v1")):
        if raw is None:
            continue
        memory = codec.decode(raw, memory_schema)
        latest[f"{memory['tenant']}:{memory['memory_id']}"] = memory
    live = [m for m in latest.values() if not m["deleted"]]
    stats.memories = len(live)
    stats.memorized_events = sum(int(m["occurrence_count"]) for m in live)  # type: ignore[call-overload]
    gone = [m for m in latest.values() if m["deleted"]]
    stats.deleted_memories = len(gone)
    stats.deleted_events = sum(int(m["occurrence_count"]) for m in gone)  # type: ignore[call-overload]
    letter_schema = latest_schema("deadletter")
    scored_schema = latest_schema("scored")
    dead_scored: set[str] = set()
    for raw in _scan(settings, settings.topic("deadletter.v1")):
        if raw is None:
            continue
        letter = codec.decode(raw, letter_schema)
        agent, source = str(letter["agent"]), str(letter["source_topic"])
        base = source[len(settings.topic_prefix):] if source.startswith(
            settings.topic_prefix) else source
        stats.dead_letters[agent] += 1
        stats.dead_letter_detail[(agent, base, str(letter["reason_code"]))] += 1
        if base in ("telemetry.v1", "transcripts.v1"):
            stats.ingested_dead += 1
        elif base == "scored.v1":
            dead_scored.add(_scored_event_id(codec, scored_schema, letter["original_value"],
                                             letter["source_offset"]))
    stats.ingested_dead += len(dead_scored)
    stats.records["memories.v1"] = len(latest)
    return stats
