"""The producer SDK against the real broker and registry."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.common.exceptions import DeliveryError, UnavailableError, ValidationError
from streams.common.reader import read_topic
from streams.common.registry import registry_client
from streams.common.settings import Settings
from streams.sdk.events import Feedback, TelemetryEvent, VoiceNote
from streams.sdk.producer import MemstreamProducer

REPO = Path(__file__).resolve().parents[2]


def test_typed_events_round_trip_decoded_through_registry(provisioned: Settings) -> None:
    event = TelemetryEvent(
        tenant="acme", session_id="s1", interaction_id="i1", kind="QUERY",
        text="how do I reset the cache?", attributes={"app": "cli"}, token_count=7,
    )
    feedback = Feedback(tenant="acme", session_id="s1", interaction_id="i1", rating=0.75)
    note = VoiceNote(tenant="acme", session_id="s1", codec="wav", audio=b"RIFF\x00\x01fake")
    with MemstreamProducer(provisioned) as producer:
        results = [producer.send(e) for e in (event, feedback, note)]

    assert [r.topic for r in results] == [
        provisioned.topic("telemetry.v1"), provisioned.topic("feedback.v1"),
        provisioned.topic("voice.v1"),
    ]
    assert all(r.offset >= 0 and r.partition >= 0 for r in results)
    telemetry = list(read_topic(provisioned, "telemetry.v1"))
    assert len(telemetry) == 1
    got = telemetry[0]
    assert (got.partition, got.offset) == (results[0].partition, results[0].offset)
    assert got.key == "s1"
    assert got.value is not None
    assert got.value["event_id"] == event.event_id
    assert got.value["text"] == event.text
    assert got.value["attributes"] == {"app": "cli"}
    assert got.value["token_count"] == 7
    assert got.value["event_time"] == event.event_time.replace(
        microsecond=event.event_time.microsecond // 1000 * 1000
    )
    voice = list(read_topic(provisioned, "voice.v1"))
    assert voice[0].value is not None and voice[0].value["audio"] == b"RIFF\x00\x01fake"


def test_records_use_confluent_wire_format(provisioned: Settings) -> None:
    """A stock Confluent deserializer (what Redpanda Console uses) decodes our bytes."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    event = TelemetryEvent(tenant="t", session_id="s", interaction_id="i", kind="NOTE", text="x")
    with MemstreamProducer(provisioned) as producer:
        result = producer.send(event)
    consumer = Consumer({**provisioned.kafka_client_config(), "group.id": "wire",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(result.topic, result.partition, OFFSET_BEGINNING)])
    msg = None
    deadline = time.monotonic() + 20
    while msg is None and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
    consumer.close()
    assert msg is not None and msg.error() is None
    raw = msg.value()
    assert raw[0] == 0  # magic byte
    decoded = AvroDeserializer(registry_client(provisioned))(
        raw, SerializationContext(result.topic, MessageField.VALUE)
    )
    assert decoded["event_id"] == event.event_id
    assert decoded["kind"] == "NOTE"


def test_bad_event_is_rejected_before_sending_with_field_named(provisioned: Settings) -> None:
    with MemstreamProducer(provisioned) as producer:
        with pytest.raises(ValidationError) as missing:
            producer.send({"tenant": "t", "event_id": "e", "event_time": 1,
                           "interaction_id": "i", "kind": "QUERY", "text": "x"},
                          topic="telemetry.v1")
        assert missing.value.field == "session_id"
        with pytest.raises(ValidationError) as oversize:
            producer.send(TelemetryEvent(tenant="t", session_id="s", interaction_id="i",
                                         kind="QUERY", text="x" * (provisioned.max_text_chars + 1)))
        assert oversize.value.field == "text"
        assert oversize.value.limit == provisioned.max_text_chars
        assert str(provisioned.max_text_chars) in str(oversize.value)
    assert list(read_topic(provisioned, "telemetry.v1")) == []


def test_unreachable_broker_fails_within_bounded_wait(provisioned: Settings) -> None:
    dead = provisioned.model_copy(update={"bootstrap_servers": "127.0.0.1:1",
                                          "request_timeout_s": 3.0})
    producer = MemstreamProducer(dead)
    started = time.monotonic()
    with pytest.raises((DeliveryError, UnavailableError)):
        producer.send(TelemetryEvent(tenant="t", session_id="s", interaction_id="i",
                                     kind="QUERY", text="hello"))
    assert time.monotonic() - started < 15


def test_unreachable_registry_fails_within_bounded_wait(provisioned: Settings) -> None:
    dead = provisioned.model_copy(update={"schema_registry_url": "http://127.0.0.1:1",
                                          "request_timeout_s": 3.0})
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="registry"):
        MemstreamProducer(dead).send(TelemetryEvent(tenant="t", session_id="s",
                                                    interaction_id="i", kind="QUERY", text="x"))
    assert time.monotonic() - started < 15


def test_flush_delivers_every_async_event(provisioned: Settings) -> None:
    producer = MemstreamProducer(provisioned)
    futures = [
        producer.send_async(TelemetryEvent(tenant="t", session_id=f"s{i % 5}",
                                           interaction_id=f"i{i}", kind="NOTE", text=f"n{i}"))
        for i in range(500)
    ]
    producer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert len(list(read_topic(provisioned, "telemetry.v1"))) == 500


def test_cli_produce_reports_count_and_errors(provisioned: Settings, tmp_path: Path) -> None:
    lines = [
        {"tenant": "t", "session_id": "s", "interaction_id": "i1", "kind": "QUERY", "text": "a",
         "event_id": "e1", "event_time": "2026-11-25T10:00:00+00:00"},
        {"tenant": "t", "session_id": "s", "interaction_id": "i2", "kind": "RESPONSE", "text": "b",
         "event_id": "e2", "event_time": 1795600000000},
        {"tenant": "t", "session_id": "s", "interaction_id": "i3", "kind": "WRONG", "text": "c",
         "event_id": "e3", "event_time": 1795600000000},
    ]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n", encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
           "MEMSTREAM_BOOTSTRAP_SERVERS": provisioned.bootstrap_servers,
           "MEMSTREAM_SCHEMA_REGISTRY_URL": provisioned.schema_registry_url,
           "MEMSTREAM_TOPIC_PREFIX": provisioned.topic_prefix}
    proc = subprocess.run([sys.executable, "-m", "streams", "produce", "telemetry.v1",
                           str(source)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "sent 2, rejected 2" in proc.stdout
    assert "line 3: kind: " in proc.stderr
    assert "line 4: <line>: not JSON" in proc.stderr
    ids = sorted(r.value["event_id"] for r in read_topic(provisioned, "telemetry.v1") if r.value)
    assert ids == ["e1", "e2"]


def test_a_tenant_lands_on_one_partition_number_of_every_topic(provisioned: Settings) -> None:
    from streams.common.partitioning import partition_for_tenant

    with MemstreamProducer(provisioned) as producer:
        results = [
            producer.send(TelemetryEvent(tenant=tenant, session_id=f"s{i}", interaction_id=f"i{i}",
                                         kind="NOTE", text="x"))
            for i, tenant in enumerate(["acme", "globex", "initech"] * 3)
        ] + [
            producer.send(Feedback(tenant=tenant, session_id="s", interaction_id=f"i{i}",
                                   rating=0.5))
            for i, tenant in enumerate(["acme", "globex", "initech"])
        ]
    for result, tenant in zip(results, ["acme", "globex", "initech"] * 4, strict=True):
        assert result.partition == partition_for_tenant(tenant, provisioned.partitions)
