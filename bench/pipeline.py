"""Pipeline benchmark: memstream's throughput as a share of the raw limits, measured in one run.

Over the same generated telemetry, on a fresh topic prefix: the embedding model's own
batched throughput (the raw limit) and the full exactly-once path (score + memorize);
then the score+dedupe path alone — the same texts again under new event ids, so every
event is an exact duplicate and nothing is embedded — against a plain aiokafka
consume→produce loop over the same records (and, for reference, the same loop with
confluent-kafka). The copy loops are reference columns only: the old "score+dedupe ≥ 0.5 ×
aiokafka copy" target is withdrawn (issue 15: the wrong anchor); the score+dedupe targets
are measured against Quix Streams on the same work by ``bench.peers``. Prints a table and,
last, one JSON line.

    MEMSTREAM_EXTRAS="dev compare" make install    # the aiokafka baseline: the compare extra
    PYTHONPATH=. .venv/bin/python -m bench.pipeline --events 5000 --tenants 3 --partitions 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import agents.worker
from streams.common.admin import ensure_topics
from streams.common.observability import WorkerMetrics
from streams.common.reader import read_topic
from streams.common.registry import register_all
from streams.common.settings import Settings, load_settings
from streams.sdk.events import TelemetryEvent
from streams.sdk.producer import MemstreamProducer

logger = logging.getLogger(__name__)

TARGET_FULL = 0.85  # full path events/s ÷ raw model sentences/s

# --- telemetry texts ------------------------------------------------------------------------
_WORDS: dict[str, list[str]] = {
    "verb": ["configure", "migrate", "rotate", "debug", "restore", "benchmark", "deploy",
             "validate", "throttle", "archive", "reindex", "upgrade", "audit", "scale",
             "roll back", "resize", "shard", "patch"],
    "adj": ["staging", "production", "legacy", "regional", "encrypted", "nightly", "shared",
            "replicated", "customer-facing", "internal", "read-only", "multi-tenant", "canary",
            "batch", "low-latency", "archived"],
    "object": ["Postgres cluster", "billing service", "Kafka consumer group", "search index",
               "payment webhook", "TLS certificate", "Redis cache", "bucket policy",
               "CI pipeline", "feature flag", "OAuth client", "cron scheduler", "API gateway",
               "DNS zone", "Terraform module", "Helm chart", "message queue", "load balancer"],
    "system": ["Kubernetes", "AWS", "GCP", "Azure", "the on-prem datacenter", "our Nomad setup",
               "the EU region", "the US-East region", "the edge fleet", "the shared VPC"],
    "condition": ["traffic is peaking", "the primary is lagging", "a deploy is in progress",
                  "the disk is nearly full", "the on-call engineer is offline",
                  "two replicas disagree", "the quarterly close is running",
                  "a backup is still writing"],
    "risk": ["dropping in-flight requests", "losing audit logs", "breaking existing sessions",
             "paging the whole team", "invalidating the cache", "exceeding the monthly budget",
             "corrupting the replicas", "violating the data residency rules"],
    "step": ["drain the open connections", "take a fresh snapshot", "pause the consumers",
             "scale the replicas down", "export the current config", "tag the release",
             "open a change request", "warm the standby node", "freeze the schema",
             "notify the account owners"],
    "check": ["error rates stay flat", "consumer lag returns to zero", "all health checks pass",
              "the dashboards show green", "p99 latency stays under budget",
              "no alerts fire for ten minutes", "the checksums match"],
    "tool": ["kubectl", "psql", "terraform plan", "the cloud CLI", "helm upgrade", "curl",
             "the metrics query API", "a log search", "the secrets manager", "pg_dump"],
    "result": ["an empty result set", "a permission error", "a timeout", "three failing pods",
               "a diff of four resources", "a stale lock", "a certificate chain warning",
               "a clean plan", "two orphaned volumes"],
    "metric": ["p99 latency", "the error rate", "consumer lag", "CPU usage", "queue depth",
               "memory pressure", "the retry count", "monthly cost"],
    "team": ["platform", "payments", "data", "security", "mobile", "growth", "support", "infra"],
    "preference": ["blue-green deploys", "manual approval gates", "weekly maintenance windows",
                   "read replicas for reporting", "short-lived credentials",
                   "infrastructure as code only", "canary releases at five percent"],
    "reason": ["an outage last spring", "an audit finding", "the contract with a large customer",
               "a costly rollback", "a compliance requirement", "flaky network links",
               "a noisy-neighbour incident"],
}
_TEMPLATES: dict[str, list[str]] = {
    "QUERY": [
        "How do I {verb} the {adj} {object} on {system} while {condition} without {risk}?",
        "What is the safest way to {verb} our {adj} {object} in {system} when {condition}?",
        "Why does the {adj} {object} on {system} refuse to {verb} whenever {condition}, "
        "and how risky is {risk}?",
    ],
    "TOOL_CALL": [
        "Ran {tool} against the {adj} {object} on {system}; it returned {result} after "
        "{ms} ms and {n} retries.",
        "Called {tool} to {verb} the {adj} {object} in {system} and got {result} on attempt {n}.",
    ],
    "RESPONSE": [
        "To {verb} the {adj} {object}, first {step}, then {step2}, and confirm that {check} "
        "before closing the ticket.",
        "Since {condition}, {step} before you {verb} the {adj} {object} on {system}, then check "
        "that {check}.",
    ],
    "OUTCOME": [
        "The user confirmed the {adj} {object} on {system} works again and {metric} went from "
        "{a} to {b} in {n} minutes.",
        "After we tried to {verb} the {adj} {object}, {metric} stayed at {a} for {n} minutes, "
        "so the user escalated it.",
    ],
    "NOTE": [
        "Remember that the {team} team prefers {preference} for the {adj} {object} on {system} "
        "because of {reason}.",
        "The {team} team asked us never to {verb} the {adj} {object} during business hours, "
        "after {reason}.",
    ],
}
_OUTCOMES = ("SUCCESS", "PARTIAL", "FAILURE")


def _sentence(rng: random.Random, kind: str) -> str:
    slots = {name: rng.choice(words) for name, words in _WORDS.items()}
    slots["step2"] = rng.choice([s for s in _WORDS["step"] if s != slots["step"]])
    slots.update(ms=rng.randint(12, 9_000), n=rng.randint(1, 9), a=rng.randint(5, 900),
                 b=rng.randint(1, 400))
    return rng.choice(_TEMPLATES[kind]).format(**slots)


@dataclass(frozen=True)
class Workload:
    """The generated events and the distinct texts the pipeline has to embed."""

    events: list[TelemetryEvent]
    unique_texts: list[str]

    @property
    def duplicates(self) -> int:
        """Events whose text repeats an earlier event of the same tenant exactly."""
        return len(self.events) - len(self.unique_texts)


def generate_workload(n: int, tenants: int, dup_ratio: float, seed: int) -> Workload:
    """Sessions of interactions (query, tool calls, response, outcome, notes) across tenants.

    Texts are 15–25 words and unique across tenants, except that a ``dup_ratio`` share of
    events repeats an earlier text of the same tenant and kind exactly.
    """
    rng = random.Random(seed)
    names = [f"tenant-{i}" for i in range(tenants)]
    seen: set[str] = set()
    earlier: dict[tuple[str, str], list[str]] = {}
    events: list[TelemetryEvent] = []
    unique: list[str] = []
    while len(events) < n:
        tenant, session = rng.choice(names), str(uuid.UUID(int=rng.getrandbits(128)))
        for _ in range(rng.randint(2, 6)):
            interaction = str(uuid.UUID(int=rng.getrandbits(128)))
            kinds = ["QUERY"] + ["TOOL_CALL"] * rng.randint(0, 2) + ["RESPONSE"]
            kinds += ["OUTCOME"] * (rng.random() < 0.5) + ["NOTE"] * (rng.random() < 0.15)
            for kind in kinds:
                pool = earlier.setdefault((tenant, kind), [])
                if pool and rng.random() < dup_ratio:
                    text = rng.choice(pool)
                else:
                    text = _sentence(rng, kind)
                    while text in seen or not 15 <= len(text.split()) <= 25:
                        text = _sentence(rng, kind)
                    seen.add(text)
                    pool.append(text)
                    unique.append(text)
                tool = rng.choice(_WORDS["tool"]) if kind == "TOOL_CALL" else None
                events.append(TelemetryEvent(
                    tenant=tenant, session_id=session, interaction_id=interaction, kind=kind,
                    text=text, tool_name=tool,
                    outcome=rng.choice(_OUTCOMES) if kind == "OUTCOME" else None,
                ))
                if len(events) == n:
                    return Workload(events, unique)
    return Workload(events, unique)


# --- measurements -----------------------------------------------------------------------------
@dataclass
class Spread:
    """Runs of one measurement, quoted min / median / max."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """The median run (0 when there was none)."""
        return statistics.median(self.values) if self.values else 0.0

    def text(self, fmt: str = ",.0f") -> str:
        """``min / **median** / max`` (one value alone; ``—`` when there is none)."""
        if not self.values:
            return "—"
        if len(self.values) == 1:
            return f"{self.values[0]:{fmt}}"
        return (f"{min(self.values):{fmt}} / **{self.median:{fmt}}** / "
                f"{max(self.values):{fmt}}")

    def __str__(self) -> str:
        return self.text()


def measure_raw_embedding(texts: Sequence[str], batch_size: int, model: str) -> dict[str, Any]:
    """``embedder.embed`` over ``texts`` in batches of ``batch_size``, after one warm-up batch."""
    from streams.models.embedder import SentenceTransformerEmbedder

    started = time.perf_counter()
    embedder = SentenceTransformerEmbedder(model, batch_size=batch_size)
    load_s = time.perf_counter() - started
    embedder.embed(list(texts[:batch_size]))  # warm-up: first-call allocations, not steady state
    per_batch: list[float] = []
    started = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        chunk = list(texts[i : i + batch_size])
        began = time.perf_counter()
        embedder.embed(chunk)
        per_batch.append(len(chunk) / (time.perf_counter() - began))
    seconds = time.perf_counter() - started
    return {"texts": len(texts), "seconds": seconds, "per_s": len(texts) / seconds,
            "batch_p50_per_s": statistics.median(per_batch), "load_s": load_s}


class _CapturedMetrics(WorkerMetrics):
    """WorkerMetrics that remember themselves: run_worker builds its own and does not return it."""

    instances: ClassVar[list[WorkerMetrics]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _CapturedMetrics.instances.append(self)


def _metric_totals(metrics: WorkerMetrics) -> dict[str, float]:
    """Sums over labels of the worker's counters and histograms that explain where time went."""
    totals: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            name = sample.name.removeprefix("memstream_")
            if name.endswith(("_total", "_sum", "_count")):
                label = "/".join(v for k, v in sorted(sample.labels.items())
                                 if k in ("outcome", "match"))
                key = f"{name}[{label}]" if label else name
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


