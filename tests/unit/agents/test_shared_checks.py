"""One rule at the door and in the pipeline: what the SDK refuses, score and memorize refuse
the same way (``check_event``), so nothing the SDK accepts can stop an agent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from batch_ctx import BatchCtxFactory, feedback, scored, telemetry

from agents.memorize import MemorizeAgent
from agents.score import ScoreAgent
from streams.common.exceptions import ValidationError
from streams.common.registry import latest_schema
from streams.common.settings import load_settings
from streams.common.topics import topic_spec
from streams.common.validation import check_event, check_tenant
from streams.processing.deadletter import DeadLetterReason
from streams.sdk.events import Feedback, TelemetryEvent, as_record
from streams.sdk.producer import validated

# Texts that normalize to nothing (the "?", "...", "---", "*") and other empties.
EMPTY_TEXTS = ["?", "...", "---", "*", "", "   ", "\u00a0\u3000", "¿¡!", "«»", "\u200b"]
BAD_TENANTS = ["", " acme", "acme ", "ac\x00me", "ac\u200bme", "ac\u202eme", "a" * 257, "a\nb"]


class Door:
    """What ``MemstreamProducer.send`` checks before anything is sent (no broker needed)."""

    def __init__(self) -> None:
        self.settings = load_settings()

    def send_async(self, event: object) -> None:
        spec = topic_spec(event.TOPIC)  # type: ignore[attr-defined]
        validated(self.settings, spec, latest_schema(spec.schema), as_record(event))


@pytest.fixture(scope="module")
def sdk() -> Door:
    return Door()


def _door(sdk: Door, event: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        sdk.send_async(event)
    return caught.value


@pytest.mark.parametrize("text", EMPTY_TEXTS)
def test_text_empty_after_normalization_is_refused_by_the_sdk_score_and_memorize(
    text: str, sdk: Door, score_agent_factory: Callable[..., ScoreAgent],
    memorize_agent_factory: Callable[..., MemorizeAgent], batch_ctx_factory: BatchCtxFactory,
) -> None:
    error = _door(sdk, TelemetryEvent(tenant="acme", session_id="s", interaction_id="i",
                                      kind="QUERY", text=text))
    assert (error.field, error.code) == ("text", "empty")

    ctx = batch_ctx_factory("interactions", name="score")
    score_agent_factory().process([telemetry(text, event_id="e-1")], ctx)
    assert [d.reason for d in ctx.dead_letters] == [DeadLetterReason.EMPTY_TEXT]
    assert ctx.sent == []

    ctx = batch_ctx_factory("content", "memories", name="memorize")
    memorize_agent_factory().process([scored(text, event_id="e-1")], ctx)
    assert [d.reason for d in ctx.dead_letters] == [DeadLetterReason.EMPTY_TEXT]
    assert ctx.sent == []


@pytest.mark.parametrize("tenant", BAD_TENANTS)
def test_a_bad_tenant_is_refused_by_the_sdk_score_and_memorize(
    tenant: str, sdk: Door, score_agent_factory: Callable[..., ScoreAgent],
    memorize_agent_factory: Callable[..., MemorizeAgent], batch_ctx_factory: BatchCtxFactory,
) -> None:
    error = _door(sdk, TelemetryEvent(tenant=tenant, session_id="s", interaction_id="i",
                                      kind="QUERY", text="How do I rotate keys?"))
    assert error.field == "tenant"

    ctx = batch_ctx_factory("interactions", name="score")
    score_agent_factory().process([telemetry("How do I rotate keys?", event_id="e-1",
                                             tenant=tenant)], ctx)
    assert [(d.reason, d.tenant) for d in ctx.dead_letters] == [
        (DeadLetterReason.SCHEMA_INVALID, None)]

    ctx = batch_ctx_factory("content", "memories", name="memorize")
    memorize_agent_factory().process([scored("How do I rotate keys?", event_id="e-1",
                                             tenant=tenant)], ctx)
    assert [d.reason for d in ctx.dead_letters] == [DeadLetterReason.SCHEMA_INVALID]


@pytest.mark.parametrize("rating", [-0.01, 1.01, float("nan"), float("inf"), 5.0])
def test_a_rating_outside_its_declared_range_is_refused_by_the_sdk_and_score(
    rating: float, sdk: Door, score_agent_factory: Callable[..., ScoreAgent],
    batch_ctx_factory: BatchCtxFactory,
) -> None:
    error = _door(sdk, Feedback(tenant="acme", session_id="s", interaction_id="i",
                                rating=rating))
    assert error.field == "rating"
    if rating == rating and abs(rating) != float("inf"):  # Avro cannot carry NaN/inf past the SDK
        ctx = batch_ctx_factory("interactions", name="score")
        score_agent_factory().process([feedback(rating)], ctx)
        assert [d.reason for d in ctx.dead_letters] == [DeadLetterReason.SCHEMA_INVALID]
        assert "rating" in ctx.dead_letters[0].detail


def test_the_sdk_refuses_an_event_time_far_ahead_of_now(sdk: Door) -> None:
    error = _door(sdk, TelemetryEvent(tenant="acme", session_id="s", interaction_id="i",
                                      kind="QUERY", text="hello",
                                      event_time=datetime(2999, 1, 1, tzinfo=UTC)))
    assert (error.field, error.code) == ("event_time", "event_time_ahead")


def test_the_sdk_refuses_a_lone_surrogate_instead_of_raising_from_the_encoder(
    sdk: Door,
) -> None:
    error = _door(sdk, TelemetryEvent(tenant="acme", session_id="s", interaction_id="i",
                                      kind="QUERY", text="bad \ud800 text"))
    assert error.field == "text" and "surrogate" in str(error)


@pytest.mark.parametrize("tenant", ["acme", "tenant-0", "a" * 64, "Acme.eu_west-1", "0day"])
def test_usable_tenants_pass_unchanged(tenant: str) -> None:
    assert check_tenant(tenant, where="t") == tenant


@pytest.mark.parametrize("tenant", ["Ünïcødé GmbH", "عربي", "a" * 65, "acme#staging", "日本",
                                    " acme", "acme:prod", "-acme", "acme\u200b"])
def test_tenants_that_could_not_round_trip_are_refused(tenant: str) -> None:
    with pytest.raises(ValidationError, match="tenant"):
        check_tenant(tenant, where="t")


@pytest.mark.parametrize("text", ["a", "3.5", "?a", "ok!", "\u202eRTL text", "emoji 🎉"])
def test_texts_with_content_pass(text: str) -> None:
    check_event("telemetry.v1", {"tenant": "acme", "text": text}, max_text_chars=100)
