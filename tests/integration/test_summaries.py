"""Hourly session summaries on the real stack, in real worker processes: windows close by
event time across hours and out of order, late events within grace update the same id,
later ones are dropped (also after a restart), and a replay re-produces the same bytes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from agents.summarizing import summary_id
from streams.common.admin import ensure_topics
from streams.common.registry import register_all
from streams.common.settings import Settings
from streams.sdk.events import Feedback, TelemetryEvent
from streams.sdk.producer import MemstreamProducer
from tests.integration.harness import (
    raw_log,
    start_worker,
    stop_worker,
    summary_log,
    wait_ready,
    worker_settings,
)

DAY = datetime(2026, 11, 2, tzinfo=UTC)
TENANT = "acme"


def at(hour: int, minute: int) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


def event(event_id: str, session: str, when: datetime, text: str, *,
          kind: str = "QUERY", outcome: str | None = None) -> TelemetryEvent:
    return TelemetryEvent(tenant=TENANT, session_id=session, interaction_id=f"i-{event_id}",
                          kind=kind, text=text, outcome=outcome, event_time=when,
                          event_id=event_id)


def latest(log: list[tuple[int, str | None, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for _partition, key, value in log:
        assert key is not None
        out[key] = value
    return out


def wait_for(settings: Settings, check: Callable[[list[Any]], bool], what: str,
             timeout: float = 120) -> list[tuple[int, str | None, dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    log: list[Any] = []
    while time.monotonic() < deadline:
        log = summary_log(settings)
        if check(log):
            return log
        time.sleep(1)
    raise AssertionError(f"{what}: not after {timeout}s; summaries: {[v for _p, _k, v in log]}")


def key(session: str, hour: int) -> str:
    start = int(at(hour, 0).timestamp() * 1000)
    return f"{TENANT}:{summary_id(TENANT, session, start)}"


def covered(log: list[Any]) -> dict[str, list[str]]:
    return {k: v["event_ids"] for k, v in latest(log).items()}


def send(settings: Settings, *events: object) -> None:
    with MemstreamProducer(settings) as producer:
        for e in events:
            producer.send(e)


def test_summaries_by_event_time_out_of_order_across_hours_restart_and_replay(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = worker_settings(stack_settings, tmp_path, summary_window_s=3600,
                               summary_grace_s=1200)
    ensure_topics(settings)
    register_all(settings, progress=lambda _m: None)
    log_file = tmp_path / "worker.log"
    agents = "score,summarize"

    proc = start_worker(settings, log_file, agents=agents)
    try:
        wait_ready(log_file, 0)
        send(
            settings,
            event("e1", "s1", at(9, 5), "How do I rotate the billing keys?"),
            event("e2", "s2", at(9, 10), "Restart the search index after the deploy",
                  kind="TOOL_CALL", outcome="SUCCESS"),
            event("e3", "s1", at(10, 2), "Scale up the cache cluster during peak traffic"),
            # hour 9 closed at 10:00 of stream time; grace until 10:20: e4 joins it
            event("e4", "s1", at(9, 50), "How do I rotate the billing keys?"),
            event("e5", "s2", at(10, 30), "Roll back the payment webhook", kind="TOOL_CALL",
                  outcome="FAILURE"),
            # stream time 10:30 is past 10:20: hour 9 is gone, e6 is dropped
            event("e6", "s1", at(9, 55), "This arrives too late for hour nine"),
            event("e7", "s1", at(11, 40), "Document the audit log retention"),
        )
        first = wait_for(settings, lambda log: key("s2", 10) in latest(log), "hour 10 closed")
        assert covered(first) == {
            key("s1", 9): ["e1", "e4"], key("s2", 9): ["e2"],
            key("s1", 10): ["e3"], key("s2", 10): ["e5"],
        }
        versions = [v for _p, k, v in first if k == key("s1", 9)]
        assert [v["event_ids"] for v in versions] == [["e1"], ["e1", "e4"]], (
            "the late event within grace re-emits the same summary id, updated")
        assert versions[0]["event_id"] != versions[1]["event_id"]
    finally:
        assert stop_worker(proc) == 0, log_file.read_text()[-3000:]

    # A restarted worker resumes with the persisted stream time (11:40): 10:45 is too late
    # for hour 10 (grace ended 11:20) even though no event after the restart said so.
    since = log_file.stat().st_size
    proc = start_worker(settings, log_file, agents=agents)
    try:
        wait_ready(log_file, since)
        send(
            settings,
            event("e8", "s2", at(10, 45), "Too late after the restart"),
            event("e9", "s1", at(11, 5), "How do I rotate the billing keys?"),
            event("e10", "s2", at(12, 10), "Migrate the email queue", kind="TOOL_CALL",
                  outcome="SUCCESS"),
        )
        wait_for(settings, lambda log: key("s1", 11) in latest(log), "hour 11 closed")
        # late feedback re-scores e9 inside hour 11's grace: the summary is re-emitted
        send(settings, Feedback(tenant=TENANT, session_id="s1", interaction_id="i-e9",
                                rating=0.9, event_id="fb-e9", event_time=at(12, 12)))
        wait_for(settings, lambda log: "value 0." in latest(log)[key("s1", 11)]["text"],
                 "hour 11 re-summarized after feedback")
        send(settings, event("tick", "s3", at(14, 0), "A later event closes hour 12"))
        final = wait_for(settings, lambda log: key("s2", 12) in latest(log), "hour 12 closed")
    finally:
        assert stop_worker(proc) == 0, log_file.read_text()[-3000:]

    assert covered(final) == {
        key("s1", 9): ["e1", "e4"], key("s2", 9): ["e2"],
        key("s1", 10): ["e3"], key("s2", 10): ["e5"],
        key("s1", 11): ["e7", "e9"], key("s2", 12): ["e10"],
    }
    assert len(final) == 8, "6 windows + 1 late update + 1 re-score update, nothing twice"
    summaries = latest(final)
    s1_9 = summaries[key("s1", 9)]
    assert s1_9["window_start"] == at(9, 0) and s1_9["window_end"] == at(10, 0)
    assert s1_9["event_time"] == at(10, 0), "event time derives from the data"
    assert "rotate" in s1_9["key_terms"] and "x2" in s1_9["text"]
    assert s1_9["counts_by_kind"] == {"QUERY": 2} and s1_9["outcome_rate"] is None
    assert summaries[key("s2", 9)]["outcome_rate"] == 1.0
    assert summaries[key("s2", 10)]["outcome_rate"] == 0.0
    assert summaries[key("s1", 11)]["method"] == "extractive"
    assert log_file.read_text().count("left out of its window: late") == 2  # e6, e8

    # Replay: the same scored.v1 log, copied into a fresh prefix, through a fresh app.
    replay = worker_settings(
        stack_settings.model_copy(
            update={"topic_prefix": f"{stack_settings.topic_prefix}replay{uuid.uuid4().hex[:4]}."}
        ),
        tmp_path / "replay", summary_window_s=3600, summary_grace_s=1200,
    )
    ensure_topics(replay)
    register_all(replay, progress=lambda _m: None)
    producer = Producer(replay.kafka_client_config())
    scored_records = raw_log(settings, "scored.v1")
    for partition, _offset, k, value in scored_records:
        producer.produce(replay.topic("scored.v1"), value=value, key=k, partition=partition)
    assert producer.flush(10) == 0
    replay_log = tmp_path / "replay.log"
    (tmp_path / "replay").mkdir(exist_ok=True)
    proc = start_worker(replay, replay_log, agents="summarize")
    try:
        wait_ready(replay_log, 0)
        wait_for(replay, lambda log: len(log) >= len(final), "replayed summaries")
    finally:
        assert stop_worker(proc) == 0, replay_log.read_text()[-3000:]
    original = [(p, k, v[5:]) for p, _o, k, v in raw_log(settings, "summaries.v1")]
    replayed = [(p, k, v[5:]) for p, _o, k, v in raw_log(replay, "summaries.v1")]
    # Avro bodies (after the 5-byte schema-id header) identical, record for record
    assert replayed == original
    assert [v for _p, _k, v in summary_log(replay)] == [v for _p, _k, v in final]
