"""What one record can do to the score agent's stream time and joins: bounded and visible."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import msgpack
import pytest
from batch_ctx import BatchCtxFactory, RecordingBatchContext, feedback, telemetry

from agents.score import (
    CLOCK_KEY,
    MAX_INTERACTION_EVENTS,
    MAX_INTERACTION_TEXT_CHARS,
    MAX_PENDING_FEEDBACK,
    MAX_PENDING_FEEDBACK_BYTES,
    ScoreAgent,
)
from streams.common.keys import SEP
from streams.processing.api import InputRecord
from streams.processing.deadletter import DeadLetterReason

T0 = 1_700_000_000_000
DAY = 86_400_000
TEXT = "Restart the ingest worker after changing the topic prefix."


@pytest.fixture
def ctx(batch_ctx_factory: BatchCtxFactory) -> RecordingBatchContext:
    return batch_ctx_factory("interactions")


def stamped(record: InputRecord, broker_ms: int) -> InputRecord:
    return dataclasses.replace(record, timestamp_ms=broker_ms)


def test_an_event_time_far_ahead_of_its_broker_timestamp_is_dead_lettered_and_moves_no_clock(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory(interaction_ttl_s=7 * 86_400)
    agent.process([stamped(telemetry(TEXT, event_id="e-1", interaction_id="i-1",
                                     event_time=T0), T0)], ctx)
    ctx.commit()
    # Eleven months ahead of when the broker got it (the three future events).
    future = [stamped(telemetry(f"Dated next year {n}.", event_id=f"f-{n}",
                                interaction_id=f"x-{n}", event_time=T0 + 330 * DAY,
                                offset=n), T0 + 1000) for n in (1, 2, 3)]
    agent.process(future, ctx)
    ctx.commit()
    assert [(d.record.offset, d.reason) for d in ctx.dead_letters] == [
        (n, DeadLetterReason.EVENT_TIME_AHEAD) for n in (1, 2, 3)]
    assert "'event_time'" in ctx.dead_letters[0].detail and "ahead" in ctx.dead_letters[0].detail
    assert ctx.store("interactions", 0).get(CLOCK_KEY)["newest"] == T0
    assert ctx.store("interactions", 0).get(f"acme{SEP}i-1") is not None, "nothing expired"

    # Later feedback still joins its interaction and re-scores it.
    agent.process([stamped(feedback(0.9, interaction_id="i-1", event_time=T0 + 5000,
                                    offset=4), T0 + 5000)], ctx)
    assert [r["revision"] for r in ctx.sent_to("scored.v1")] == [0, 1]


def test_an_event_time_within_the_bound_is_accepted(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory()
    agent.process([stamped(telemetry(TEXT, event_id="e-1", event_time=T0 + DAY - 1000), T0)],
                  ctx)
    assert ctx.dead_letters == []
    assert len(ctx.sent_to("scored.v1")) == 1


def test_feedback_for_an_expired_interaction_is_dead_lettered_with_its_reason(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory(interaction_ttl_s=60)
    agent.process([telemetry(TEXT, event_id="e-1", interaction_id="old", event_time=T0)], ctx)
    ctx.commit()
    agent.process([telemetry("Much later.", event_id="e-2", interaction_id="new",
                             event_time=T0 + 600_000, offset=1)], ctx)
    ctx.commit()
    assert ctx.store("interactions", 0).get(f"acme{SEP}old") is None  # expired
    # Feedback dated with its interaction, arriving after the TTL swept it away.
    agent.process([feedback(0.2, interaction_id="old", event_time=T0 + 1000, offset=7)], ctx)
    ctx.commit()
    [letter] = ctx.dead_letters
    assert letter.reason is DeadLetterReason.UNKNOWN_INTERACTION
    assert letter.record.topic == "feedback.v1" and letter.record.offset == 7
    assert letter.detail.startswith("feedback for unknown or expired interaction 'old'")
    assert letter.tenant == "acme"
    assert [r["event_id"] for r in ctx.sent_to("scored.v1")] == ["e-1", "e-2"], "no re-score"


def test_early_feedback_that_never_finds_its_interaction_is_dead_lettered_when_it_expires(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory(interaction_ttl_s=60)
    fb = feedback(0.7, interaction_id="ghost", event_time=T0, offset=3)
    again = feedback(0.2, interaction_id="ghost", event_id="f-2", event_time=T0 + 10, offset=4)
    agent.process([fb], ctx)
    ctx.commit()
    agent.process([again], ctx)
    ctx.commit()
    assert ctx.dead_letters == [], "feedback may come first: it waits"
    agent.process([telemetry(TEXT, event_id="e-1", interaction_id="other",
                             event_time=T0 + 120_000, offset=5)], ctx)
    ctx.commit()
    assert [(d.reason, d.record.topic, d.record.offset, d.record.raw)
            for d in ctx.dead_letters] == [
        (DeadLetterReason.UNKNOWN_INTERACTION, "feedback.v1", 3, fb.raw),
        (DeadLetterReason.UNKNOWN_INTERACTION, "feedback.v1", 4, again.raw)]
    assert "no event of it arrived" in ctx.dead_letters[0].detail
    assert ctx.store("interactions", 0).get(f"acme{SEP}ghost") is None


def test_early_feedback_that_finds_its_interaction_is_not_dead_lettered(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory(interaction_ttl_s=60)
    agent.process([feedback(0.7, interaction_id="i-1", event_time=T0, offset=3)], ctx)
    ctx.commit()
    agent.process([telemetry(TEXT, event_id="e-1", interaction_id="i-1", event_time=T0 + 1000,
                             offset=4)], ctx)
    ctx.commit()
    agent.process([telemetry("Much later.", event_id="e-2", interaction_id="new",
                             event_time=T0 + 600_000, offset=5)], ctx)
    ctx.commit()
    assert ctx.dead_letters == []
    assert ctx.sent_to("scored.v1")[0]["value"] is not None


def _dropped(agent: ScoreAgent) -> float:
    value = agent.metrics.registry.get_sample_value("memstream_interaction_events_dropped_total")
    return value or 0.0


def test_one_interaction_id_reused_for_everything_keeps_its_newest_events_only(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory()
    extra = 50
    for n in range(MAX_INTERACTION_EVENTS + extra):  # a batch each: the entry read back
        agent.process([telemetry(f"Step {n} of the same long session.", event_id=f"e-{n}",
                                 interaction_id="same", event_time=T0 + n, offset=n)], ctx)
        ctx.commit()
    entry = ctx.store("interactions", 0).get(f"acme{SEP}same")
    assert [e["event_id"] for e in entry["events"]] == [
        f"e-{n}" for n in range(extra, MAX_INTERACTION_EVENTS + extra)]
    assert _dropped(agent) == extra
    assert len(ctx.sent_to("scored.v1")) == MAX_INTERACTION_EVENTS + extra, "all scored"
    # A rating re-scores the events kept, once each.
    agent.process([feedback(0.9, interaction_id="same", event_time=T0 + 10_000,
                            offset=1000)], ctx)
    rescored = [r for r in ctx.sent_to("scored.v1") if r["revision"] == 1]
    assert [r["event_id"] for r in rescored] == [e["event_id"] for e in entry["events"]]


def test_an_interaction_of_long_texts_stays_under_its_changelog_record_limit(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory()
    long_text = "é" * 31_000 + " tail"  # 2 bytes a character in UTF-8
    per_batch = [telemetry(f"{n} {long_text}", event_id=f"e-{n}", interaction_id="long",
                           event_time=T0 + n, offset=n) for n in range(40)]
    agent.process(per_batch, ctx)  # one batch: the entry is built up in memory
    ctx.commit()
    entry = ctx.store("interactions", 0).get(f"acme{SEP}long")
    kept = MAX_INTERACTION_TEXT_CHARS // len(per_batch[0].value["text"])
    assert [e["event_id"] for e in entry["events"]] == [f"e-{n}" for n in range(40 - kept, 40)]
    assert _dropped(agent) == 40 - kept
    assert len(msgpack.packb(entry, use_bin_type=True)) < 2 * 1024 * 1024


def test_an_interaction_always_keeps_its_newest_event(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory(max_text_chars=MAX_INTERACTION_TEXT_CHARS * 2)
    huge = "x" * (MAX_INTERACTION_TEXT_CHARS + 1)
    agent.process([telemetry("short", event_id="e-1", interaction_id="i"),
                   telemetry(huge, event_id="e-2", interaction_id="i", offset=1)], ctx)
    ctx.commit()
    entry = ctx.store("interactions", 0).get(f"acme{SEP}i")
    assert [e["event_id"] for e in entry["events"]] == ["e-2"] and _dropped(agent) == 1


def test_feedback_waiting_over_its_bounds_is_dead_lettered_oldest_first_not_dropped(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory()
    extra = 3
    early = [feedback(0.5, interaction_id="later", event_id=f"f-{n}", event_time=T0 + n,
                      offset=n) for n in range(MAX_PENDING_FEEDBACK + extra)]
    agent.process(early, ctx)
    ctx.commit()
    assert [(d.record.offset, d.reason) for d in ctx.dead_letters] == [
        (n, DeadLetterReason.UNKNOWN_INTERACTION) for n in range(extra)]
    assert f"over {MAX_PENDING_FEEDBACK} feedback records" in ctx.dead_letters[0].detail
    assert [d.record.raw for d in ctx.dead_letters] == [f.raw for f in early[:extra]]
    entry = ctx.store("interactions", 0).get(f"acme{SEP}later")
    assert [p["offset"] for p in entry["pending"]] == list(range(extra, len(early)))


def test_large_feedback_waiting_is_bounded_in_bytes(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory()
    big = [dataclasses.replace(feedback(0.5, interaction_id="later", event_id=f"f-{n}",
                                        event_time=T0 + n, offset=n), raw=b"x" * 100_000)
           for n in range(8)]
    agent.process(big, ctx)
    ctx.commit()
    kept = MAX_PENDING_FEEDBACK_BYTES // 100_000
    assert [d.record.offset for d in ctx.dead_letters] == list(range(8 - kept))
    entry = ctx.store("interactions", 0).get(f"acme{SEP}later")
    assert [p["offset"] for p in entry["pending"]] == list(range(8 - kept, 8))
