"""The exactly-once runtime with a toy agent, in this process, on the real broker."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.common.exceptions import UnavailableError, ValidationError
from streams.common.settings import Settings
from streams.processing.api import Agent, BatchContext, InputRecord
from streams.processing.exceptions import AgentFailedError
from streams.processing.runtime import Runtime
from streams.sdk.events import TelemetryEvent
from streams.sdk.producer import MemstreamProducer
from tests.integration.harness import changelog_state, dead_letters, scored


class Fragile(Agent):
    """Echoes telemetry as scored records and remembers each event id; raises on 'boom',
    refuses 'invalid' (ValidationError), and raises once on each 'flaky' (a transient)."""

    name = "fragile"
    inputs = ("telemetry.v1",)
    stores = ("seen",)

    def __init__(self) -> None:
        self.flaked: set[str] = set()
        self.tripped = False

    def process(self, records: list[InputRecord], ctx: BatchContext) -> None:
        for record in records:
            v = record.value
            if v["text"] == "boom":
                raise ValueError("boom: this record always fails")
            if v["text"] == "invalid":
                raise ValidationError("in step 'fragile', text: 'invalid' is refused",
                                      field="text")
            if v["text"] == "tripwire" and len(records) <= 12 and not self.tripped:
                self.tripped = True  # the registry fails once, in the middle of a bisection
                raise UnavailableError("registry unreachable (once)")
            if v["text"] == "flaky" and v["event_id"] not in self.flaked:
                self.flaked.add(v["event_id"])
                raise RuntimeError("flaky: fails the first time only")
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
    from streams.common.admin import ensure_changelog_topics

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

    runtime = Runtime(settings, [Fragile()])
    ensure_changelog_topics(settings, [runtime.changelog_topic("seen")])
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
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


def _run_until_committed(settings: Settings, events: list[TelemetryEvent],
                         agent: Fragile) -> BaseException | None:
    """Run the runtime in a thread until every event's offset is committed; return what
    made ``run`` raise, if it did."""
    from streams.common.admin import ensure_changelog_topics

    with MemstreamProducer(settings) as producer:
        for event in events:
            producer.send_async(event)
    runtime = Runtime(settings, [agent])
    ensure_changelog_topics(settings, [runtime.changelog_topic("seen")])
    stop = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            runtime.run(stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 90
        while _committed(settings, settings.topic("telemetry.v1")) < len(events):
            if not thread.is_alive():
                return raised[0] if raised else None
            assert time.monotonic() < deadline, "the partitions stopped flowing"
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(30)
    return raised[0] if raised else None


def _settings(provisioned: Settings, tmp_path: Path, **overrides: Any) -> Settings:
    return provisioned.model_copy(update={
        "app_id": f"pytest-{uuid.uuid4().hex[:8]}", "data_dir": tmp_path, "metrics_port": 0,
        **overrides})


def _events(texts: list[str]) -> list[TelemetryEvent]:
    tenants = ["acme", "globex", "initech"]
    return [TelemetryEvent(tenant=tenants[i % 3], session_id="s", interaction_id=f"i{i}",
                           kind="NOTE", text=t, event_id=f"e{i}") for i, t in enumerate(texts)]


def test_a_record_an_agent_refuses_for_its_data_is_dead_lettered_and_the_batch_goes_on(
    provisioned: Settings, tmp_path: Path
) -> None:
    settings = _settings(provisioned, tmp_path)
    texts = [f"note {i}" for i in range(30)]
    texts[4] = texts[17] = "invalid"
    events = _events(texts)
    raised = _run_until_committed(settings, events, Fragile())
    assert raised is None, f"the runtime stopped on a data error: {raised!r}"

    out = sorted(r["event_id"] for r in scored(settings))
    assert out == sorted(e.event_id for e in events if e.text != "invalid")
    letters = dead_letters(settings)
    assert sorted((d["reason_code"], d["agent"]) for d in letters) == [
        ("invalid_data", "fragile")] * 2
    by_event = {e.event_id: e for e in events}
    for letter in letters:
        assert "ValidationError" in letter["reason"] and "'invalid' is refused" in letter["reason"]
        assert letter["original_value"] is not None
    offsets = {(d["source_partition"], d["source_offset"]) for d in letters}
    assert len(offsets) == 2
    assert set(changelog_state(settings, "seen")) == set(out), "store and output disagree"
    assert by_event  # the events themselves were produced through the SDK


def test_a_transient_agent_failure_is_retried_once_and_nothing_is_dead_lettered(
    provisioned: Settings, tmp_path: Path
) -> None:
    settings = _settings(provisioned, tmp_path)
    texts = [f"note {i}" for i in range(10)]
    texts[3] = "flaky"
    events = _events(texts)
    assert _run_until_committed(settings, events, Fragile()) is None
    assert sorted(r["event_id"] for r in scored(settings)) == sorted(e.event_id for e in events)
    assert dead_letters(settings) == []


def test_on_processing_error_fail_stops_the_runtime_and_commits_nothing(
    provisioned: Settings, tmp_path: Path
) -> None:
    settings = _settings(provisioned, tmp_path, on_processing_error="fail")
    texts = [f"note {i}" for i in range(6)]
    texts[2] = "boom"
    events = _events(texts)
    raised = _run_until_committed(settings, events, Fragile())
    assert isinstance(raised, AgentFailedError), raised
    assert "ValueError" in str(raised) and "fragile" in str(raised)
    assert dead_letters(settings) == []
    # Whatever the batch held with the failing record was not committed.
    committed = _committed(settings, settings.topic("telemetry.v1"))
    assert committed < len(events)


def test_a_retriable_error_during_a_bisection_loses_and_duplicates_nothing(
    provisioned: Settings, tmp_path: Path
) -> None:
    settings = _settings(provisioned, tmp_path)
    texts = [f"note {i}" for i in range(24)]
    texts[3] = "invalid"
    texts[9] = "tripwire"
    events = _events(texts)
    agent = Fragile()
    assert _run_until_committed(settings, events, agent) is None
    assert agent.tripped
    out = [r["event_id"] for r in scored(settings)]
    assert sorted(out) == sorted(e.event_id for e in events if e.text != "invalid")
    assert len(out) == len(set(out)), "a record was output twice"
    assert [d["reason_code"] for d in dead_letters(settings)] == ["invalid_data"]


class Limited(Fragile):
    """``Fragile`` taking at most 4 records a batch; notes each batch's (partition, offset)s."""

    max_records_per_batch = 4

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[int, int]]] = []

    def process(self, records: list[InputRecord], ctx: BatchContext) -> None:
        self.batches.append([(r.partition, r.offset) for r in records])
        super().process(records, ctx)


def test_an_agents_batch_limit_ends_batches_early_and_the_rest_is_read_again_once(
    provisioned: Settings, tmp_path: Path
) -> None:
    settings = _settings(provisioned, tmp_path)
    events = _events([f"note {i}" for i in range(45)])
    agent = Limited()
    assert _run_until_committed(settings, events, agent) is None
    assert agent.batches and max(len(b) for b in agent.batches) <= 4
    # Every record read once, each partition's in offset order, none skipped.
    taken = [at for batch in agent.batches for at in batch]
    assert len(taken) == len(set(taken)) == len(events)
    for partition in {p for p, _ in taken}:
        offsets = [o for p, o in taken if p == partition]
        assert offsets == list(range(len(offsets)))
    assert sorted(r["event_id"] for r in scored(settings)) == sorted(e.event_id for e in events)
