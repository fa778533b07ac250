"""Dead letters: a record an agent cannot process, kept whole with the reason and its origin."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "memstream:deadletter")


class DeadLetterReason(StrEnum):
    """Why a record was dead-lettered; a bounded set, so it can label a metric."""

    UNDECODABLE = "undecodable"
    SCHEMA_INVALID = "schema_invalid"
    EMPTY_TEXT = "empty_text"
    OVERSIZE = "oversize"
    UNDECODABLE_AUDIO = "undecodable_audio"
    SILENT_AUDIO = "silent_audio"
    EMPTY_AUDIO = "empty_audio"
    AUDIO_TOO_LONG = "audio_too_long"
    NO_SPEECH = "no_speech"
    PROCESSING_FAILED = "processing_failed"


@dataclass(frozen=True)
class SourceCoordinates:
    """Where a record was read: topic, partition, offset, and its raw key and value."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def dead_letter(
    source: SourceCoordinates,
    *,
    agent: str,
    reason: DeadLetterReason,
    detail: str,
    tenant: str | None = None,
    event_time: datetime | None = None,
) -> dict[str, Any]:
    """The ``deadletter.v1`` record for ``source``; its id is derived from the coordinates.

    The same input dead-lettered twice (a replay) gets the same ``event_id``, so a
    reader can count each poison record once.
    """
    coordinates = f"{source.topic}:{source.partition}:{source.offset}:{agent}"
    return {
        "tenant": tenant or "unknown",
        "event_id": str(uuid.uuid5(_NAMESPACE, coordinates)),
        "event_time": event_time or datetime.now(UTC),
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "agent": agent,
        "reason_code": reason.value,
        "reason": detail,
        "original_key": source.key,
        "original_value": source.value,
    }
