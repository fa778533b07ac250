"""score → dedupe → embed → memorize on the real stack, in real worker processes."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from agents.dedupe import memory_id
from bench.speech import espeak_available
from streams.reader import read_topic
from streams.settings import Settings
from tests.integration.harness import (
    changelog_state,
    dead_letters,
    final_memories,
    memory_identity,
    produce,
    revisions_by_event,
    scored,
    start_worker,
    stop_worker,
    wait_drained,
    wait_ready,
    worker_settings,
)
from tests.integration.workload import Workload, add_voice_notes, generate

FULL = os.environ.get("MEMSTREAM_EOS_FULL") == "1"


def run_clean(settings: Settings, work: Workload, tmp: Path) -> None:
    log = tmp / "worker.log"
    proc = start_worker(settings, log)
    try:
        wait_ready(log, 0)
        wait_drained(settings, work.ingested + len(work.poison_empty) + len(work.garbage))
    finally:
        assert stop_worker(proc) == 0, log.read_text()[-3000:]


def check_exactly_once(settings: Settings, work: Workload) -> dict[str, tuple[object, ...]]:
    """Everything accounted for exactly once; returns the memory identities for comparison."""
    memories = final_memories(settings)
    sources = Counter(e for m in memories.values() for e in m["source_event_ids"])
    assert set(sources) == work.valid_event_ids, "every valid event is in exactly one memory"
    assert max(sources.values()) == 1, "no event memorized twice"
    assert sum(m["occurrence_count"] for m in memories.values()) == work.ingested
    for m in memories.values():
        assert m["occurrence_count"] == len(m["source_event_ids"]) == len(m["merges"]) + 1

    letters = dead_letters(settings)
    coordinates = Counter((d["source_topic"], d["source_partition"], d["source_offset"])
                          for d in letters)
    assert max(coordinates.values(), default=1) == 1, "a poison record dead-lettered twice"
    reasons = Counter(d["reason_code"] for d in letters)
    expected = Counter(empty_text=len(work.poison_empty), undecodable=len(work.garbage))
    assert reasons == +expected

    revisions = revisions_by_event(scored(settings))
    assert set(revisions) == work.valid_event_ids
    for event_id, seen in revisions.items():
        assert sorted(seen) == list(range(len(seen))), f"{event_id}: revisions {seen}"

    interactions = changelog_state(settings, "interactions")
    stored = {e["event_id"]: e["revision"] for entry in interactions.values()
              for e in entry["events"]}
    assert stored == {e: len(r) - 1 for e, r in revisions.items()}, (
        "the interactions store and the scored output disagree")
    return memory_identity(memories)


def test_pipeline_dedupes_scores_and_dead_letters(stack_settings: Settings, tmp_path: Path) -> None:
    from streams.admin import ensure_topics
    from streams.events import Feedback, TelemetryEvent
    from streams.producer import MemstreamProducer
    from streams.registry import register_all

    settings = worker_settings(stack_settings, tmp_path)
    ensure_topics(settings)
    register_all(settings, progress=lambda _m: None)
    work = Workload(
        telemetry=[
            TelemetryEvent(tenant="acme", session_id="s1", interaction_id="i1", kind="QUERY",
                           text="How do I reset my password?", event_id="e1"),
            TelemetryEvent(tenant="acme", session_id="s2", interaction_id="i2", kind="QUERY",
                           text="  how do I reset my password ", event_id="e2"),
            TelemetryEvent(tenant="acme", session_id="s3", interaction_id="i3", kind="QUERY",
                           text="How can I reset my password?", event_id="e3"),
            TelemetryEvent(tenant="globex", session_id="s9", interaction_id="i9", kind="QUERY",
                           text="How do I reset my password?", event_id="e9"),
            TelemetryEvent(tenant="acme", session_id="s4", interaction_id="i4", kind="RESPONSE",
                           text="The quarterly report is generated every Monday at 6am.",
                           event_id="e4", outcome="SUCCESS"),
        ],
        feedback=[Feedback(tenant="acme", session_id="s4", interaction_id="i4", rating=0.8,
                           event_id="f4")],
        poison_empty=[TelemetryEvent(tenant="acme", session_id="s1", interaction_id="i1",
                                     kind="NOTE", text="   ", event_id="bad")],
        garbage=[b"\x00\x00\x00\x00\x63junk"],
    )
    # Feedback for i4 goes out last, after its event: a late re-score.
    with MemstreamProducer(settings) as producer:
        for event in work.telemetry + work.poison_empty:
            producer.send(event)
    from confluent_kafka import Producer
    raw = Producer(settings.kafka_client_config())
    raw.produce(settings.topic("telemetry.v1"), value=work.garbage[0], partition=0)
    raw.flush(10)
    log = tmp_path / "worker.log"
    proc = start_worker(settings, log)
    try:
        wait_ready(log, 0)
        wait_drained(settings, len(work.telemetry) + 2)
        with MemstreamProducer(settings) as producer:
            producer.send(work.feedback[0])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(r["event_id"] == "e4" and r["revision"] == 1 for r in scored(settings)):
                break
            time.sleep(1)
    finally:
        assert stop_worker(proc) == 0

    records = {(r["event_id"], r["revision"]): r for r in scored(settings)}
    first = records[("e4", 0)]
    assert first["value"] is None and first["confidence"] == 0.0 and first["needs_feedback"]
    rescored = records[("e4", 1)]
    assert rescored["value"] is not None and 0 < rescored["value"] <= 1
    assert not rescored["needs_feedback"]
    assert rescored["components"]["explicit_feedback"] == pytest.approx(0.8)
    assert rescored["scorer_version"] == "value-scorer/1"

    memories = final_memories(settings)
    acme = memories[f"acme:{memory_id('acme', 'How do I reset my password?')}"]
    assert acme["occurrence_count"] == 3
    assert sorted(acme["source_event_ids"]) == ["e1", "e2", "e3"]
    merges = {m["event_id"]: m for m in acme["merges"]}
    assert merges["e2"]["match"] == "exact" and merges["e2"]["similarity"] == 1.0
    assert merges["e3"]["match"] == "near" and 0.9 <= merges["e3"]["similarity"] < 1.0
    assert acme["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert acme["dimension"] == 384 and len(acme["embedding"]) == 384 * 4
    globex = memories[f"globex:{memory_id('globex', 'How do I reset my password?')}"]
    assert globex["occurrence_count"] == 1, "tenants never share memories"
    report = memories[f"acme:{memory_id('acme', work.telemetry[4].text)}"]
    assert report["value"] == rescored["value"], "late feedback reaches the memory"

    reasons = sorted(d["reason_code"] for d in dead_letters(settings))
    assert reasons == ["empty_text", "undecodable"]


def test_kill9_many_times_gives_exactly_once(stack_settings: Settings, tmp_path: Path) -> None:
    """Kafka Streams' EOS system test, in small: kill -9 the worker at random points while it
    works, restart it, and compare with a crash-free reference run of the same input."""
    from streams.admin import ensure_topics
    from streams.registry import register_all

    n_events, kills = (20_000, 10) if FULL else (1_500, 4)
    work = generate(n_events, tenants=3, seed=11)
    if espeak_available():
        # Voice notes ride along: their transcripts must be memorized exactly once too.
        add_voice_notes(work, 12 if FULL else 6, seed=11)
    runs = {}
    for name in ("reference", "crashing"):
        prefix = f"{stack_settings.topic_prefix}{name}."
        settings = worker_settings(
            stack_settings.model_copy(update={"topic_prefix": prefix, "partitions": 3}),
            tmp_path / name,
        )
        ensure_topics(settings)
        register_all(settings, progress=lambda _m: None)
        produce(settings, work)
        runs[name] = settings
    run_clean(runs["reference"], work, tmp_path / "reference")

    settings = runs["crashing"]
    log = tmp_path / "crashing" / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(5)
    for kill in range(kills):
        since = log.stat().st_size if log.exists() else 0
        proc = start_worker(settings, log)
        wait_ready(log, since)
        time.sleep(rng.uniform(0.5, 4.0 if not FULL else 8.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        log.open("a").write(f"\n=== test: SIGKILL #{kill + 1} ===\n")
    run_clean(settings, work, tmp_path / "crashing")

    reference = check_exactly_once(runs["reference"], work)
    crashed = check_exactly_once(settings, work)
    assert crashed == reference, "memories differ from the crash-free reference run"
    content_ref = {k: v["memory_id"] for k, v in changelog_state(runs["reference"], "content").items()}
    content = {k: v["memory_id"] for k, v in changelog_state(settings, "content").items()}
    assert content == content_ref


def test_crash_between_embedding_and_commit_leaves_no_memory_visible(
    stack_settings: Settings, tmp_path: Path
) -> None:
    from streams.admin import ensure_topics
    from streams.registry import register_all

    settings = worker_settings(stack_settings, tmp_path, batch_max_records=500)
    ensure_topics(settings)
    register_all(settings, progress=lambda _m: None)
    work = generate(40, tenants=2, seed=3)
    work.feedback, work.poison_empty, work.garbage = [], [], []
    produce(settings, work)
    log = tmp_path / "worker.log"
    # Killed in memorize's first batch: embedded, memories sent, transaction not committed.
    proc = start_worker(settings, log, fault="memorize-embedded:1")
    assert proc.wait(120) == -signal.SIGKILL, log.read_text()[-3000:]
    written = list(read_topic(settings, "memories.v1", committed=False))
    assert written, "the crash came before any memory reached the broker: nothing was tested"
    assert final_memories(settings) == {}, "an uncommitted memory is visible to read_committed"

    run_clean(settings, work, tmp_path)
    check_exactly_once(settings, work)