class WorkerThread:
    """``run_worker`` in a thread, with the time it became ready and any error it raised."""

    def __init__(self, settings: Settings, names: tuple[str, ...]) -> None:
        self.settings = settings
        self.names = names
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.ready_at = 0.0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"worker-{'+'.join(names)}")

    def _run(self) -> None:
        try:
            agents.worker.run_worker(self.settings, self.names, self.stop, self._on_ready)
        except BaseException as exc:  # noqa: BLE001 - re-raised by check() in the main thread
            self.error = exc

    def _on_ready(self) -> None:
        self.ready_at = time.perf_counter()
        self.ready.set()

    def start(self, deadline: float) -> None:
        """Start it and wait until it is subscribed (models loaded, topics provisioned)."""
        self._thread.start()
        while not self.ready.wait(0.1):
            self.check()
            if not self._thread.is_alive() or time.perf_counter() > deadline:
                raise RuntimeError(f"worker {self.names} never became ready")

    def check(self) -> None:
        """Raise the worker's error, if it died."""
        if self.error is not None:
            raise RuntimeError(f"worker {self.names} failed: {self.error!r}") from self.error

    def close(self) -> None:
        """Stop after the current batch and wait for it to leave the group."""
        self.stop.set()
        self._thread.join(120)


class GroupProgress:
    """A group's committed offsets and the topics' end offsets, read without joining the group."""

    def __init__(self, settings: Settings, group: str) -> None:
        # read_uncommitted: a read_committed OffsetFetch waits while a transaction holds
        # pending offsets (KIP-447 require_stable), which would slow the polling down.
        self._consumer = Consumer({**settings.kafka_client_config(), "group.id": group,
                                   "enable.auto.commit": False, "log_level": 3})
        self._partitions = range(settings.partitions)
        self._timeout = settings.request_timeout_s

    def committed(self, topic: str) -> list[int]:
        """Next offset to process per partition (0 where the group has committed nothing)."""
        found = self._consumer.committed([TopicPartition(topic, p) for p in self._partitions],
                                         timeout=self._timeout)
        return [max(tp.offset, 0) for tp in sorted(found, key=lambda tp: tp.partition)]

    def ends(self, topic: str) -> list[int]:
        """High watermark per partition (transaction markers included)."""
        return [self._consumer.get_watermark_offsets(TopicPartition(topic, p), self._timeout,
                                                     cached=False)[1] for p in self._partitions]

    def close(self) -> None:
        """Release the client (it never joined, so it commits nothing)."""
        self._consumer.close()


@dataclass
class Timeline:
    """When a worker run reached each point (perf_counter seconds)."""

    ready: float
    first_commit: float = 0.0
    committed_at_first: int = 0
    score_done: float = 0.0
    done: float = 0.0


def wait_processed(
    worker: WorkerThread, n: int, *, memorize: bool, poll_s: float, timeout_s: float
) -> Timeline:
    """Poll until the group has committed all of telemetry.v1 (and, with memorize, scored.v1).

    Telemetry comes from the non-transactional SDK, so done means committed == end. Once
    it is, every score transaction has committed and scored.v1 is final; each of its
    partitions then ends with a commit marker the group never consumes, so memorize is
    done when committed == end - 1 (the offset after its last data record).
    """
    s = worker.settings
    progress = GroupProgress(s, s.app_id)
    line = Timeline(worker.ready_at)
    telemetry, scored = s.topic("telemetry.v1"), s.topic("scored.v1")
    already: int | None = None  # committed before this run (earlier passes of the same app)
    try:
        while True:
            worker.check()
            now = time.perf_counter()
            if now - line.ready > timeout_s:
                raise TimeoutError(f"{worker.names}: not done after {timeout_s:.0f}s")
            done_in = sum(progress.committed(telemetry))
            already = done_in if already is None else already
            if done_in > already and not line.first_commit:
                line.first_commit, line.committed_at_first = now, done_in
            if done_in >= n:
                line.score_done = line.score_done or now
                if not memorize:
                    break
                ends, committed = progress.ends(scored), progress.committed(scored)
                if all(e == 0 or c >= e - 1 for c, e in zip(committed, ends, strict=True)):
                    break
            time.sleep(poll_s)
        line.done = time.perf_counter()
        return line
    finally:
        progress.close()


def run_agents(
    settings: Settings, names: tuple[str, ...], n: int, timeout_s: float
) -> tuple[Timeline, dict[str, float]]:
    """Run ``names`` over the pre-produced telemetry until processed; return timings, metrics."""
    worker = WorkerThread(settings, names)
    try:
        worker.start(time.perf_counter() + timeout_s)
        line = wait_processed(worker, n, memorize="memorize" in names, poll_s=0.05,
                              timeout_s=timeout_s)
    finally:
        worker.close()
    worker.check()
    return line, _metric_totals(_CapturedMetrics.instances[-1])


def plain_copy(settings: Settings, source: str, target: str, n: int) -> dict[str, float]:
    """A plain confluent-kafka loop: consume ``source`` bytes, produce them to ``target``.

    Same client library, batch size, wait and producer durability (idempotent, acks=all,
    same compression) as the runtime, but no transactions, no decoding, no state: offsets
    are committed once, at the end. It joins a fresh group, as the worker does.
    """
    conf = settings.kafka_client_config()
    consumer = Consumer({**conf, "group.id": f"bench-copy-{uuid.uuid4()}", "log_level": 3,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "partition.assignment.strategy": "range"})
    producer = Producer({**conf, "enable.idempotence": True, "acks": "all", "log_level": 3,
                         "compression.type": settings.worker_compression, "linger.ms": 5})
    started = time.perf_counter()
    first = 0.0
    copied = 0
    try:
        consumer.subscribe([source])
        while copied < n:
            if time.perf_counter() - started > 300:
                raise TimeoutError(f"plain copy: {copied} of {n} records after 300s")
            for msg in consumer.consume(settings.batch_max_records, settings.batch_max_wait_s):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                first = first or time.perf_counter()
                while True:
                    try:
                        producer.produce(target, msg.value(), msg.key(), partition=msg.partition())
                        break
                    except BufferError:
                        producer.poll(0.1)
                copied += 1
            producer.poll(0)
        if producer.flush(settings.request_timeout_s):
            raise RuntimeError("plain copy: records left undelivered")
        consumer.commit(asynchronous=False)
        done = time.perf_counter()
    finally:
        consumer.close()
    return {"total_per_s": n / (done - started), "steady_per_s": (n - 1) / (done - first)}


