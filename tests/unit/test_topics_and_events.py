"""The topic declaration, the schemas and the SDK's typed events agree."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from streams.common.registry import latest_schema
from streams.common.schemas import load_schema_versions
from streams.common.topics import TOPICS, topic_spec, voice_audio_limit
from streams.sdk.events import SDK_EVENTS

ARCHITECTURE = Path(__file__).resolve().parents[3] / "shared" / "ARCHITECTURE.md"


def test_every_topic_has_a_schema_with_its_key_field() -> None:
    versions = load_schema_versions()
    for spec in TOPICS:
        assert spec.schema in versions, spec.base
        fields = {f["name"] for f in versions[spec.schema][-1].schema["fields"]}
        assert spec.key_field in fields, spec.base


def test_declared_topics_match_architecture() -> None:
    names = {t.base for t in TOPICS}
    assert names == {"telemetry.v1", "feedback.v1", "voice.v1", "transcripts.v1", "scored.v1",
                     "commands.v1", "memories.v1", "summaries.v1", "deadletter.v1"}
    if ARCHITECTURE.exists():
        text = ARCHITECTURE.read_text(encoding="utf-8")
        # the command topic's row reads "memory-commands (e.g. commands.v1)"
        assert all(f"| {name} |" in text for name in names - {"commands.v1"})
        assert "commands.v1" in text
    # commands.v1 too: a replay re-applies every delete, so deletes are kept for good
    assert {t.base for t in TOPICS if t.cleanup_policy == "compact"} == {
        "commands.v1", "memories.v1", "summaries.v1"}


def test_voice_limit_fits_the_topic() -> None:
    voice = topic_spec("voice.v1")
    assert 0 < voice_audio_limit() < voice.max_message_bytes
    assert topic_spec("prod.voice.v1", prefix="prod.") is voice


def test_sdk_events_match_latest_schema_fields() -> None:
    for event in SDK_EVENTS:
        schema = latest_schema(topic_spec(event.TOPIC).schema)
        assert {f.name for f in dataclasses.fields(event)} == {
            f["name"] for f in schema["fields"]}, event.__name__
