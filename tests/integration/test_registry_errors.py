"""A registry that answers 5xx is infrastructure: the worker waits, commits nothing for the
batch and dead-letters nothing; only the registry's definitive "no such id" is poison."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.common.settings import Settings
from streams.sdk.events import TelemetryEvent
from streams.sdk.producer import MemstreamProducer
from tests.integration.harness import (
    dead_letters,
    final_memories,
    start_worker,
    stop_worker,
    wait_drained,
    wait_ready,
    worker_settings,
)
from tests.integration.registry_proxy import FailingRegistryProxy


def _committed(settings: Settings, base: str) -> int:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.app_id,
                         "log_level": 3})
    try:
        tps = [TopicPartition(settings.topic(base), p) for p in range(settings.partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=30))
    finally:
        consumer.close()


def test_registry_503_on_schema_lookup_is_waited_out_not_dead_lettered(
    provisioned: Settings, tmp_path: Path
) -> None:
    settings = worker_settings(provisioned, tmp_path)
    events = [TelemetryEvent(tenant=t, session_id="s", interaction_id=f"i-{t}", kind="QUERY",
                             text=f"How does {t} rotate its billing keys?", event_id=f"e-{t}")
              for t in ("acme", "globex", "initech")]
    with MemstreamProducer(settings) as producer:
        for event in events:
            producer.send(event)
    # The registry's definitive answer still makes a record poison: an id it does not know.
    raw = Producer(settings.kafka_client_config())
    raw.produce(settings.topic("telemetry.v1"), value=struct.pack(">bI", 0, 987_654) + b"\x02",
                partition=0)
    raw.flush(10)

    with FailingRegistryProxy(settings.schema_registry_url) as proxy:
        proxy.failing.set()
        behind = settings.model_copy(update={"schema_registry_url": proxy.url})
        log = tmp_path / "worker.log"
        proc = start_worker(behind, log, agents="score,memorize")
        try:
            wait_ready(log, 0)
            deadline = time.monotonic() + 120
            while proxy.refused < 4 or time.monotonic() < deadline - 105:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"{proxy.refused} lookups in 120 s"
                time.sleep(0.5)
            assert proc.poll() is None, "the worker exited on a registry error"
            assert dead_letters(settings) == [], "valid events dead-lettered on a 503"
            assert _committed(settings, "telemetry.v1") == 0, "offsets committed for the batch"
            assert "retrying in" in log.read_text()

            proxy.failing.clear()
            wait_drained(settings, len(events) + 1, timeout=180)
        finally:
            assert stop_worker(proc) == 0, log.read_text()[-3000:]

    memories = final_memories(settings)
    assert sorted(e for m in memories.values() for e in m["source_event_ids"]) == [
        "e-acme", "e-globex", "e-initech"]
    letters = dead_letters(settings)
    assert [(d["reason_code"], d["source_offset"]) for d in letters] == [("undecodable", 3)] or [
        d["reason_code"] for d in letters] == ["undecodable"]
    assert "987654" in letters[0]["reason"]


def test_only_the_registrys_own_404_makes_bytes_undecodable(provisioned: Settings) -> None:
    """5xx, a refused connection and a 404 that is not the registry's answer (a wrong URL
    path) are UnavailableError (wait); the registry's 40403 for an id is CodecError."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from streams.common.codec import AvroCodec, CodecError
    from streams.common.exceptions import UnavailableError
    from streams.common.registry import latest_schema, registry_client, subject_for
    from streams.common.topics import topic_spec
    from streams.sdk.events import as_record
    from tests.integration.harness import free_port

    spec = topic_spec("telemetry.v1")
    schema = latest_schema(spec.schema)
    event = TelemetryEvent(tenant="acme", session_id="s", interaction_id="i", kind="NOTE",
                           text="hello")
    good = AvroCodec(registry_client(provisioned)).encode(
        subject_for(provisioned, spec), schema, as_record(event))
    unknown = struct.pack(">bI", 0, 987_654) + good[5:]

    def codec(url: str) -> AvroCodec:
        return AvroCodec(SchemaRegistryClient({"url": url, "timeout": 5, "max.retries": 0}))

    with pytest.raises(CodecError, match="987654 is unknown"):
        codec(provisioned.schema_registry_url).decode(unknown, schema)
    with pytest.raises(UnavailableError):
        codec(provisioned.schema_registry_url + "-wrong-path").decode(good, schema)
    with pytest.raises(UnavailableError):
        codec(f"http://127.0.0.1:{free_port()}").decode(good, schema)
    with FailingRegistryProxy(provisioned.schema_registry_url) as proxy:
        proxy.failing.set()
        with pytest.raises(UnavailableError, match="503"):
            codec(proxy.url).decode(good, schema)
        proxy.failing.clear()
        assert codec(proxy.url).decode(good, schema)["text"] == "hello"
