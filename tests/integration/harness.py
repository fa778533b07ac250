"""Run real worker processes against the local stack and read back what they committed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streams.common.reader import read_topic
from streams.common.settings import Settings
from streams.ops.devstack.stack import DevStack
from streams.ops.stats import pipeline_stats
from streams.processing.store import decode_value
from streams.sdk.events import Feedback, TelemetryEvent
from streams.sdk.producer import MemstreamProducer
from tests.integration.workload import Workload

REPO = Path(__file__).resolve().parents[2]


def worker_settings(base: Settings, tmp: Path, **overrides: Any) -> Settings:
    """Settings for one pipeline under test: its own app id, state dir, no metrics port."""
    return base.model_copy(
        update={
            "app_id": f"pytest-{uuid.uuid4().hex[:8]}",
            "data_dir": tmp / "state",
            "metrics_port": 0,
            "batch_max_records": 50,
            **overrides,
        }
    )


def produce(settings: Settings, work: Workload) -> None:
    """Telemetry with its early feedback in order, then late feedback, poison and garbage."""
    early = {f.interaction_id: f for f in work.feedback[1::2]}
    late = work.feedback[0::2]
    with MemstreamProducer(settings) as producer:
        for event in work.telemetry:
            producer.send_async(event)
            if event.interaction_id in early:
                producer.send_async(early[event.interaction_id])
        for fb in late:
            producer.send_async(fb)
        for note in work.voice:
            producer.send_async(note)
    # What the SDK refuses at the door, as a client without it would send it.
    produce_unchecked(settings, work.poison_empty)
    raw = Producer(settings.kafka_client_config())
    for value in work.garbage:
        raw.produce(settings.topic("telemetry.v1"), value=value, key=b"garbage", partition=0)
    raw.flush(10)


def produce_unchecked(settings: Settings, events: list[Any]) -> None:
    """Send events as a client that skips the SDK's checks would: valid Avro under the
    registered schema, on the tenant's partition, whatever ``check_event`` thinks of them."""
    from streams.common.codec import AvroCodec
    from streams.common.partitioning import partition_for_tenant
    from streams.common.registry import latest_schema, registry_client, subject_for
    from streams.common.topics import topic_spec
    from streams.common.validation import validate_record
    from streams.sdk.events import as_record

    codec = AvroCodec(registry_client(settings))
    raw = Producer(settings.kafka_client_config())
    for event in events:
        spec = topic_spec(event.TOPIC)
        schema = latest_schema(spec.schema)
        record = validate_record(schema, as_record(event), where=spec.base, limits={})
        value = codec.encode(subject_for(settings, spec), schema, record)
        raw.produce(settings.topic(spec.base), value=value,
                    key=str(record[spec.key_field]).encode("utf-8", "surrogatepass"),
                    partition=partition_for_tenant(record["tenant"], settings.partitions))
    assert raw.flush(30) == 0


def memstream_env(settings: Settings) -> dict[str, str]:
    """The environment a ``memstream`` command needs to act as ``settings``."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(REPO),
        "MEMSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MEMSTREAM_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "MEMSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "MEMSTREAM_PARTITIONS": str(settings.partitions),
        "MEMSTREAM_APP_ID": settings.app_id,
        "MEMSTREAM_WORKER_ID": settings.worker_id,
        "MEMSTREAM_METRICS_PORT": str(settings.metrics_port),
        "MEMSTREAM_BATCH_MAX_RECORDS": str(settings.batch_max_records),
        "MEMSTREAM_SUMMARY_WINDOW_S": str(settings.summary_window_s),
        "MEMSTREAM_SUMMARY_GRACE_S": str(settings.summary_grace_s),
        "OMP_NUM_THREADS": "2",
    }
    if settings.data_dir is not None:
        env["MEMSTREAM_DATA_DIR"] = str(settings.data_dir)
    return env


def start_worker(
    settings: Settings,
    log: Path,
    fault: str | None = None,
    agents: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """A real ``memstream worker`` process (``agents``: comma-separated, default all;
    ``extra_env``: more MEMSTREAM_* settings)."""
    env = memstream_env(settings)
    if fault:
        env["MEMSTREAM_FAULT_INJECT"] = fault
    env.update(extra_env or {})
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "worker", "--plain-logs",
         *(["--agents", agents] if agents else [])],
        env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
    )


def wait_ready(log: Path, since: int, timeout: float = 120) -> None:
    """Until the worker logged 'assigned partitions' after byte offset ``since`` of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "assigned partitions" in log.read_bytes()[since:].decode(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"worker not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM, then wait for a clean exit."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def stop_or_kill(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """``stop_worker``; a worker SIGTERM does not stop is killed, and that is an error."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        return stop_worker(proc, timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        raise AssertionError(f"SIGTERM did not stop the worker within {timeout:.0f}s") from None


def _behind(settings: Settings) -> int:
    """Records the app has not yet committed past, per input topic and partition, counting
    one trailing transaction marker as caught up (cheap: offsets only, no reading)."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.app_id,
                         "enable.auto.commit": False, "log_level": 3})
    try:
        behind = 0
        for base in ("telemetry.v1", "feedback.v1", "scored.v1"):
            topic = settings.topic(base)
            tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
            for tp in consumer.committed(tps, timeout=30):
                high = consumer.get_watermark_offsets(tp, timeout=30)[1]
                behind += max(0, high - 1 - max(tp.offset, 0))
        return behind
    finally:
        consumer.close()


