"""The score agent: telemetry and transcripts in, scored events out; late feedback re-scores.

State: ``interactions`` (tenant + interaction id → its events and the latest rating), so
feedback joins the events it rates whichever arrives first, until the interaction expires.
Reusability and novelty come from the memorize agent's stores when this worker keeps them
(same partition, same process): no vector search here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from agents.dedupe import content_hash
from agents.scoring import ScoreInputError, ScoreInputs, ValueScorer
from streams.common.codec import to_millis
from streams.common.exceptions import ValidationError
from streams.common.keys import SEP
from streams.common.observability import WorkerMetrics
from streams.common.validation import check_event
from streams.processing.api import (
    Agent,
    BatchContext,
    DeadLetterReason,
    InputRecord,
    StoreAccess,
    reason_for,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

# The interactions store's reserved key for a partition's event-time clock (no tenant:
# interaction key starts with two separators).
CLOCK_KEY = SEP + SEP + "clock"
# Feedback records kept per interaction while none of its events has arrived, at most this
# many and this many bytes of them (each is dead-lettered if none comes before it expires;
# beyond the bounds, the oldest are dead-lettered at once).
MAX_PENDING_FEEDBACK = 100
MAX_PENDING_FEEDBACK_BYTES = 512 * 1024
# An interaction keeps its newest events, at most this many and this many characters of
# their texts (1 MiB of UTF-8 at most, under the changelog topic's 2 MiB record limit), for
# feedback to re-score; older events leave it (counted), and a later rating re-scores only
# those kept. An interaction is a turn (a query, its answer, tool calls, an outcome): a
# client that reuses one interaction id for everything would otherwise make each event cost
# more than the one before, and the entry's changelog record would outgrow the topic's
# limit and stop the worker.
MAX_INTERACTION_EVENTS = 100
MAX_INTERACTION_TEXT_CHARS = 256_000


class ScoreAgent(Agent):
    """Scores each event; re-scores an interaction's events when its feedback arrives."""

    name = "score"
    inputs = ("telemetry.v1", "transcripts.v1", "feedback.v1")
    stores = ("interactions",)

    def __init__(
        self,
        scorer: ValueScorer,
        *,
        max_text_chars: int,
        interaction_ttl_s: float,
        metrics: WorkerMetrics,
        max_event_time_ahead_s: float = 86_400,
    ) -> None:
        self.scorer = scorer
        self.max_text_chars = max_text_chars
        self.ttl_ms = int(interaction_ttl_s * 1000)
        self.max_ahead_ms = int(max_event_time_ahead_s * 1000)
        self.metrics = metrics
        # Per partition, this batch's newest event time (the stream clock lives in the store).
        self._newest_ms: dict[int, int] = {}

    def rebuild(self, partitions: frozenset[int], stores: StoreAccess) -> None:
        """Nothing in memory to rebuild: the interactions and the clock live in the store."""
        self._newest_ms.clear()

    def process(self, records: list[InputRecord], ctx: BatchContext) -> None:
        """Score, join and re-score, record by record in partition order."""
        for record in records:
            try:
                # The SDK's own check; the event time is bounded by the broker timestamp, so
                # one record dated far ahead cannot move the stream clock (and expire state).
                check_event(record.topic, record.value, max_text_chars=self.max_text_chars,
                            now_ms=record.timestamp_ms, max_ahead_ms=self.max_ahead_ms)
            except ValidationError as exc:
                tenant = None if exc.field == "tenant" else record.value.get("tenant")
                ctx.dead_letter(record, reason_for(exc), str(exc), tenant=tenant)
                continue
            try:
                if record.topic == "feedback.v1":
                    self._feedback(record, ctx)
                else:
                    self._event(record, ctx)
            except ScoreInputError as exc:
                ctx.dead_letter(record, DeadLetterReason.SCHEMA_INVALID, str(exc),
                                tenant=record.value.get("tenant"))
        for partition in {r.partition for r in records}:
            self._expire(partition, ctx)

    # -- events -------------------------------------------------------------------------
    def _event(self, record: InputRecord, ctx: BatchContext) -> None:
        v = record.value
        tenant, text = v["tenant"], v["text"]
        interaction = v.get("interaction_id") or v["event_id"]
        key = f"{tenant}{SEP}{interaction}"
        store = ctx.store("interactions", record.partition)
        entry = store.get(key) or {"events": [], "rating": None}
        if any(e["event_id"] == v["event_id"] for e in entry["events"]):
            return  # the same event delivered twice upstream: scored once
        entry.pop("pending", None)  # feedback that came first has found its interaction
        event = {
            "event_id": v["event_id"],
            "event_time": to_millis(v["event_time"]),
            "session_id": v["session_id"],
            "interaction_id": v.get("interaction_id"),
            "kind": v.get("kind") or "TRANSCRIPT",
            "outcome": v.get("outcome"),
            "text": text,
            "source_topic": record.topic,
            "content_hash": content_hash(text),
            "revision": 0,
        }
        events = entry["events"]
        events.append(event)
        dropped = overflow(events, MAX_INTERACTION_EVENTS, MAX_INTERACTION_TEXT_CHARS,
                           lambda e: len(e["text"]))
        if dropped:
            del events[:dropped]
            self.metrics.interaction_events_dropped.inc(dropped)
        entry["touched"] = max(entry.get("touched", 0), event["event_time"])
        store.put(key, entry)
        self._seen(record.partition, event["event_time"])
        self._emit(tenant, event, entry["rating"], record.partition, ctx)

    def _feedback(self, record: InputRecord, ctx: BatchContext) -> None:
        v = record.value
        tenant = v["tenant"]
        key = f"{tenant}{SEP}{v['interaction_id']}"
        store = ctx.store("interactions", record.partition)
        event_time = to_millis(v["event_time"])
        entry = store.get(key)
        if entry is None or not entry["events"]:
            if self._too_late(record.partition, event_time, store):
                ctx.dead_letter(
                    record, DeadLetterReason.UNKNOWN_INTERACTION,
                    f"feedback for unknown or expired interaction {v['interaction_id']!r}: its "
                    f"event_time is over the interaction TTL ({self.ttl_ms // 1000}s) behind "
                    "the partition's stream time", tenant=tenant)
                return
            # Feedback may come before its events: it waits, and is dead-lettered when it
            # expires unmatched (never dropped in silence).
            entry = entry or {"events": [], "rating": None}
            pending = [*entry.get("pending", []),
                       {"offset": record.offset, "key": record.key, "raw": record.raw}]
            over = overflow(pending, MAX_PENDING_FEEDBACK, MAX_PENDING_FEEDBACK_BYTES,
                            lambda p: len(p["raw"] or b""))
            for early in pending[:over]:
                self._unmatched(key, early, record.partition, ctx,
                                f"over {MAX_PENDING_FEEDBACK} feedback records or "
                                f"{MAX_PENDING_FEEDBACK_BYTES} bytes of them waited for it; "
                                "the oldest are dead-lettered at once")
            entry["pending"] = pending[over:]
        rating = float(v["rating"])
        entry["rating"] = rating
        entry["touched"] = max(entry.get("touched", 0), event_time)
        for event in entry["events"]:
            event["revision"] += 1
            self._emit(tenant, event, rating, record.partition, ctx)
        store.put(key, entry)
        self._seen(record.partition, event_time)

    def _emit(
        self, tenant: str, event: dict[str, Any], rating: float | None, partition: int,
        ctx: BatchContext,
    ) -> None:
        occurrences, similarity = self._memory_signals(tenant, event, partition, ctx)
        score = self.scorer.score(
            ScoreInputs(
                kind=event["kind"], text=event["text"], outcome=event["outcome"],
                feedback_rating=rating, occurrence_count=occurrences,
                nearest_similarity=similarity,
            )
        )
        if score.value is None:
            self.metrics.unknown_value.inc()
        ctx.send(
            "scored.v1",
            {
                "tenant": tenant,
                "event_id": event["event_id"],
                "event_time": event["event_time"],
                "session_id": event["session_id"],
                "interaction_id": event["interaction_id"],
                "kind": event["kind"],
                "text": event["text"],
                "source_topic": event["source_topic"],
                "value": score.value,
                "confidence": score.confidence,
                "needs_feedback": score.needs_feedback,
                "components": score.components,
                "scorer_version": score.scorer_version,
                "revision": event["revision"],
                "content_hash": event["content_hash"],
            },
            key=tenant,
        )

    @staticmethod
    def _memory_signals(
        tenant: str, event: dict[str, Any], partition: int, ctx: BatchContext
    ) -> tuple[int, float | None]:
        """Occurrences and nearest similarity from the memorize stores (1, None if absent)."""
        if not (ctx.has("content", partition) and ctx.has("memories", partition)):
            return 1, None
        seen = ctx.store("content", partition).get(f"{tenant}{SEP}{event['content_hash']}")
        if seen is None:
            return 1, None
        memory = ctx.store("memories", partition).get(f"{tenant}{SEP}{seen['memory_id']}")
        if memory is None:
            return 1, None
        if event["event_id"] in memory["source_event_ids"]:
            return int(memory["occurrence_count"]), float(seen["similarity"])
        return int(memory["occurrence_count"]) + 1, 1.0

    # -- expiry --------------------------------------------------------------------------------
    def _too_late(self, partition: int, event_time: int, store: Any) -> bool:
        clock = store.get(CLOCK_KEY) or {"newest": 0}
        newest = max(clock["newest"], self._newest_ms.get(partition, 0))
        return event_time < newest - self.ttl_ms

    def _seen(self, partition: int, event_time: int) -> None:
        self._newest_ms[partition] = max(self._newest_ms.get(partition, 0), event_time)

    def _expire(self, partition: int, ctx: BatchContext) -> None:
        """Drop interactions idle for longer than the TTL, by event time (swept at most
        hourly). The partition's clock (newest event time, last sweep) is kept in the store,
        so sweeps happen at the same points of the log however often the worker restarts or
        a batch aborts."""
        store = ctx.store("interactions", partition)
        clock = store.get(CLOCK_KEY) or {"newest": 0, "swept": 0}
        newest = max(clock["newest"], self._newest_ms.pop(partition, 0))
        if newest == clock["newest"]:
            return
        clock = {"newest": newest, "swept": clock["swept"]}
        if newest - clock["swept"] >= min(self.ttl_ms, 3_600_000):
            clock["swept"] = newest
            for key, _committed in list(store.committed_items()):
                if key == CLOCK_KEY:
                    continue
                entry = store.get(key)  # this batch's own writes count
                if entry is not None and entry.get("touched", 0) < newest - self.ttl_ms:
                    store.delete(key)
                    for pending in entry.get("pending", []):  # gone once events come
                        self._unmatched(key, pending, partition, ctx,
                                        "no event of it arrived before the interaction TTL "
                                        "ran out")
        store.put(CLOCK_KEY, clock)

    @staticmethod
    def _unmatched(key: str, pending: dict[str, Any], partition: int, ctx: BatchContext,
                   why: str) -> None:
        """Dead-letter feedback that waited for its interaction in vain (``why``)."""
        tenant, _, interaction = key.partition(SEP)
        record = InputRecord("feedback.v1", partition, pending["offset"], pending["key"],
                             pending["raw"], {})
        ctx.dead_letter(
            record, DeadLetterReason.UNKNOWN_INTERACTION,
            f"feedback for unknown or expired interaction {interaction!r}: {why}",
            tenant=tenant)


def overflow(items: list[T], max_items: int, max_size: int, size: Callable[[T], int]) -> int:
    """How many of the oldest ``items`` (oldest first) to let go so that the rest are at most
    ``max_items`` and ``max_size`` in all; the newest item always stays."""
    total = 0
    for i in range(len(items) - 1, -1, -1):  # newest first
        total += size(items[i])
        if len(items) - i > max_items or (total > max_size and i < len(items) - 1):
            return i + 1
    return 0
