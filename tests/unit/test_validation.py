"""Validation names the field and the limit, before anything is sent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.common.exceptions import ValidationError
from streams.common.registry import latest_schema
from streams.common.validation import validate_record

LIMITS = {"text": 20, "audio": 8}


def telemetry(**changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "tenant": "t", "event_id": "e", "event_time": datetime(2026, 1, 1, tzinfo=UTC),
        "session_id": "s", "interaction_id": "i", "kind": "QUERY", "text": "hello",
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def check(record: dict[str, object], subject: str = "telemetry") -> dict[str, object]:
    return validate_record(latest_schema(subject), record, where=f"{subject}.v1", limits=LIMITS)


def test_valid_record_gets_defaults_filled() -> None:
    out = check(telemetry())
    assert out["attributes"] == {} and out["tool_name"] is None and out["model"] is None


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"session_id": ...}, "session_id", "is required"),
        ({"text": 5}, "text", "must be a string, got int"),
        ({"kind": "SHOUT"}, "kind", "must be one of QUERY"),
        ({"latency_ms": "fast"}, "latency_ms", "integer"),
        ({"latency_ms": True}, "latency_ms", "integer"),
        ({"attributes": {"a": 1}}, "attributes.a", "must be a string"),
        ({"colour": "red"}, "colour", "is not a field of TelemetryEvent"),
        ({"event_time": datetime(2026, 1, 1)}, "event_time", "timezone-aware"),
        ({"outcome": "MAYBE"}, "outcome", "must be one of SUCCESS"),
    ],
)
def test_bad_field_is_named(changes: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        check(telemetry(**changes))
    assert err.value.field == field
    assert f"'{field}'" in str(err.value) and words in str(err.value)
    assert str(err.value).startswith("telemetry.v1: ")


def test_oversize_text_names_field_and_limit() -> None:
    with pytest.raises(ValidationError) as err:
        check(telemetry(text="x" * 21))
    assert err.value.field == "text" and err.value.limit == 20
    assert "21 characters, over the limit of 20" in str(err.value)


def test_oversize_audio_names_field_and_limit() -> None:
    note = {"tenant": "t", "event_id": "e", "event_time": 1, "session_id": "s",
            "codec": "wav", "audio": b"123456789"}
    with pytest.raises(ValidationError) as err:
        check(note, "voice")
    assert err.value.field == "audio" and err.value.limit == 8


def test_nested_array_path_is_named() -> None:
    transcript = {"tenant": "t", "event_id": "e", "event_time": 1, "session_id": "s",
                  "source_event_id": "v", "text": "hi", "language": "en", "model_id": "m",
                  "audio_seconds": 1.0, "processing_seconds": 0.1,
                  "segments": [{"start_s": 0.0, "end_s": 1.0, "text": "hi"},
                               {"start_s": "zero", "end_s": 1.0, "text": "hi"}]}
    with pytest.raises(ValidationError) as err:
        check(transcript, "transcript")
    assert err.value.field == "segments[1].start_s"


def test_non_finite_number_is_rejected() -> None:
    fb = {"tenant": "t", "event_id": "e", "event_time": 1, "session_id": "s",
          "interaction_id": "i", "rating": float("nan")}
    with pytest.raises(ValidationError, match="'rating'"):
        check(fb, "feedback")


@pytest.mark.parametrize("tenant", ["acme#staging", " acme", "", "a=b", "é"])
def test_the_sdk_refuses_a_tenant_outside_the_tenant_rule(tenant: str) -> None:
    from streams.common.settings import load_settings
    from streams.sdk.events import TelemetryEvent
    from streams.sdk.producer import MemstreamProducer

    # Refused before anything is encoded or sent: no broker or registry is needed.
    settings = load_settings(bootstrap_servers="127.0.0.1:1",
                             schema_registry_url="http://127.0.0.1:1")
    with MemstreamProducer(settings) as producer:
        with pytest.raises(ValidationError,
                           match="is not a tenant name|must not be empty") as caught:
            producer.send(TelemetryEvent(tenant=tenant, session_id="s", interaction_id="i",
                                         kind="QUERY", text="hello"))
    assert caught.value.field == "tenant"


@pytest.mark.parametrize("field", ["event_id", "session_id", "interaction_id"])
@pytest.mark.parametrize(("value", "size"), [("x" * 257, 257), ("x" * 400_000, 400_000),
                                             ("é" * 129, 258), ("\U0001f600" * 65, 260)])
def test_an_id_over_its_limit_is_refused_by_the_sdk_and_the_agents(field: str, value: str,
                                                                    size: int) -> None:
    from streams.common.settings import load_settings
    from streams.common.validation import ID_MAX_BYTES, check_event
    from streams.sdk.events import TelemetryEvent
    from streams.sdk.producer import MemstreamProducer

    assert ID_MAX_BYTES == 256
    ids = {"event_id": "e-1", "session_id": "s", "interaction_id": "i", field: value}
    settings = load_settings(bootstrap_servers="127.0.0.1:1",
                             schema_registry_url="http://127.0.0.1:1")
    with MemstreamProducer(settings) as producer:
        with pytest.raises(ValidationError) as caught:
            producer.send(TelemetryEvent(tenant="acme", kind="QUERY", text="hello", **ids))
    assert (caught.value.field, caught.value.limit, caught.value.code) == (field,
                                                                           256, "oversize")
    assert (f"field '{field}' is {size} bytes in UTF-8 ({len(value)} characters), over the "
            "limit of 256 for an id") in str(caught.value)
    with pytest.raises(ValidationError, match=f"scored.v1: field '{field}'"):
        check_event("scored.v1", {"tenant": "acme", "text": "hello", **ids},
                    max_text_chars=100)


@pytest.mark.parametrize("value", ["x" * 256, "é" * 128, "\U0001f600" * 64, "", None])
def test_an_id_at_its_limit_passes(value: str | None) -> None:
    from streams.common.validation import check_event

    check_event("telemetry.v1", {"tenant": "acme", "text": "hello", "event_id": value,
                                 "session_id": value, "interaction_id": value},
                max_text_chars=100)
