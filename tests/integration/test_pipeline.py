"""score → dedupe → embed → memorize on the real stack, in real worker processes."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agents.dedupe import memory_id
from agents.score import CLOCK_KEY
from bench.speech import espeak_available
from streams.common.reader import read_topic
from streams.common.settings import Settings
from streams.processing.runtime import LAG_REPORT_INTERVAL_S
from tests.integration.harness import (
    changelog_state,
    dead_letters,
    final_memories,
    free_port,
    memory_identity,
    memstream_env,
    produce,
    produce_unchecked,
    revisions_by_event,
    scored,
    scrape,
    start_worker,
    stop_worker,
    summary_log,
    wait_drained,
    wait_ready,
    worker_settings,
)
from tests.integration.workload import Workload, add_voice_notes, generate

FULL = os.environ.get("MEMSTREAM_EOS_FULL") == "1"
# The full-size run reprocesses 20,000 events twice; on 2 cores that takes a while.
DRAIN_TIMEOUT_S = 3000 if FULL else 600


def final_summaries(settings: Settings) -> dict[str | None, dict[str, Any]]:
    """The latest summary per key (what compaction keeps), without what depends on timing.

    An event's value depends on how far memorize had got when score read its stores
    (reusability, novelty), so two correct runs may give an event different values. A
    summary's highlights are its most salient contents, salience being value plus
    repetition: which ones are shown, their order and their printed values may differ, and
    its event_id hashes that text. Everything else must be identical: ids, window, events,
    counts, outcome rate, key terms, and every line of the text before the highlights.
    """
    return {
        key: {**value, "event_id": None, "text": _without_highlights(value["text"])}
        for _p, key, value in summary_log(settings)
    }


def _without_highlights(text: str) -> list[str]:
    lines = text.splitlines()
    if "Highlights:" not in lines:
        return lines
    at = lines.index("Highlights:")
    return [*lines[:at], f"{len(lines) - at - 1} highlights"]


def run_clean(settings: Settings, work: Workload, tmp: Path) -> None:
    log = tmp / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    since = log.stat().st_size if log.exists() else 0
    proc = start_worker(settings, log)
    try:
        wait_ready(log, since)
        wait_drained(settings, work.ingested + len(work.poison_empty) + len(work.garbage),
                     timeout=DRAIN_TIMEOUT_S)
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
    stored = {e["event_id"]: e["revision"] for key, entry in interactions.items()
              if key != CLOCK_KEY for e in entry["events"]}
    assert stored == {e: len(r) - 1 for e, r in revisions.items()}, (
        "the interactions store and the scored output disagree")
    return memory_identity(memories)


def test_pipeline_dedupes_scores_and_dead_letters(stack_settings: Settings, tmp_path: Path) -> None:
    from streams.common.admin import ensure_topics
    from streams.common.registry import register_all
    from streams.sdk.events import Feedback, TelemetryEvent
    from streams.sdk.producer import MemstreamProducer

    settings = worker_settings(stack_settings, tmp_path, metrics_port=free_port())
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
        for event in work.telemetry:
            producer.send(event)
    produce_unchecked(settings, work.poison_empty)  # the SDK refuses it at the door
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
        time.sleep(LAG_REPORT_INTERVAL_S + 1)
        metrics = scrape(settings.metrics_port)
    finally:
        assert stop_worker(proc) == 0

    def metric(name: str, **labels: str) -> float:
        return metrics[(f"memstream_{name}", tuple(sorted(labels.items())))]

    assert metric("events_in_total", agent="score", topic="telemetry.v1") == 7
    assert metric("events_in_total", agent="score", topic="feedback.v1") == 1
    assert metric("events_out_total", agent="score", topic="scored.v1") == 6
    assert metric("dead_letters_total", agent="score", reason="empty_text") == 1
    assert metric("dead_letters_total", agent="score", reason="undecodable") == 1
    assert metric("duplicates_total", match="exact") == 1
    assert metric("duplicates_total", match="near") == 1
    assert metric("embed_batch_size_count") >= 1
    assert metric("transactions_total", outcome="commit") >= 3
    assert metric("consumer_lag", agent="memorize", topic="scored.v1") == 0

    stats = subprocess.run(
        [sys.executable, "-m", "streams", "stats"], env=memstream_env(settings),
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert ("ingested 7 = memories 3 + merged 2 + in deleted memories 0 + dead-lettered 2"
            " + in flight 0") in stats, stats

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
    assert acme["model_id"] == "sentence-transformers/all-MiniLM-L6-v2@onnx-fp32"
    assert acme["dimension"] == 384 and len(acme["embedding"]) == 384 * 4
    globex = memories[f"globex:{memory_id('globex', 'How do I reset my password?')}"]
    assert globex["occurrence_count"] == 1, "tenants never share memories"
    report = memories[f"acme:{memory_id('acme', work.telemetry[4].text)}"]
    assert report["value"] == rescored["value"], "late feedback reaches the memory"

    reasons = sorted(d["reason_code"] for d in dead_letters(settings))
    assert reasons == ["empty_text", "undecodable"]


@pytest.mark.timeout(2 * DRAIN_TIMEOUT_S + 900)
def test_kill9_many_times_gives_exactly_once(stack_settings: Settings, tmp_path: Path) -> None:
    """Kafka Streams' EOS system test, in small: kill -9 the worker at random points while it
    works, restart it, and compare with a crash-free reference run of the same input."""
    from streams.common.admin import ensure_topics
    from streams.common.registry import register_all

    n_events, kills = (20_000, 10) if FULL else (1_500, 6)
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
            # 5-minute windows, grace longer than the whole event-time span (an event a
            # second, late feedback +10 min): every event and re-score lands in its window
            # whatever the interleaving of telemetry, transcripts and feedback in scored.v1,
            # so the final summaries of both runs must match. (With a shorter grace, a voice
            # note transcribed after telemetry had moved stream time on was dropped as late
            # in one run and not the other.)
            summary_window_s=300, summary_grace_s=n_events + 3600,
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
    # Half the crashes are placed by fault injection where timing rarely lands: between
    # process and commit, after send_offsets_to_transaction, after the commit but before the
    # stores were applied. The others are kill -9s from outside at a random moment. The placed
    # ones come first: a worker that has run out of input commits nothing, so a placed crash
    # after random kills that happened to finish the input would never fire.
    placed = ["after-process", "before-commit", "after-commit"]
    n_placed = (kills + 1) // 2
    for kill in range(kills):
        since = log.stat().st_size if log.exists() else 0
        fault = f"{placed[kill % len(placed)]}:{rng.randint(1, 4)}" if kill < n_placed else None
        proc = start_worker(settings, log, fault=fault)
        wait_ready(log, since)
        try:
            proc.wait(60 if fault else rng.uniform(0.5, 8.0 if FULL else 4.0))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL, log.read_text()[-3000:]
        with log.open("a") as out:
            out.write(f"\n=== test: SIGKILL #{kill + 1} ({fault or 'random'}) ===\n")
    injected = re.findall(r"fault injection: SIGKILL at ([\w-]+)", log.read_text())
    assert set(injected) == set(placed[:n_placed]), f"placed crashes: {injected}"
    run_clean(settings, work, tmp_path / "crashing")

    reference = check_exactly_once(runs["reference"], work)
    crashed = check_exactly_once(settings, work)
    assert crashed == reference, "memories differ from the crash-free reference run"
    def dedupe_table(s: Settings) -> dict[str, str]:
        return {k: v["memory_id"] for k, v in changelog_state(s, "content").items()}

    assert dedupe_table(settings) == dedupe_table(runs["reference"])

    summaries_ref = final_summaries(runs["reference"])
    summaries = final_summaries(settings)
    assert len(summaries_ref) > 10, "windows closed: the summaries were exercised"
    assert summaries == summaries_ref, "summaries differ from the crash-free reference run"
    covered = Counter(e for s in summaries.values() for e in s["event_ids"])
    assert max(covered.values()) == 1 and set(covered) <= work.valid_event_ids


def test_crash_between_embedding_and_commit_leaves_no_memory_visible(
    stack_settings: Settings, tmp_path: Path
) -> None:
    from streams.common.admin import ensure_topics
    from streams.common.registry import register_all

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