def wait_drained(settings: Settings, ingested: int, timeout: float = 600) -> None:
    """Until the app has consumed every input and every one of the ``ingested`` telemetry
    records is memorized or dead-lettered (the accounting ``memstream stats`` prints)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        drained, last = drain_state(settings, ingested)
        if drained:
            return
        time.sleep(2)
    raise AssertionError(f"pipeline not drained after {timeout}s: {last}")


def drain_state(settings: Settings, ingested: int) -> tuple[bool, object]:
    """Whether the pipeline has drained (see ``wait_drained``), and the stats it read."""
    if _behind(settings) != 0:
        return False, None
    stats = pipeline_stats(settings)
    drained = (
        stats.ingested >= ingested
        and stats.in_flight == 0
        and all(v == 0 for v in stats.lag.values())
    )
    return drained, stats


def committed_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The app's committed offset per partition of ``topic`` (base name); -1: none yet."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.app_id,
                         "enable.auto.commit": False, "log_level": 3})
    try:
        tps = [TopicPartition(settings.topic(topic), p) for p in range(settings.partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=30)}
    finally:
        consumer.close()


def component_pid(stack: DevStack, name: str) -> int:
    """The pid of a running component (``kafka``, ``registry``) of a stack memstream started."""
    (status,) = [c for c in stack.status() if c.name == name]
    assert status.pid is not None and status.ours, f"{name} of {stack.home} is not running"
    return status.pid


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    """A worker's /healthz: status code and JSON body."""
    response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    return response.status_code, response.json()


def scored(settings: Settings) -> list[dict[str, Any]]:
    """Every committed scored record."""
    return [r.value for r in read_topic(settings, "scored.v1") if r.value]


def final_memories(settings: Settings) -> dict[str, dict[str, Any]]:
    """The latest record per memory key (what compaction keeps)."""
    latest: dict[str, dict[str, Any]] = {}
    for r in read_topic(settings, "memories.v1"):
        if r.key is not None and r.value is not None:
            latest[r.key] = r.value
    return latest


def summary_log(settings: Settings) -> list[tuple[int, str | None, dict[str, Any]]]:
    """Every committed summary record, in log order: (partition, key, value)."""
    return [(r.partition, r.key, r.value) for r in read_topic(settings, "summaries.v1") if r.value]


def _committed_records(
    settings: Settings, full_topic: str
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every committed record of ``full_topic``: (partition, offset, key, value), in log
    order per partition."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"raw-{uuid.uuid4()}",
                         "enable.partition.eof": True, "isolation.level": "read_committed",
                         "enable.auto.commit": False, "log_level": 3})
    try:
        parts = list(consumer.list_topics(full_topic, timeout=10).topics[full_topic].partitions)
        consumer.assign([TopicPartition(full_topic, p, 0) for p in parts])
        pending = set(parts)
        out: list[tuple[int, int, bytes | None, bytes | None]] = []
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                    continue
                out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
        return sorted(out, key=lambda r: (r[0], r[1]))
    finally:
        consumer.close()


def raw_log(settings: Settings, topic: str) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every committed record of ``topic`` (base name) undecoded: (partition, offset, key,
    value), in log order per partition."""
    return _committed_records(settings, settings.topic(topic))


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """Every committed dead letter."""
    return [r.value for r in read_topic(settings, "deadletter.v1") if r.value]


def changelog_state(settings: Settings, store: str) -> dict[str, Any]:
    """A state store's committed contents, as its changelog says (latest value per key)."""
    topic = settings.topic(f"{settings.app_id}-{store}-changelog")
    state: dict[str, Any] = {}
    for _partition, _offset, key, value in _committed_records(settings, topic):
        assert key is not None
        if value is None:
            state.pop(key.decode(), None)
        else:
            state[key.decode()] = decode_value(value)
    return state


def memory_identity(memories: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """What must be identical across runs: ids, text, counts, sources, merges (not values,
    which depend on how far memorize had got when an event was scored)."""
    return {
        key: (
            m["text"], m["occurrence_count"], tuple(sorted(m["source_event_ids"])),
            tuple(sorted((x["event_id"], x["match"]) for x in m["merges"])), m["deleted"],
        )
        for key, m in memories.items()
    }


def revisions_by_event(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Revisions seen per scored event id, in log order."""
    seen: dict[str, list[int]] = defaultdict(list)
    for record in records:
        seen[record["event_id"]].append(record["revision"])
    return seen


__all__ = ["Feedback", "TelemetryEvent"]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A worker's /metrics, parsed: (sample name, sorted labels) -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples
