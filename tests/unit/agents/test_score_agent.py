"""The score agent without a broker: unknown value until feedback, joins either way, expiry."""

from __future__ import annotations

from collections.abc import Callable
from unittest.mock import ANY

import pytest
from batch_ctx import BatchCtxFactory, RecordingBatchContext, decoded, feedback, telemetry

from agents.dedupe import content_hash
from agents.memorize import MemorizeAgent
from agents.score import ScoreAgent
from streams.common.keys import SEP
from streams.processing.deadletter import DeadLetterReason

TEXT = "Restart the ingest worker after changing the topic prefix."  # 10 tokens
T0 = 1_700_000_000_000
VERSION = "value-scorer/1"
# RESPONSE weights (value-scorer.v1.json): explicit_feedback 0.40, reusability 0.15,
# complexity 0.10; outcome_quality and novelty are unknown here (no outcome, no memory).
# Rating 0.8, reusability 0 (seen once), complexity 10/200 = 0.05:
VALUE_AT_0_8 = (0.40 * 0.8 + 0.15 * 0.0 + 0.10 * 0.05) / 0.65  # = 0.5
CONFIDENCE = 0.65


@pytest.fixture
def ctx(batch_ctx_factory: BatchCtxFactory) -> RecordingBatchContext:
    return batch_ctx_factory("interactions")


@pytest.fixture
def agent(score_agent_factory: Callable[..., ScoreAgent]) -> ScoreAgent:
    return score_agent_factory()


def interaction(ctx: RecordingBatchContext, interaction_id: str, tenant: str = "acme") -> object:
    return ctx.store("interactions", 0).get(f"{tenant}{SEP}{interaction_id}")


def test_event_without_feedback_has_unknown_value(
    agent: ScoreAgent, ctx: RecordingBatchContext
) -> None:
    agent.process([telemetry(TEXT, event_id="e-1")], ctx)

    assert ctx.sent_to("scored.v1") == [
        {
            "tenant": "acme",
            "event_id": "e-1",
            "event_time": T0,
            "session_id": "s-1",
            "interaction_id": "i-1",
            "kind": "RESPONSE",
            "text": TEXT,
            "source_topic": "telemetry.v1",
            "value": None,
            "confidence": 0.0,
            "needs_feedback": True,
            "components": {"reusability": 0.0, "complexity": 0.05},
            "scorer_version": VERSION,
            "revision": 0,
            "content_hash": content_hash(TEXT),
        }
    ]
    assert [s.key for s in ctx.sent] == ["acme"]
    assert agent.metrics.registry.get_sample_value("memstream_unknown_value_total") == 1
    assert ctx.dead_letters == []


def test_early_feedback_is_kept_until_its_event_arrives(
    agent: ScoreAgent, ctx: RecordingBatchContext
) -> None:
    agent.process([feedback(0.8, interaction_id="i-1")], ctx)
    ctx.commit()
    assert ctx.sent == []
    assert interaction(ctx, "i-1") == {"events": [], "rating": 0.8, "touched": T0 + 1000,
                                       "pending": [{"offset": 0, "key": b"acme", "raw": ANY}]}

    # An event of another interaction does not see the rating.
    agent.process([telemetry("Something unrelated.", event_id="e-0", interaction_id="i-0")], ctx)
    ctx.commit()
    assert ctx.sent_to("scored.v1")[-1]["value"] is None

    agent.process([telemetry(TEXT, event_id="e-1", interaction_id="i-1")], ctx)
    ctx.commit()

    out = ctx.sent_to("scored.v1")[-1]
    assert out["event_id"] == "e-1"
    assert out["revision"] == 0
    assert out["components"] == {"explicit_feedback": 0.8, "reusability": 0.0, "complexity": 0.05}
    assert out["value"] == pytest.approx(VALUE_AT_0_8)
    assert out["value"] == pytest.approx(0.5)
    assert out["confidence"] == pytest.approx(CONFIDENCE)
    assert out["needs_feedback"] is False
    assert out["scorer_version"] == VERSION