def aiokafka_copy(settings: Settings, source: str, target: str, n: int) -> dict[str, float]:
    """The issue's baseline: a plain aiokafka loop that consumes ``source`` and produces each
    record's bytes to ``target`` (same partition), idempotent, acks=all, same compression
    and linger as the runtime; offsets committed once at the end. Joins a fresh group."""
    import asyncio

    try:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    except ImportError:
        sys.exit('the aiokafka baseline needs the compare extra: '
                 'MEMSTREAM_EXTRAS="dev compare" make install')

    async def copy() -> dict[str, float]:
        consumer = AIOKafkaConsumer(
            source, bootstrap_servers=settings.bootstrap_servers,
            group_id=f"bench-aiocopy-{uuid.uuid4()}", enable_auto_commit=False,
            auto_offset_reset="earliest")
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, enable_idempotence=True, acks="all",
            compression_type=settings.worker_compression, linger_ms=settings.linger_ms)
        started = time.perf_counter()
        await consumer.start()
        await producer.start()
        first = 0.0
        copied = 0
        try:
            while copied < n:
                if time.perf_counter() - started > 300:
                    raise TimeoutError(f"aiokafka copy: {copied} of {n} records after 300s")
                batches = await consumer.getmany(
                    timeout_ms=int(settings.batch_max_wait_s * 1000),
                    max_records=settings.batch_max_records)
                for tp, msgs in batches.items():
                    for msg in msgs:
                        first = first or time.perf_counter()
                        await producer.send(target, msg.value, msg.key, partition=tp.partition)
                        copied += 1
            await producer.flush()
            await consumer.commit()
            done = time.perf_counter()
        finally:
            await producer.stop()
            await consumer.stop()
        return {"total_per_s": n / (done - started), "steady_per_s": (n - 1) / (done - first)}

    return asyncio.run(copy())


def produce_duplicates(settings: Settings, events: Sequence[TelemetryEvent]) -> None:
    """``events`` again under new event ids: exact duplicates of memorized content."""
    with MemstreamProducer(settings) as producer:
        for event in events:
            producer.send_async(replace(event, event_id=str(uuid.uuid4())))


