"""Typed events that application code sends through the SDK.

Each is a frozen dataclass whose fields are those of the latest schema version of its
topic (a unit test keeps them in step); ``event_id`` and ``event_time`` default to a new
UUID and now.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar


def _new_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class TelemetryEvent:
    """A query, response, tool call, outcome or note emitted by the assistant runtime."""

    TOPIC: ClassVar[str] = "telemetry.v1"

    tenant: str
    session_id: str
    interaction_id: str
    kind: str
    text: str
    tool_name: str | None = None
    outcome: str | None = None
    latency_ms: int | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    model: str | None = None
    token_count: int | None = None
    event_id: str = field(default_factory=_new_id)
    event_time: datetime = field(default_factory=_now)


@dataclass(frozen=True, kw_only=True)
class Feedback:
    """A user's explicit rating of one interaction (0 worst, 1 best)."""

    TOPIC: ClassVar[str] = "feedback.v1"

    tenant: str
    session_id: str
    interaction_id: str
    rating: float
    label: str | None = None
    comment: str | None = None
    source: str = "user"
    event_id: str = field(default_factory=_new_id)
    event_time: datetime = field(default_factory=_now)


@dataclass(frozen=True, kw_only=True)
class VoiceNote:
    """A recorded voice note: encoded audio bytes plus what is known about them."""

    TOPIC: ClassVar[str] = "voice.v1"

    tenant: str
    session_id: str
    codec: str
    audio: bytes
    interaction_id: str | None = None
    sample_rate: int | None = None
    duration_ms: int | None = None
    event_id: str = field(default_factory=_new_id)
    event_time: datetime = field(default_factory=_now)


SDK_EVENTS: tuple[type[Any], ...] = (TelemetryEvent, Feedback, VoiceNote)


def as_record(event: Any) -> dict[str, Any]:
    """A plain dict from a dataclass, a pydantic model or a mapping."""
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    if hasattr(event, "model_dump"):
        return dict(event.model_dump())
    if isinstance(event, Mapping):
        return dict(event)
    raise TypeError(
        f"cannot send a {type(event).__name__}: pass a memstream event dataclass, "
        "a pydantic model or a dict"
    )
