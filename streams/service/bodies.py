"""The HTTP API's request and response bodies (pydantic): validation, and the OpenAPI spec.

Inputs are refused with the field and the limit: text that is not valid Unicode, times without
a zone, sizes past their bounds (``errors.validation_error`` shapes the 422).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from streams.service.consistency import MAX_TOKEN_CHARS


def _unicode(text: str) -> str:
    """Refuse text that is not valid Unicode (a lone surrogate cannot be encoded)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"is not valid Unicode text (unpaired surrogate at index {exc.start})"
                         ) from None
    return text


def _aware(when: datetime) -> datetime:
    """Refuse a time without a zone: which instant it names would be a guess."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("must include a time zone (e.g. 2026-11-25T10:00:00Z or +01:00)")
    return when


Text = Annotated[str, AfterValidator(_unicode)]
When = Annotated[datetime, AfterValidator(_aware)]
SessionId = Annotated[Text, Field(min_length=1, max_length=256)]
ConsistencyToken = Annotated[Text, Field(
    max_length=MAX_TOKEN_CHARS,
    description="from the SDK's DeliveryResult (``topic:partition:offset``; up to 8, "
    "comma-separated, all on the caller's tenant's partition): wait until the replica "
    "reflects it")]
Similarity = Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False)]


class _Request(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="ignore")


class ErrorBody(BaseModel):
    """An error: ``detail`` says what and which limit."""

    detail: Any


class Health(BaseModel):
    """Liveness: the process and its feed thread."""

    status: str
    feed: str


class Ready(BaseModel):
    """Readiness: each check with ``ok`` and a (credential-free) ``detail``."""

    ready: bool
    failing: list[str]
    checks: dict[str, dict[str, Any]]


class Filters(_Request):
    """Restrict a recall; every field is optional."""

    session_id: SessionId | None = None
    kinds: list[Annotated[Text, Field(max_length=64)]] | None = Field(
        None, max_length=16, description="event kinds, e.g. QUERY, RESPONSE")
    time_from: When | None = Field(None, description="memory event time at or after (with a "
                                   "time zone)")
    time_to: When | None = Field(None, description="memory event time at or before (with a "
                                 "time zone)")
    min_value: float | None = Field(None, description="minimum value; unknown values fail it")


class RecallRequest(_Request):
    """A semantic recall."""

    query: Text = Field(..., min_length=1, max_length=32_000)
    k: int = Field(10, ge=1, le=200)
    min_similarity: Similarity = 0.0
    filters: Filters | None = None
    consistency_token: ConsistencyToken | None = None
    include_history: bool = Field(
        False, description="also return, under each hit, the older values it superseded"
    )


class PastValue(BaseModel):
    """A memory whose value was superseded, with the interval in which it held."""

    memory_id: str
    text: str
    valid_from: int = Field(..., description="epoch milliseconds: when it was first stated")
    valid_until: int | None = Field(..., description="epoch milliseconds: when it changed")
    superseded_by: str | None
    occurrence_count: int
    source_event_ids: list[str]
    session_id: str
    kind: str


class RecallHit(BaseModel):
    """One recalled memory (always a current one: superseded values come only as history)."""

    memory_id: str
    text: str
    similarity: float
    value: float | None
    occurrence_count: int
    source_event_ids: list[str]
    session_id: str
    kind: str
    event_time: int = Field(..., description="epoch milliseconds")
    valid_from: int = Field(..., description="epoch milliseconds: when it was first stated")
    valid_until: int | None = Field(None, description="always null: a hit is current")
    supersedes: str | None = Field(None, description="memory id of the value it replaced")
    history: list[PastValue] | None = Field(
        None, description="with include_history: the values it superseded, newest first")


class RecallResponse(BaseModel):
    """Hits, best first."""

    hits: list[RecallHit]
    model_id: str


class ContextRequest(_Request):
    """A context pack for a session."""

    session_id: SessionId
    query: Text | None = Field(None, max_length=32_000)
    token_budget: int = Field(512, ge=1, le=100_000)
    k: int = Field(20, ge=0, le=200, description="memories considered at most")
    max_summaries: int = Field(3, ge=0, le=50)
    min_similarity: Similarity = 0.0
    consistency_token: ConsistencyToken | None = None
    include_history: bool = Field(
        False, description="after each memory, the older values it superseded "
                           "(type superseded_memory, with valid_from/valid_until)")


class ContextPiece(BaseModel):
    """A summary or a memory, with the event ids behind it."""

    type: str = Field(..., description="summary, memory or superseded_memory")
    id: str
    text: str
    tokens: int
    source_ids: list[str]
    similarity: float | None = None
    valid_from: int | None = Field(None, description="memories: epoch ms first stated")
    valid_until: int | None = Field(None, description="superseded memories: epoch ms changed")
    superseded_memory_ids: list[str] | None = Field(
        None, description="summaries: superseded memories their events stated; the highlight "
                          "lines quoting them are left out (marked [superseded] with "
                          "include_history)")


class ContextResponse(BaseModel):
    """Pieces in order (summaries, then memories by relevance) within the budget."""

    pieces: list[ContextPiece]
    tokens_used: int
    token_budget: int
    model_id: str


class Memory(BaseModel):
    """A memory as the replica holds it (without its vector)."""

    memory_id: str
    text: str
    session_id: str
    kind: str
    event_time: int
    value: float | None
    confidence: float | None
    occurrence_count: int
    source_event_ids: list[str]
    model_id: str
    scorer_version: str | None
    valid_from: int
    supersedes: str | None
    superseded_by: str | None
    superseded_at: int | None


class Identity(BaseModel):
    """Who a bearer token is (clients such as `memstream mcp` check their tenant with it)."""

    tenant: str


class Deleted(BaseModel):
    """A delete that went through the log."""

    memory_id: str
    deleted: bool
    applied: bool = Field(..., description="the replica already reflects it")
    consistency_token: str
