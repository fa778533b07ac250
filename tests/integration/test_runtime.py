"""The exactly-once runtime with a toy agent, in this process, on the real broker."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.events import TelemetryEvent
from streams.processing.runtime import BatchContext, InputRecord, Processor
from streams.producer import MemstreamProducer
from streams.settings import Settings
from tests.integration.harness import changelog_state, dead_letters, scored


class Fragile:
    """Echoes telemetry as scored records and remembers each event id; raises on 'boom'."""

    name = "fragile"
    inputs = ("telemetry.v1",)
    stores = ("seen",)

    def on_assigned(self, partitions: frozenset[int], stores: Any) -> None:
        pass

    def process(self, records: list[InputRecord], ctx: BatchContext) -> None:
        for record in records:
            v = record.value
            if v["text"] == "boom":
                raise ValueError("boom: this record always fails")
            ctx.store("seen", record.partition).put(v["event_id"], {"offset": record.offset})
            ctx.send("scored.v1", {
                "tenant": v["tenant"], "event_id": v["event_id"], "event_time": v["event_time"],
                "session_id": v["session_id"], "interaction_id": v["interaction_id"],
                "kind": v["kind"], "text": v["text"], "source_topic": "telemetry.v1",
                "value": None, "confidence": 0.0, "needs_feedback": True, "components": {},
                "scorer_version": "fragile/1", "revision": 0, "content_hash": "-",
            }, key=v["tenant"])


def _committed(settings: Settings, topic: str) -> int:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.app_id,
                         "log_level": 3})
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    finally:
        consumer.close()


def test_a_record_an_agent_fails_on_is_dead_lettered_and_the_rest_flow(
    provisioned: Settings, tmp_path: Path
) -> None:
    from streams.admin import ensure_changelog_topics

    settings = provisioned.model_copy(update={
        "app_id": f"pytest-{uuid.uuid4().hex[:8]}", "data_dir": tmp_path, "metrics_port": 0,
        "partitions": provisioned.partitions})
    texts = [f"note {i}" for i in range(12)]
    texts[5] = "boom"
    events = [TelemetryEvent(tenant="acme", session_id="s", interaction_id=f"i{i}", kind="NOTE",
                             text=t, event_id=f"e{i}") for i, t in enumerate(texts)]
    with MemstreamProducer(settings) as producer:
        for event in events:
            producer.send_async(event)

    processor = Processor(settings, [Fragile()])
    ensure_changelog_topics(settings, [processor.changelog_topic("seen")])
    stop = threading.Event()
    thread = threading.Thread(target=processor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while _committed(settings, settings.topic("telemetry.v1")) < len(events):
            assert thread.is_alive(), "the runtime died instead of isolating the record"
            assert time.monotonic() < deadline, "the partition stopped flowing"
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(30)

    out = [r["event_id"] for r in scored(settings)]
    assert sorted(out) == sorted(e.event_id for e in events if e.text != "boom")
    letters = dead_letters(settings)
    assert [(d["reason_code"], d["agent"], d["source_offset"]) for d in letters] == [
        ("processing_failed", "fragile", 5)
    ]
    assert "ValueError: boom" in letters[0]["reason"]
    assert set(changelog_state(settings, "seen")) == set(out), "store and output disagree"
