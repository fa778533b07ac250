"""The one declaration of memstream's topics: names, keys, partitions, cleanup, retention."""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 24 * 60 * 60 * 1000
MIB = 1024 * 1024

# The broker limit for one voice record; the SDK's audio limit leaves room for the
# Avro envelope and record headers below it.
VOICE_MAX_MESSAGE_BYTES = 16 * MIB
VOICE_ENVELOPE_BYTES = 64 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 1 * MIB
LARGEST_MESSAGE_BYTES = VOICE_MAX_MESSAGE_BYTES + MIB


# Topics that hold memory text (memories.v1, summaries.v1, the worker's changelogs): a
# record a delete replaced is compacted away within a day, since the segment holding it
# rolls and becomes cleanable at most this long after it was written.
FORGET_WITHIN_MS = DAY_MS
COMPACT_WITHIN_A_DAY = {
    "segment.ms": str(FORGET_WITHIN_MS),
    "max.compaction.lag.ms": str(FORGET_WITHIN_MS),
}


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name without prefix, the schema subject base it carries, its config.

    ``key_field`` is the record field used as the message key; the partition is always
    chosen from the tenant (streams/common/partitioning.py), on every topic.
    """

    base: str
    schema: str
    key: str
    key_field: str
    cleanup_policy: str
    retention_ms: int | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    compatibility: str = "BACKWARD_TRANSITIVE"
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        """Topic-level broker config as the Kafka admin API takes it."""
        conf = {
            "cleanup.policy": self.cleanup_policy,
            "max.message.bytes": str(self.max_message_bytes),
        }
        if self.retention_ms is not None:
            conf["retention.ms"] = str(self.retention_ms)
        conf.update(self.extra_config)
        return conf


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "telemetry.v1", "telemetry", "session id", "session_id", "delete", retention_ms=365 * DAY_MS
    ),
    TopicSpec(
        "feedback.v1", "feedback", "interaction id", "interaction_id", "delete",
        retention_ms=365 * DAY_MS,
    ),
    TopicSpec(
        "voice.v1",
        "voice",
        "session id",
        "session_id",
        "delete",
        retention_ms=7 * DAY_MS,
        max_message_bytes=VOICE_MAX_MESSAGE_BYTES,
    ),
    TopicSpec(
        "transcripts.v1", "transcript", "session id", "session_id", "delete",
        retention_ms=90 * DAY_MS,
    ),
    TopicSpec("scored.v1", "scored", "tenant", "tenant", "delete", retention_ms=90 * DAY_MS),
    TopicSpec(
        "commands.v1",
        "command",
        "tenant + memory id (partitioned by tenant)",
        "tenant",
        # Compacted, kept forever: a replay re-applies every delete from here, so a delete
        # must outlive the source topics it undoes; the latest command per memory wins.
        "compact",
        extra_config={"delete.retention.ms": str(7 * DAY_MS)},
    ),
    TopicSpec(
        "memories.v1",
        "memory",
        "tenant + memory id (partitioned by tenant)",
        "tenant",
        "compact",
        # A tombstone must stay long enough for every replica and replay to see it.
        extra_config={"delete.retention.ms": str(7 * DAY_MS), **COMPACT_WITHIN_A_DAY},
    ),
    TopicSpec(
        "summaries.v1",
        "summary",
        "tenant + summary id (partitioned by tenant)",
        "tenant",
        "compact",
        extra_config={"delete.retention.ms": str(7 * DAY_MS), **COMPACT_WITHIN_A_DAY},
    ),
    TopicSpec(
        "deadletter.v1",
        "deadletter",
        "source topic",
        "source_topic",
        "delete",
        retention_ms=365 * DAY_MS,
        # A dead letter carries the original bytes, up to a whole voice note.
        max_message_bytes=LARGEST_MESSAGE_BYTES,
    ),
)

TOPICS_BY_BASE: dict[str, TopicSpec] = {t.base: t for t in TOPICS}


def topic_spec(name: str, prefix: str = "") -> TopicSpec:
    """The spec for a topic given by base name (``telemetry.v1``) or full prefixed name."""
    base = name[len(prefix) :] if prefix and name.startswith(prefix) else name
    try:
        return TOPICS_BY_BASE[base]
    except KeyError:
        known = ", ".join(TOPICS_BY_BASE)
        raise KeyError(f"unknown topic {name!r}; memstream topics are: {known}") from None


def voice_audio_limit() -> int:
    """Largest audio payload (bytes) the SDK accepts: the topic limit less the envelope."""
    return TOPICS_BY_BASE["voice.v1"].max_message_bytes - VOICE_ENVELOPE_BYTES

def memory_key(tenant: str, memory_id: str) -> str:
    """The message key of a memory on memories.v1 and of a command about it on commands.v1
    (the compaction key; the partition comes from the tenant alone)."""
    return f"{tenant}:{memory_id}"
