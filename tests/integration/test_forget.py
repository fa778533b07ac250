"""Forgetting is complete, end to end on the real stack (real worker, read service, CLI):
after DELETE answered ``applied``, no endpoint serves the memory's text (recall, context,
memories, the summaries that quoted it), no snapshot file holds it, a later export does
not, the near-duplicate index no longer merges into it, and all of that still holds after
``memstream rebuild-index`` and after ``memstream replay``."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agents.dedupe import memory_id
from streams.common.admin import ensure_topics
from streams.common.reader import read_topic
from streams.common.registry import register_all
from streams.common.settings import Settings
from streams.ops.replay import live_members
from streams.sdk.client import MemoryClient, NotFoundError
from streams.sdk.events import TelemetryEvent
from streams.sdk.producer import DeliveryResult, MemstreamProducer
from tests.integration.harness import (
    REPO,
    start_worker,
    stop_worker,
    wait_drained,
    wait_ready,
    worker_settings,
)
from tests.integration.service_harness import Service, service_env

MARK = "hunter2-prod-7731"
SECRET = f"The staging database password is {MARK}."
NEAR = f"Reminder: the staging database password is {MARK}."  # cosine 0.98: merged into it
# cosine 0.98 with SECRET, without its text: merged into it, were it still in the index
LATER_NEAR = "The staging database password is now hunter2-prod-9904."
KEYS = "How do I rotate the billing keys of the payment cluster?"
LUNCH = "Book a table for four at the Italian place on Friday evening."
DAY = datetime(2026, 11, 2, tzinfo=UTC)
SESSION = "s-forget"


def event(n: int, hours: float, text: str) -> TelemetryEvent:
    return TelemetryEvent(tenant="acme", session_id=SESSION, interaction_id=f"i-{n}",
                          kind="QUERY", text=text, event_id=f"f-{n}",
                          event_time=DAY + timedelta(hours=hours))


def send(settings: Settings, *events: TelemetryEvent) -> DeliveryResult:
    with MemstreamProducer(settings) as producer:
        results = [producer.send(e) for e in events]
    return results[-1]


def cli(settings: Settings, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = service_env(settings, data_dir, 0, data_dir)
    del env["MEMSTREAM_API_TOKENS_FILE"]
    if settings.data_dir is not None:
        env["MEMSTREAM_DATA_DIR"] = str(settings.data_dir)
    return subprocess.run([sys.executable, "-m", "streams", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def served(service: Service) -> str:
    """Everything the read service answers about the secret, as one text."""
    with MemoryClient(service.url, "tok-acme", timeout_s=60) as acme:
        hits = acme.recall(SECRET, k=20)
        pack = acme.context(SESSION, SECRET, token_budget=4000, max_summaries=20)
        for query in (NEAR, "staging database password"):
            hits += acme.recall(query, k=20)
        got = []
        for hit in hits:
            try:
                got.append(acme.get(hit["memory_id"]))
            except NotFoundError:
                pass
    return repr(hits) + repr(pack) + repr(got)


def files_holding(directory: Path, needle: bytes) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def wait_until(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.5)


def latest(settings: Settings, topic: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in read_topic(settings, topic):
        if r.key is not None and r.value is not None:
            out[r.key] = r.value
    return out


def test_a_delete_reaches_every_view_and_survives_rebuild_and_replay(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = worker_settings(stack_settings.model_copy(update={"partitions": 2}), tmp_path)
    ensure_topics(settings)
    register_all(settings, progress=lambda _m: None)
    mid = memory_id("acme", SECRET)
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    service = Service(settings, tmp_path)
    try:
        wait_ready(log, 0)
        service.start()
        # Hour 0 holds the secret, its near duplicate and other content; an event at hour 3
        # closes (and archives) hour 0, whose summary quotes the secret; hour 3 (still open)
        # gets an exact repeat of it.
        send(settings, event(1, 0.1, SECRET), event(2, 0.2, KEYS), event(3, 0.3, NEAR))
        sent = send(settings, event(4, 3.0, LUNCH), event(5, 3.1, SECRET))
        with MemoryClient(service.url, "tok-acme", timeout_s=60) as acme:
            acme.recall(SECRET, consistency_token=sent.consistency_token)
            memory = acme.get(mid)
        assert memory["source_event_ids"] == ["f-1", "f-3", "f-5"], memory
        assert MARK in served(service), "before the delete the summary quotes it"

        with MemoryClient(service.url, "tok-acme", timeout_s=60) as acme:
            deleted = acme.delete(mid)
        assert deleted["applied"], deleted
        text = served(service)
        assert MARK not in text, text
        assert "billing keys" in text, "the rest of the summary is still served"
        # The snapshot written once caught up replaces every older one.
        wait_until(lambda: service.data_dir.exists()
                   and not files_holding(service.data_dir, MARK.encode())
                   and (service.data_dir / "CURRENT").exists(),
                   f"no snapshot file under {service.data_dir} holds the text")

        # Later: an exact repeat stays in the deleted memory and out of summaries; a near
        # duplicate is not merged into it (the index forgot it); hour 3 closes at hour 6.
        sent = send(settings, event(6, 3.2, SECRET), event(7, 3.3, LATER_NEAR),
                    event(8, 6.0, LUNCH))
        with MemoryClient(service.url, "tok-acme", timeout_s=60) as acme:
            hits = acme.recall(LATER_NEAR, consistency_token=sent.consistency_token)
        assert hits[0]["memory_id"] == memory_id("acme", LATER_NEAR), hits
        assert hits[0]["source_event_ids"] == ["f-7"], "a memory of its own, not merged"
        assert MARK not in served(service)
        export = tmp_path / "export.jsonl"
        done = cli(settings, tmp_path, "export-dataset", "--out", str(export), "--min-value",
                   "0", "--include-unknown", "--quiet")
        assert done.returncode == 0, done.stderr
        assert "billing keys" in export.read_text() and MARK not in export.read_text()
    finally:
        service.stop()
        assert stop_worker(worker) == 0, log.read_text()[-3000:]

    # rebuild-index from the log alone: no file of the new snapshot holds it.
    rebuilt = cli(settings, service.data_dir, "rebuild-index")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert not files_holding(service.data_dir, MARK.encode())
    again = Service(settings, tmp_path, data_dir=service.data_dir).start()
    try:
        text = served(again)
        assert MARK not in text and "billing keys" in text
    finally:
        again.stop()
    before = latest(settings, "memories.v1")
    summaries_before = latest(settings, "summaries.v1")
    assert before[f"acme:{mid}"]["deleted"] and before[f"acme:{mid}"]["occurrence_count"] == 4
    assert MARK not in repr(before) and MARK not in repr(summaries_before), \
        "the latest record of every key (what compaction keeps) is free of it"

    # Replay everything: the delete is re-applied, nothing comes back, same records.
    wait_until(lambda: not live_members(settings), "the worker left its group", 60)
    replayed = cli(settings, tmp_path, "replay", "--to-earliest")
    assert replayed.returncode == 0, replayed.stderr
    assert "commands (deletes): from the beginning" in replayed.stdout, replayed.stdout
    since = log.stat().st_size
    worker = start_worker(settings, log)
    try:
        wait_ready(log, since)
        wait_drained(settings, 8)
    finally:
        assert stop_worker(worker) == 0, log.read_text()[-3000:]
    after = latest(settings, "memories.v1")
    assert set(after) == set(before)
    for key, record in after.items():
        old = before[key]
        for name in ("deleted", "occurrence_count", "source_event_ids", "text", "event_id"):
            assert record[name] == old[name], (key, name, record[name], old[name])
    assert MARK not in repr(latest(settings, "summaries.v1"))
    fresh = Service(settings, tmp_path).start()
    try:
        assert MARK not in served(fresh)
        assert not files_holding(fresh.data_dir, MARK.encode())
    finally:
        fresh.stop()


def test_migrate_deletions_turns_old_deleted_memories_into_commands(provisioned: Settings,
                                                                   tmp_path: Path) -> None:
    """Deletes made before commands.v1 existed wrote memories.v1 directly; a replay only
    re-applies commands, so `memstream migrate-deletions` writes one for each, once."""
    from confluent_kafka import Producer

    from streams.common.codec import AvroCodec
    from streams.common.registry import latest_schema, registry_client, subject_for
    from streams.common.topics import memory_key, topic_spec

    spec = topic_spec("memories.v1")
    codec = AvroCodec(registry_client(provisioned))

    def memory(mid: str, deleted: bool) -> bytes:
        return codec.encode(subject_for(provisioned, spec), latest_schema(spec.schema), {
            "tenant": "acme", "memory_id": mid, "event_id": f"e-{mid}", "event_time": 1,
            "session_id": "s", "kind": "QUERY", "text": "" if deleted else "kept text",
            "content_hash": "", "embedding": b"", "model_id": "m", "dimension": 0,
            "value": None, "confidence": 0.0, "occurrence_count": 1,
            "source_event_ids": [f"e-{mid}"], "merges": [], "deleted": deleted,
            "scorer_version": None})

    producer = Producer(provisioned.kafka_client_config())
    for mid, deleted in (("m1", False), ("m1", True), ("m2", False), ("m3", True),
                         ("m3", False)):  # m3 came back: only m1 is deleted now
        producer.produce(provisioned.topic("memories.v1"), key=memory_key("acme", mid).encode(),
                         value=memory(mid, deleted), partition=0)
    producer.flush(10)
    first = cli(provisioned, tmp_path, "migrate-deletions")
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["delete", "command", "written", "for", "acme:m1"]
    (command,) = list(read_topic(provisioned, "commands.v1"))
    assert command.key == "acme:m1" and command.value is not None
    assert command.value["requested_by"] == "migration"
    assert command.value["source_event_ids"] == ["e-m1"]
    again = cli(provisioned, tmp_path, "migrate-deletions")
    assert again.returncode == 0 and again.stdout == "", again.stdout
