"""Dead letters: a record an agent cannot process, kept whole with the reason and its origin."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from streams.common.exceptions import ValidationError

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
    INVALID_DATA = "invalid_data"
    EVENT_TIME_AHEAD = "event_time_ahead"
    UNKNOWN_INTERACTION = "unknown_interaction"


_REASON_BY_CODE = {
    "empty": DeadLetterReason.EMPTY_TEXT,
    "oversize": DeadLetterReason.OVERSIZE,
    "event_time_ahead": DeadLetterReason.EVENT_TIME_AHEAD,
}


def reason_for(exc: ValidationError) -> DeadLetterReason:
    """The dead-letter reason for a record ``check_event`` refused."""
    if exc.code == "empty" and exc.field != "text":
        return DeadLetterReason.SCHEMA_INVALID
    return _REASON_BY_CODE.get(exc.code, DeadLetterReason.SCHEMA_INVALID)


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot carry (lone surrogates) escaped, so a dead letter
    about a hostile record always encodes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
        "tenant": printable(tenant) if tenant else "unknown",
        "event_id": str(uuid.uuid5(_NAMESPACE, coordinates)),
        "event_time": event_time or datetime.now(UTC),
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "agent": agent,
        "reason_code": reason.value,
        "reason": printable(detail),
        "original_key": source.key,
        "original_value": source.value,
    }