def test_late_feedback_rescores_every_event_of_the_interaction(
    agent: ScoreAgent, ctx: RecordingBatchContext
) -> None:
    agent.process(
        [
            telemetry("How do I reset my password?", event_id="e-1", kind="QUERY", offset=0),
            telemetry(TEXT, event_id="e-2", offset=1),
            telemetry("Other interaction.", event_id="e-3", interaction_id="i-2", offset=2),
        ],
        ctx,
    )
    ctx.commit()
    first = ctx.sent_to("scored.v1")
    assert [(r["event_id"], r["revision"], r["value"]) for r in first] == [
        ("e-1", 0, None), ("e-2", 0, None), ("e-3", 0, None)
    ]

    agent.process([feedback(0.8, interaction_id="i-1", offset=3)], ctx)
    ctx.commit()
    rescored = ctx.sent_to("scored.v1")[3:]
    assert [(r["event_id"], r["revision"]) for r in rescored] == [("e-1", 1), ("e-2", 1)]
    assert rescored[1]["value"] == pytest.approx(VALUE_AT_0_8)
    assert rescored[1]["confidence"] == pytest.approx(CONFIDENCE)
    for record in rescored:
        assert record["components"]["explicit_feedback"] == 0.8
        assert record["needs_feedback"] is False

    # A second rating replaces the first and re-scores again.
    agent.process([feedback(0.2, interaction_id="i-1", event_id="f-2", offset=4)], ctx)
    ctx.commit()
    again = ctx.sent_to("scored.v1")[5:]
    assert [(r["event_id"], r["revision"]) for r in again] == [("e-1", 2), ("e-2", 2)]
    assert again[1]["value"] == pytest.approx((0.40 * 0.2 + 0.10 * 0.05) / 0.65)

    for record in ctx.sent_to("scored.v1"):
        assert record["scorer_version"] == VERSION
        assert {"reusability", "complexity"} <= set(record["components"])


def test_same_event_delivered_twice_is_scored_once(
    agent: ScoreAgent, ctx: RecordingBatchContext
) -> None:
    agent.process([telemetry(TEXT, event_id="e-1")], ctx)
    ctx.commit()
    agent.process([telemetry(TEXT, event_id="e-1", offset=1)], ctx)
    ctx.commit()
    assert [r["event_id"] for r in ctx.sent_to("scored.v1")] == ["e-1"]
    entry = interaction(ctx, "i-1")
    assert isinstance(entry, dict)
    assert [e["event_id"] for e in entry["events"]] == ["e-1"]


def test_transcript_without_interaction_is_keyed_by_its_event_id(
    agent: ScoreAgent, ctx: RecordingBatchContext
) -> None:
    record = decoded(
        "transcripts.v1",
        {
            "tenant": "acme",
            "event_id": "v-1",
            "event_time": T0,
            "session_id": "s-1",
            "interaction_id": None,
            "source_event_id": "v-1",
            "text": "Remember to rotate the staging keys on Friday.",
            "language": "en",
            "segments": [],
            "model_id": "whisper-tiny",
            "audio_seconds": 2.5,
            "processing_seconds": 0.4,
        },
    )
    agent.process([record], ctx)
    ctx.commit()
    (out,) = ctx.sent_to("scored.v1")
    assert (out["kind"], out["interaction_id"], out["source_topic"]) == (
        "TRANSCRIPT", None, "transcripts.v1"
    )
    assert interaction(ctx, "v-1") is not None


