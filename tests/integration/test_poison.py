"""A poison corpus on every input topic, interleaved with good events of several tenants,
through a real `memstream worker`: every bad record lands in deadletter.v1 with its reason,
every good one is memorized, the worker never exits, and `memstream stats` balances."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from bench.speech import espeak_available, synthesize
from streams.common.codec import AvroCodec
from streams.common.partitioning import partition_for_tenant
from streams.common.registry import latest_schema, registry_client, subject_for
from streams.common.settings import Settings
from streams.common.topics import topic_spec
from streams.sdk.events import Feedback, TelemetryEvent, VoiceNote, as_record
from tests.integration.harness import (
    REPO,
    dead_letters,
    final_memories,
    memstream_env,
    start_worker,
    stop_worker,
    wait_drained,
    wait_ready,
    worker_settings,
)

TENANTS = ("acme", "globex", "initech")
UNKNOWN_ID = 987_654
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Corpus:
    """What was sent: good event ids, and the expected (agent, reason) per bad record."""

    settings: Settings
    good: set[str] = field(default_factory=set)
    good_feedback: set[str] = field(default_factory=set)
    expected: dict[tuple[str, int, int], tuple[str, str]] = field(default_factory=dict)
    telemetry_records: int = 0
    _pending: list[tuple[str, str, str] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.codec = AvroCodec(registry_client(self.settings))
        self.raw = Producer(self.settings.kafka_client_config())

    # -- values ---------------------------------------------------------------------------
    def avro(self, event: Any) -> bytes:
        """Valid Avro of ``event`` under its registered schema (no SDK checks)."""
        spec = topic_spec(event.TOPIC)
        return self.codec.encode(subject_for(self.settings, spec), latest_schema(spec.schema),
                                 as_record(event))

    # -- sending ----------------------------------------------------------------------------
    def good_event(self, event: Any) -> None:
        self._send(event.TOPIC, self.avro(event), partition_for_tenant(event.tenant, 2), None)
        if event.TOPIC == "feedback.v1":
            self.good_feedback.add(event.event_id)
        else:
            self.good.add(event.event_id)

    def bad(self, topic: str, value: bytes | None, agent: str, reason: str,
            partition: int = 0) -> None:
        self._send(topic, value, partition, (agent, reason))

    def _send(self, topic: str, value: bytes | None, partition: int,
              expect: tuple[str, str] | None) -> None:
        full = self.settings.topic(topic)
        if topic == "telemetry.v1":
            self.telemetry_records += 1

        def delivered(err: KafkaError | None, msg: Message) -> None:
            assert err is None, err
            if expect is not None:
                self.expected[(full, msg.partition(), msg.offset())] = expect

        self.raw.produce(full, value=value, key=b"k", partition=partition,
                         on_delivery=delivered)
        self.raw.poll(0)

    def flush(self) -> None:
        assert self.raw.flush(30) == 0


def _garbage(corpus: Corpus, topic: str, agent: str, sample: bytes) -> None:
    """Non-Avro bytes, a wrong magic byte, an unknown schema id, a truncated body, an
    empty and a null value: on both partitions."""
    for partition in (0, 1):
        corpus.bad(topic, b"not avro at all, just text", agent, "undecodable", partition)
        corpus.bad(topic, b"\x01" + sample[1:], agent, "undecodable", partition)
        corpus.bad(topic, struct.pack(">bI", 0, UNKNOWN_ID) + sample[5:], agent, "undecodable",
                   partition)
    corpus.bad(topic, sample[:9], agent, "undecodable", 1)
    corpus.bad(topic, b"", agent, "undecodable", 0)
    corpus.bad(topic, None, agent, "undecodable", 1)
    corpus.bad(topic, b"\x00\x00", agent, "undecodable", 0)


def _invalid_utf8_tenant(corpus: Corpus, event: Any) -> bytes:
    """Avro whose tenant (the first field) holds a UTF-16 surrogate encoded as UTF-8 bytes,
    which no UTF-8 decoder accepts."""
    value = corpus.avro(event)
    assert value[5:9] == b"\x06XXX"
    return value[:5] + b"\x06\xed\xa0\x80" + value[9:]


def _telemetry(tenant: str, text: str, n: int, **extra: Any) -> TelemetryEvent:
    fields: dict[str, Any] = {"event_time": NOW - timedelta(minutes=60 - n),
                              "event_id": f"t-{n:03d}", **extra}
    return TelemetryEvent(tenant=tenant, session_id=f"{tenant}-s", interaction_id=f"i-{n:03d}",
                          kind="QUERY", text=text, **fields)


def build(corpus: Corpus, voice: bool) -> None:
    """Good and bad records interleaved, topic by topic."""
    n = 0
    subjects = ["billing keys", "search index", "nightly backup", "payment webhook"]
    odd_good = ["مرحبا، كيف أعيد تعيين كلمة المرور للحساب؟",
                "\u202eoverride: the RTL override stays text to remember",
                "zero\u200bwidth\u200djoiners inside words of the deploy notes",
                "reset the\x00router before the release party 🎉"]
    empties = ["?", "...", "---", "*", "", "   ", "\x00\x00", "\u200b\u200d\ufeff"]
    bad_tenants = ["", " acme", "ac\x00me", "ac\u200bme", "\u202eacme", "t" * 300]
    goods: list[TelemetryEvent] = []
    for subject in subjects:
        for tenant in TENANTS:
            n += 1
            goods.append(_telemetry(tenant, f"How do I rotate the {subject} of {tenant} "
                                            f"(case {n})?", n))
    for i, text in enumerate(odd_good):
        n += 1
        goods.append(_telemetry(TENANTS[i % 3], text, n))

    sample = corpus.avro(goods[0])
    bads: list[tuple[bytes | None, int, str]] = []
    for text in empties:
        n += 1
        event = _telemetry("globex", text, n)
        bads.append((corpus.avro(event), partition_for_tenant("globex", 2), "empty_text"))
    for tenant in bad_tenants:
        n += 1
        bads.append((corpus.avro(_telemetry(tenant, "A perfectly fine text.", n)),
                     partition_for_tenant(tenant, 2), "schema_invalid"))
    n += 1
    bads.append((corpus.avro(_telemetry("acme", "x" * 40_000, n)), 0, "oversize"))
    n += 1
    bads.append((_invalid_utf8_tenant(corpus, _telemetry("XXX", "Fine text.", n)), 1,
                 "undecodable"))
    for days in (30, 330):  # the events dated months ahead
        n += 1
        bads.append((corpus.avro(_telemetry("initech", f"Dated {days} days ahead.", n,
                                            event_time=NOW + timedelta(days=days))),
                     partition_for_tenant("initech", 2), "event_time_ahead"))
    for millis in (2**62, -(2**62)):  # past the years a datetime holds: not a crash either
        n += 1
        record = {**as_record(_telemetry("initech", "Dated past year 9999.", n)),
                  "event_time": millis}
        spec = topic_spec("telemetry.v1")
        bads.append((corpus.codec.encode(subject_for(corpus.settings, spec),
                                         latest_schema(spec.schema), record),
                     partition_for_tenant("initech", 2), "undecodable"))
    for i in range(max(len(goods), len(bads))):
        if i < len(goods):
            corpus.good_event(goods[i])
        if i < len(bads):
            value, partition, reason = bads[i]
            corpus.bad("telemetry.v1", value, "score", reason, partition)
    _garbage(corpus, "telemetry.v1", "score", sample)

    # feedback: good ratings of good interactions, interleaved with bad ones.
    fb = [Feedback(tenant=g.tenant, session_id=g.session_id, interaction_id=g.interaction_id,
                   rating=0.9, event_id=f"fb-{g.event_id}", event_time=g.event_time
                   + timedelta(seconds=5)) for g in goods[:6]]
    fb_sample = corpus.avro(fb[0])
    bad_fb = [(Feedback(tenant="acme", session_id="s", interaction_id="i-001", rating=r,
                        event_id=f"fb-bad-{k}", event_time=NOW), "schema_invalid")
              for k, r in enumerate((-0.5, 1.5, float("nan"), float("inf"), 1e308))]
    bad_fb.append((Feedback(tenant="", session_id="s", interaction_id="i-001", rating=0.5,
                            event_id="fb-bad-tenant", event_time=NOW), "schema_invalid"))
    for good_fb, (bad_event, reason) in zip(fb, bad_fb, strict=True):
        corpus.good_event(good_fb)
        corpus.bad("feedback.v1", corpus.avro(bad_event), "score", reason,
                   partition_for_tenant(bad_event.tenant, 2))
    _garbage(corpus, "feedback.v1", "score", fb_sample)

    # voice: good notes (when espeak-ng can speak them) and bad ones.
    note = VoiceNote(tenant="acme", session_id="acme-voice", codec="wav", audio=b"RIFF",
                     event_id="v-sample", event_time=NOW)
    if voice:
        for k, (tenant, sentence) in enumerate([
                ("acme", "Please restart the billing service after the deploy."),
                ("globex", "Remember to rotate the search index keys every month.")]):
            corpus.good_event(VoiceNote(
                tenant=tenant, session_id=f"{tenant}-voice", codec="wav",
                audio=synthesize(sentence), event_id=f"v-good-{k}", event_time=NOW))
            corpus.bad("voice.v1", corpus.avro(VoiceNote(
                tenant="", session_id="s", codec="wav", audio=b"RIFF", event_id=f"v-bad-{k}",
                event_time=NOW)), "transcribe", "schema_invalid",
                partition_for_tenant("", 2))
    for k, (audio, reason) in enumerate([(b"\x00garbage audio", "undecodable_audio"),
                                         (b"", "empty_audio")]):
        corpus.bad("voice.v1", corpus.avro(VoiceNote(
            tenant="initech", session_id="s", codec="ogg", audio=audio, event_id=f"v-a{k}",
            event_time=NOW)), "transcribe", reason, partition_for_tenant("initech", 2))
    _garbage(corpus, "voice.v1", "transcribe", corpus.avro(note))
    corpus.flush()


def _stats(settings: Settings) -> str:
    return subprocess.run([sys.executable, "-m", "streams", "stats"], env=memstream_env(settings),
                          cwd=REPO, capture_output=True, text=True, timeout=180,
                          check=True).stdout


def _wait_letters(settings: Settings, count: int, proc: subprocess.Popen[bytes],
                  log: Path, timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        letters = dead_letters(settings)
        if len(letters) >= count:
            return letters
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{len(letters)} of {count} dead letters"
        time.sleep(2)


def test_poison_corpus_is_dead_lettered_and_every_good_event_memorized(
    provisioned: Settings, tmp_path: Path
) -> None:
    settings = worker_settings(provisioned, tmp_path)
    voice = espeak_available()
    corpus = Corpus(settings)
    build(corpus, voice)
    log = tmp_path / "worker.log"
    proc = start_worker(settings, log)
    try:
        wait_ready(log, 0, timeout=300)
        voice_good = {e for e in corpus.good if e.startswith("v-good")}
        wait_drained(settings, corpus.telemetry_records + len(voice_good), timeout=600)
        letters = _wait_letters(settings, len(corpus.expected), proc, log)
        assert proc.poll() is None, "the worker exited"

        # Feedback for an interaction long expired (dated a month back): visible, not silent.
        stale = Feedback(tenant="acme", session_id="acme-s", interaction_id="i-gone",
                         rating=0.4, event_id="fb-stale", event_time=NOW - timedelta(days=30))
        corpus.bad("feedback.v1", corpus.avro(stale), "score", "unknown_interaction",
                   partition_for_tenant("acme", 2))
        corpus.flush()
        letters = _wait_letters(settings, len(corpus.expected), proc, log)
        stats = _stats(settings)
        assert proc.poll() is None, "the worker exited"
    finally:
        assert stop_worker(proc) == 0, log.read_text()[-3000:]

    got = {(d["source_topic"], d["source_partition"], d["source_offset"]):
           (d["agent"], d["reason_code"]) for d in letters}
    assert len(got) == len(letters), "a record dead-lettered twice"
    assert got == corpus.expected, {
        k: (got.get(k), v) for k, v in corpus.expected.items() if got.get(k) != v}
    for letter in letters:
        assert letter["reason"], letter
    stale_letter = [d for d in letters if d["reason_code"] == "unknown_interaction"]
    assert stale_letter[0]["reason"].startswith("feedback for unknown or expired interaction")

    memorized = Counter(e for m in final_memories(settings).values() for e in m["source_event_ids"])
    assert set(memorized) == corpus.good, corpus.good ^ set(memorized)
    assert max(memorized.values()) == 1

    text = log.read_text()
    assert "isolating" not in text, "an agent raised on data instead of dead-lettering it"
    assert "Traceback" not in text

    balance = re.search(r"ingested (\d+) = memories (\d+) \+ merged (\d+) \+ in deleted "
                        r"memories (\d+) \+ dead-lettered (\d+) \+ in flight (-?\d+)", stats)
    assert balance, stats
    ingested, memories, merged, deleted, dead, in_flight = map(int, balance.groups())
    assert in_flight == 0, stats
    assert ingested == memories + merged + deleted + dead, stats
    telemetry_dead = sum(1 for (topic, _p, _o) in corpus.expected if topic.endswith(
        "telemetry.v1"))
    assert dead == telemetry_dead, stats
    assert ingested == corpus.telemetry_records + len(voice_good), stats


def test_a_question_mark_or_an_empty_tenant_next_to_valid_events_stops_nothing(
    provisioned: Settings, tmp_path: Path
) -> None:
    """The issue's case: "?" and tenant "" beside valid events of three tenants made memorize
    raise, the worker exit 2, and every restart exit again on the same record."""
    from tests.integration.harness import produce_unchecked

    settings = worker_settings(provisioned, tmp_path)
    valid = [_telemetry(t, f"How does {t} rotate its billing keys?", k)
             for k, t in enumerate(TENANTS)]
    poison = [_telemetry("acme", "?", 10), _telemetry("", "Where is the runbook?", 11),
              _telemetry("globex", "...", 12)]
    produce_unchecked(settings, [valid[0], poison[0], valid[1], poison[1], poison[2], valid[2]])
    log = tmp_path / "worker.log"
    proc = start_worker(settings, log, agents="score,memorize")
    try:
        wait_ready(log, 0, timeout=300)
        wait_drained(settings, len(valid) + len(poison), timeout=300)
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        assert stop_worker(proc) == 0, log.read_text()[-3000:]
    memorized = {e for m in final_memories(settings).values() for e in m["source_event_ids"]}
    assert memorized == {e.event_id for e in valid}
    assert sorted((d["agent"], d["reason_code"]) for d in dead_letters(settings)) == [
        ("score", "empty_text"), ("score", "empty_text"), ("score", "schema_invalid")]


def test_one_interaction_id_for_megabytes_of_text_stops_nothing(
    provisioned: Settings, tmp_path: Path
) -> None:
    """A client that sends every event under one interaction id: score's join state for it
    outgrew the changelog topic's 2 MiB record limit, and the broker's refusal failed every
    batch from then on. Now the interaction keeps its newest events only."""
    import base64
    import os

    from streams.sdk.producer import MemstreamProducer

    settings = worker_settings(provisioned, tmp_path)
    # ~3.5 MB of text that lz4 cannot squeeze under the limit (random base64).
    events = [TelemetryEvent(tenant="acme", session_id="acme-s", interaction_id="one-for-all",
                             kind="QUERY", text=base64.b64encode(os.urandom(22_000)).decode(),
                             event_id=f"t-{n:03d}", event_time=NOW - timedelta(minutes=60 - n))
              for n in range(120)]
    with MemstreamProducer(settings) as producer:
        for event in events:
            producer.send_async(event)
    log = tmp_path / "worker.log"
    proc = start_worker(settings, log, agents="score,memorize")
    try:
        wait_ready(log, 0, timeout=300)
        wait_drained(settings, len(events), timeout=300)
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        assert stop_worker(proc) == 0, log.read_text()[-3000:]
    memorized = {e for m in final_memories(settings).values() for e in m["source_event_ids"]}
    assert memorized == {e.event_id for e in events}
    assert dead_letters(settings) == []


def test_megabyte_long_ids_are_dead_lettered_and_stop_nothing(
    provisioned: Settings, tmp_path: Path
) -> None:
    """Ids had no length limit: three events of one text whose event ids were 400,000
    characters long merged into one memory record over memories.v1's 1 MiB record limit,
    and the broker's refusal failed every batch from then on."""
    import base64
    import os

    from tests.integration.harness import produce_unchecked

    settings = worker_settings(provisioned, tmp_path)
    text = "The staging database password rotates every Monday."
    # Random, so that compression cannot bring the record under the limit.
    huge = [_telemetry("acme", text, n, event_id=base64.b64encode(os.urandom(300_000)).decode())
            for n in range(3)]
    long_session = replace(_telemetry("globex", "Where is the runbook?", 5),
                           session_id="s" * 300)
    valid = [_telemetry(t, f"How does {t} rotate its billing keys?", 10 + k)
             for k, t in enumerate(TENANTS)]
    produce_unchecked(settings, [valid[0], *huge, valid[1], long_session, valid[2]])
    log = tmp_path / "worker.log"
    proc = start_worker(settings, log, agents="score,memorize")
    try:
        wait_ready(log, 0, timeout=300)
        wait_drained(settings, len(valid) + len(huge) + 1, timeout=300)
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        assert stop_worker(proc) == 0, log.read_text()[-3000:]
    memorized = {e for m in final_memories(settings).values() for e in m["source_event_ids"]}
    assert memorized == {e.event_id for e in valid}
    letters = dead_letters(settings)
    assert sorted((d["agent"], d["reason_code"]) for d in letters) == [("score", "oversize")] * 4
    assert all("over the limit of 256 for an id" in d["reason"] for d in letters)