# --- the run ------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    import confluent_kafka
    import sentence_transformers
    import torch

    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": model,
            "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "sentence_transformers": sentence_transformers.__version__,
            "confluent_kafka": confluent_kafka.__version__,
            "librdkafka": confluent_kafka.libversion()[0], "platform": platform.platform()}


def delete_prefixed_topics(settings: Settings) -> int:
    """Delete this run's topics (all start with its unique prefix)."""
    admin = AdminClient({**settings.kafka_client_config(), "log_level": 3})
    names = [t for t in admin.list_topics(timeout=settings.request_timeout_s).topics
             if t.startswith(settings.topic_prefix)]
    for future in admin.delete_topics(names, request_timeout=settings.request_timeout_s).values():
        future.result()
    return len(names)


def memory_coverage(settings: Settings) -> dict[str, int]:
    """Distinct memories on memories.v1 and the events they account for (latest state each)."""
    latest: dict[str, int] = {}
    for record in read_topic(settings, "memories.v1"):
        if record.value is not None:
            latest[record.value["memory_id"]] = int(record.value["occurrence_count"])
    return {"memories": len(latest), "events_covered": sum(latest.values())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every step, in order; returns the machine-readable result."""
    run_id = uuid.uuid4().hex[:12]
    tmp = Path(tempfile.mkdtemp(prefix=f"memstream-bench-{run_id}-"))

    def settings_for(app: str) -> Settings:
        return load_settings(topic_prefix=f"bench-{run_id}.", partitions=args.partitions,
                             app_id=f"bench-{run_id}-{app}", worker_id="bench-0",
                             data_dir=tmp / app, metrics_port=0)

    base = settings_for("full")
    result: dict[str, Any] = {"bench": "pipeline", "run_id": run_id, "machine": machine(),
                              "params": {k: getattr(args, k) for k in vars(args)},
                              "loadavg_start": os.getloadavg()}
    try:
        work = generate_workload(args.events, args.tenants, args.dup_ratio, args.seed)
        words = [len(t.split()) for t in work.unique_texts]
        result["workload"] = {"events": len(work.events), "unique_texts": len(work.unique_texts),
                              "exact_duplicates": work.duplicates,
                              "mean_words": round(statistics.mean(words), 1)}
        _say(f"workload: {len(work.events)} events, {len(work.unique_texts)} unique texts "
             f"(mean {statistics.mean(words):.1f} words), {work.duplicates} exact duplicates")

        raw = measure_raw_embedding(work.unique_texts, base.embed_batch_size, base.embedding_model)
        result["raw_embed"] = raw
        _say(f"raw model: {raw['per_s']:.1f} sentences/s (batch {base.embed_batch_size})")

        ensure_topics(base)
        register_all(base, progress=lambda _line: None)
        started = time.perf_counter()
        with MemstreamProducer(base) as producer:
            for event in work.events:
                producer.send_async(event)
        result["produce_per_s"] = len(work.events) / (time.perf_counter() - started)
        n = len(work.events)

        timeout = args.timeout
        line, totals = run_agents(base, ("score", "memorize"), n, timeout)
        elapsed = line.done - line.ready
        full = {"seconds": elapsed, "per_s": n / elapsed,
                "score_done_s": line.score_done - line.ready,
                "join_and_first_batch_s": line.first_commit - line.ready,
                "metrics": totals, **memory_coverage(base)}
        # The raw limit again, right after: other load on a shared machine changes between
        # phases, so the ratio uses the mean of the measurements around the full path.
        after = measure_raw_embedding(work.unique_texts, base.embed_batch_size,
                                      base.embedding_model)
        raw["per_s_before"], raw["per_s_after"] = raw["per_s"], after["per_s"]
        raw["per_s"] = (raw["per_s_before"] + after["per_s"]) / 2
        raw["seconds"] = len(work.unique_texts) / raw["per_s"]
        _say(f"raw model again: {after['per_s']:.1f} sentences/s; mean {raw['per_s']:.1f}")
        full["ratio"] = full["per_s"] / raw["per_s"]
        embed_s = totals.get("embed_seconds_sum", 0.0)
        # Load-insensitive view: the share of the wall time the model was busy.
        full["model_busy_share"] = embed_s / elapsed if elapsed else 0.0
        result["full"] = full
        _say(f"full path: {full['per_s']:.1f} events/s, ratio {full['ratio']:.2f}")

        telemetry, scratch = base.topic("telemetry.v1"), base.topic("bench-scratch")
        admin = AdminClient({**base.kafka_client_config(), "log_level": 3})
        admin.create_topics([NewTopic(scratch, num_partitions=args.partitions,
                                      replication_factor=1)])[scratch].result()
        dedupe_total, dedupe_steady = Spread(), Spread()
        aio_total, aio_steady, copy_total, copy_steady = Spread(), Spread(), Spread(), Spread()
        for i in range(args.repeats):
            # Repeat i+1: n more events, each an exact duplicate; the same app goes on.
            produce_duplicates(base, work.events)
            aio = aiokafka_copy(base, telemetry, scratch, n)
            aio_total.values.append(aio["total_per_s"])
            aio_steady.values.append(aio["steady_per_s"])
            copy = plain_copy(base, telemetry, scratch, n)
            copy_total.values.append(copy["total_per_s"])
            copy_steady.values.append(copy["steady_per_s"])
            line, totals = run_agents(base, ("score", "memorize"), n * (i + 2), timeout)
            if totals.get("embed_seconds_count", 0):
                raise RuntimeError("the dedupe pass embedded texts: not an exact-duplicate run")
            dedupe_total.values.append(n / (line.done - line.ready))
            dedupe_steady.values.append(
                (n * (i + 2) - line.committed_at_first) / (line.done - line.first_commit))
            _say(f"repeat {i + 1}: aiokafka copy {aio['total_per_s']:.0f}/s, confluent-kafka "
                 f"copy {copy['total_per_s']:.0f}/s, score+dedupe "
                 f"{dedupe_total.values[-1]:.0f}/s")
        coverage = memory_coverage(base)
        if coverage["events_covered"] != n * (args.repeats + 1):
            raise RuntimeError(f"memories cover {coverage['events_covered']} events, "
                               f"expected {n * (args.repeats + 1)}")
        result["dedupe"] = {"per_s": dedupe_total.values, "steady_per_s": dedupe_steady.values,
                            "median_per_s": dedupe_total.median, **coverage}
        result["aiokafka_copy"] = {"per_s": aio_total.values, "steady_per_s": aio_steady.values,
                                   "median_per_s": aio_total.median}
        result["plain_copy"] = {"client": "confluent-kafka", "per_s": copy_total.values,
                                "steady_per_s": copy_steady.values,
                                "median_per_s": copy_total.median}
        result["score_ratio"] = dedupe_total.median / aio_total.median
        result["score_ratio_steady"] = dedupe_steady.median / aio_steady.median
        result["spreads"] = {"dedupe": str(dedupe_total), "dedupe_steady": str(dedupe_steady),
                             "aio": str(aio_total), "aio_steady": str(aio_steady),
                             "copy": str(copy_total), "copy_steady": str(copy_steady)}
    finally:
        if not args.keep_topics:
            try:
                delete_prefixed_topics(base)
            except KafkaException:
                logger.warning("could not delete the topics of prefix %s", base.topic_prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    # Other processes share these CPUs: the load says how much they competed.
    result["loadavg_end"] = os.getloadavg()
    return result


def print_table(r: dict[str, Any]) -> None:
    """The human-readable summary."""
    m, w, raw, full = r["machine"], r["workload"], r["raw_embed"], r["full"]
    met = full["metrics"]
    embed_s = met.get("embed_seconds_sum", 0.0)
    embed_calls = met.get("embed_seconds_count", 0.0)
    batch_mean = met.get("embed_batch_size_sum", 0.0) / embed_calls if embed_calls else 0.0
    rows = [
        (f"raw model: embed, batch {r['params']['embed_batch']} (mean of before/after)",
         w["unique_texts"], raw["seconds"],
         f"{raw['per_s_before']:,.1f} / **{raw['per_s']:,.1f}** / {raw['per_s_after']:,.1f}",
         "", ""),
        ("full path: score+memorize", w["events"], full["seconds"], f"{full['per_s']:,.1f}",
         f"{full['ratio']:.2f}", f">= {TARGET_FULL}"),
        ("plain aiokafka consume→produce", w["events"], None, r["spreads"]["aio"], "", ""),
        ("score+dedupe (exact dups, no embed)", w["events"], None, r["spreads"]["dedupe"],
         f"{r['score_ratio']:.2f}", "none"),
        ("  steady: aiokafka from its 1st record", w["events"], None, r["spreads"]["aio_steady"],
         "", ""),
        ("  steady: dedupe from its 1st commit", w["events"], None,
         r["spreads"]["dedupe_steady"], f"{r['score_ratio_steady']:.2f}", ""),
        ("  reference: confluent-kafka copy", w["events"], None, r["spreads"]["copy"], "", ""),
    ]
    print()
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}, torch {m['torch']} "
          f"({m['torch_threads']} threads), sentence-transformers {m['sentence_transformers']}, "
          f"confluent-kafka {m['confluent_kafka']} / librdkafka {m['librdkafka']}; load average "
          f"{r['loadavg_start'][0]:.2f} at start, {r['loadavg_end'][0]:.2f} at end")
    print(f"workload: {w['events']} events, {r['params']['tenants']} tenants, "
          f"{r['params']['partitions']} partitions, {w['unique_texts']} unique texts "
          f"(mean {w['mean_words']} words), {w['exact_duplicates']} exact duplicates")
    print()
    print(f"| {'step':<36} | {'items':>6} | {'seconds':>7} | {'per second':>24} | ratio | target |")
    print(f"|{'-' * 38}|{'-' * 8}|{'-' * 9}|{'-' * 26}|-------|--------|")
    for name, items, seconds, rate, ratio, target in rows:
        secs = f"{seconds:.1f}" if seconds is not None else ""
        print(f"| {name:<36} | {items:>6} | {secs:>7} | {rate:>24} | {ratio:>5} | {target:>6} |")
    print()
    print(f"full path detail: score finished at {full['score_done_s']:.1f}s, group join + first "
          f"batch {full['join_and_first_batch_s']:.1f}s; embedding {embed_s:.1f}s in "
          f"{embed_calls:.0f} calls (mean batch {batch_mean:.1f}) = "
          f"{full['model_busy_share']:.0%} of the wall time (the model's busy share); "
          f"transactions {met.get('transactions_total[commit]', 0):.0f} committed / "
          f"{met.get('transactions_total[abort]', 0):.0f} aborted; duplicates merged "
          f"{met.get('duplicates_total[exact]', 0):.0f} exact + "
          f"{met.get('duplicates_total[near]', 0):.0f} near; dead letters "
          f"{met.get('dead_letters_total', 0):.0f}")
    print(f"raw model detail: per-batch median {raw['batch_p50_per_s']:,.1f} sentences/s, "
          f"model load {raw['load_s']:.2f}s (not timed)")
    print(f"memories.v1: {full['memories']} memories covering {full['events_covered']} of "
          f"{w['events']} events; SDK pre-produce {r['produce_per_s']:,.0f} events/s")


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--dup-ratio", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3,
                        help="exact-duplicate passes, each timed against both copy loops")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=480.0, help="per worker run, seconds")
    parser.add_argument("--keep-topics", action="store_true", help="leave the run's topics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args.embed_batch = load_settings().embed_batch_size
    original = agents.worker.WorkerMetrics
    agents.worker.WorkerMetrics = _CapturedMetrics  # type: ignore[misc]
    try:
        result = run(args)
    finally:
        agents.worker.WorkerMetrics = original  # type: ignore[misc]
    print_table(result)
    print(json.dumps(result, default=str, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