def test_expired_interactions_are_deleted_by_event_time(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory(interaction_ttl_s=60)
    agent.process([telemetry(TEXT, event_id="e-1", interaction_id="old", event_time=T0)], ctx)
    ctx.commit()
    # 30 s later: within the TTL, nothing expires.
    agent.process(
        [telemetry("Half a minute later.", event_id="e-2", interaction_id="mid",
                   event_time=T0 + 30_000, offset=1)],
        ctx,
    )
    ctx.commit()
    assert interaction(ctx, "old") is not None

    # Two minutes after "old" was last touched: it expires, "mid" (90 s idle) too,
    # the interaction of the event that advanced the clock stays.
    agent.process(
        [telemetry("Two minutes later.", event_id="e-3", interaction_id="new",
                   event_time=T0 + 120_000, offset=2)],
        ctx,
    )
    ctx.commit()
    assert interaction(ctx, "old") is None
    assert interaction(ctx, "mid") is None
    assert interaction(ctx, "new") is not None
    tombstones = {c.key for c in ctx.changelog if c.value is None}
    assert tombstones == {f"acme{SEP}old".encode(), f"acme{SEP}mid".encode()}

    # Feedback for the expired interaction finds no events to re-score.
    before = len(ctx.sent)
    agent.process([feedback(0.9, interaction_id="old", event_time=T0 + 121_000, offset=3)], ctx)
    ctx.commit()
    assert len(ctx.sent) == before


def test_interaction_touched_in_the_sweeping_batch_is_not_expired(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory(interaction_ttl_s=60)
    agent.process([telemetry(TEXT, event_id="e-1", interaction_id="i-1", event_time=T0)], ctx)
    ctx.commit()
    # A new event of the same interaction, two TTLs later: the interaction is active again.
    agent.process(
        [telemetry("Follow-up answer.", event_id="e-2", interaction_id="i-1",
                   event_time=T0 + 120_000, offset=1)],
        ctx,
    )
    ctx.commit()
    entry = interaction(ctx, "i-1")
    assert isinstance(entry, dict)
    assert [e["event_id"] for e in entry["events"]] == ["e-1", "e-2"]


def test_empty_text_is_dead_lettered(agent: ScoreAgent, ctx: RecordingBatchContext) -> None:
    records = [telemetry("", event_id="e-1"), telemetry("  \n\t ", event_id="e-2", offset=1)]
    agent.process(records, ctx)
    assert [(d.record.offset, d.reason, d.tenant) for d in ctx.dead_letters] == [
        (0, DeadLetterReason.EMPTY_TEXT, "acme"), (1, DeadLetterReason.EMPTY_TEXT, "acme")
    ]
    assert ctx.dead_letters[0].reason.value == "empty_text"
    ctx.commit()
    assert ctx.sent == []
    assert ctx.changelog == []


def test_oversize_text_is_dead_lettered(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory(max_text_chars=20)
    agent.process([telemetry("x" * 21, event_id="e-1"), telemetry("x" * 20, event_id="e-2")], ctx)
    assert [(d.reason, d.detail) for d in ctx.dead_letters] == [
        (DeadLetterReason.OVERSIZE,
         "telemetry.v1: field 'text' is 21 characters, over the limit of 20")
    ]
    assert [r["event_id"] for r in ctx.sent_to("scored.v1")] == ["e-2"]


def test_rating_out_of_range_is_dead_lettered_and_changes_nothing(
    agent: ScoreAgent, ctx: RecordingBatchContext
) -> None:
    agent.process([telemetry(TEXT, event_id="e-1")], ctx)
    ctx.commit()
    agent.process([feedback(1.5, offset=1)], ctx)
    ctx.commit()
    assert [(d.reason, d.tenant) for d in ctx.dead_letters] == [
        (DeadLetterReason.SCHEMA_INVALID, "acme")
    ]
    assert "rating" in ctx.dead_letters[0].detail
    assert len(ctx.sent) == 1
    entry = interaction(ctx, "i-1")
    assert isinstance(entry, dict)
    assert entry["rating"] is None


def test_expiry_of_an_aborted_batch_happens_when_it_is_retried(
    score_agent_factory: Callable[..., ScoreAgent], ctx: RecordingBatchContext
) -> None:
    agent = score_agent_factory(interaction_ttl_s=60)
    agent.process([telemetry(TEXT, event_id="e-1", interaction_id="old", event_time=T0)], ctx)
    ctx.commit()
    later = telemetry("Two minutes later.", event_id="e-2", interaction_id="new",
                      event_time=T0 + 120_000, offset=1)
    agent.process([later], ctx)
    ctx.abort()
    agent.rebuild(frozenset({0}), ctx.committed())  # what the runtime does after an abort

    agent.process([later], ctx)
    ctx.commit()
    assert interaction(ctx, "new") is not None
    assert interaction(ctx, "old") is None  # as in a run without the abort


def test_repeated_content_raises_reusability_from_the_memorize_stores(
    score_agent_factory: Callable[..., ScoreAgent],
    memorize_agent_factory: Callable[..., MemorizeAgent],
    batch_ctx_factory: BatchCtxFactory,
) -> None:
    # Score and memorize on one worker: the score agent reads the memorize stores.
    ctx = batch_ctx_factory("interactions", "content", "memories")
    score, memorize = score_agent_factory(), memorize_agent_factory()

    score.process([telemetry(TEXT, event_id="e-1", interaction_id="i-1")], ctx)
    memorize.process([decoded("scored.v1", r) for r in ctx.sent_to("scored.v1")], ctx)
    ctx.commit()
    first = ctx.sent_to("scored.v1")[0]
    assert first["components"] == {"reusability": 0.0, "complexity": 0.05}

    noisy = "  RESTART the ingest  worker after changing the topic prefix. "
    score.process([telemetry(noisy, event_id="e-2", interaction_id="i-2", offset=1)], ctx)
    second = ctx.sent_to("scored.v1")[-1]
    assert second["event_id"] == "e-2"
    # Seen once before: 2 occurrences → (2 - 1) / (5 - 1); an exact repeat is not novel.
    assert second["components"] == {"reusability": 0.25, "complexity": 0.05, "novelty": 0.0}
    memorize.process([decoded("scored.v1", second)], ctx)
    ctx.commit()

    # Late feedback re-scores e-1 with what its memory knows now: 2 occurrences, and the
    # similarity recorded when it arrived (0.0, no memory before it → fully novel).
    score.process([feedback(0.8, interaction_id="i-1", offset=2)], ctx)
    rescored = ctx.sent_to("scored.v1")[-1]
    assert (rescored["event_id"], rescored["revision"]) == ("e-1", 1)
    assert rescored["components"] == {
        "explicit_feedback": 0.8, "reusability": 0.25, "complexity": 0.05, "novelty": 1.0
    }
