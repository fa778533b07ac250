"""Recovery of derived state: kill -9 the read service, drop its snapshot, rebuild it from
the log, and replay the worker from a mid offset (real processes, real stack)."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from confluent_kafka import Consumer, TopicPartition

from streams.common.admin import ensure_topics
from streams.common.codec import AvroCodec
from streams.common.registry import register_all, registry_client
from streams.common.settings import Settings
from streams.ops.replay import live_members
from streams.sdk.events import TelemetryEvent
from streams.sdk.producer import MemstreamProducer
from tests.integration.harness import (
    REPO,
    start_worker,
    stop_worker,
    wait_drained,
    wait_ready,
    worker_settings,
)
from tests.integration.service_harness import Service, raw_memories, service_env
from tests.integration.workload import generate


def provisioned_worker_settings(stack_settings: Settings, tmp: Path) -> Settings:
    settings = worker_settings(stack_settings, tmp)
    ensure_topics(settings)
    register_all(settings, progress=lambda _m: None)
    return settings


def answers(service: Service, queries: list[tuple[str, str]]) -> list[list[tuple[Any, ...]]]:
    """What the service answers to each (token, query): ids, rounded scores, counts."""
    out = []
    for token, query in queries:
        r = httpx.post(f"{service.url}/v1/recall", json={"query": query, "k": 8},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200, r.text
        out.append([(h["memory_id"], round(h["similarity"], 4), h["occurrence_count"],
                     h["value"], tuple(sorted(h["source_event_ids"]))) for h in r.json()["hits"]])
    return out


def cli(settings: Settings, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = service_env(settings, data_dir, 0, data_dir)
    del env["MEMSTREAM_API_TOKENS_FILE"]
    env["MEMSTREAM_DATA_DIR"] = str(settings.data_dir)
    return subprocess.run([sys.executable, "-m", "streams", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_kill9_restart_and_dropped_snapshot_answer_like_a_fresh_rebuild(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = provisioned_worker_settings(stack_settings, tmp_path)
    work = generate(150, tenants=2, seed=21)
    tenants = sorted({e.tenant for e in work.telemetry})
    with MemstreamProducer(settings) as producer:
        for event in work.telemetry:
            producer.send_async(TelemetryEvent(**{**event.__dict__,
                                                  "tenant": "acme" if event.tenant == tenants[0]
                                                  else "globex"}))
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    service = Service(settings, tmp_path)
    rng = random.Random(3)
    try:
        wait_ready(log, 0)
        service.start(wait=False)
        for _ in range(4):  # kill -9 while memories arrive and snapshots are written
            deadline = time.monotonic() + 120
            while b"replica feed assigned" not in service.log.read_bytes():
                assert time.monotonic() < deadline, service.log.read_text()[-2000:]
                time.sleep(0.2)
            time.sleep(rng.uniform(0.5, 3.0))
            service.kill9()
            service.log.open("a").write("\n=== test: SIGKILL ===\n")
            service.start(wait=False)
        wait_drained(settings, len(work.telemetry))
        service.wait_ready()
        service.wait_lag_zero()
        assert "loaded snapshot" in service.log.read_text(), "no restart ever used a snapshot"
    finally:
        assert stop_worker(worker) == 0, log.read_text()[-3000:]

    queries = [("tok-acme" if e.tenant == tenants[0] else "tok-globex", e.text)
               for e in rng.sample(work.telemetry, 12)]
    queries += [("tok-acme", "restart the billing service safely"),
                ("tok-globex", "how to back up the audit log")]
    restarted = answers(service, queries)
    assert all(restarted), "every query finds something"
    service.stop()

    fresh = Service(settings, tmp_path).start()
    fresh.wait_lag_zero()
    assert answers(fresh, queries) == restarted, "kill -9 + restart differs from a fresh build"
    fresh.stop()

    shutil.rmtree(service.data_dir)  # dropped snapshot
    service.start()
    service.wait_lag_zero()
    assert answers(service, queries) == restarted
    service.stop()

    rebuilt_dir = tmp_path / "rebuilt"
    done = cli(settings, rebuilt_dir, "rebuild-index", "--jobs", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rebuilt" in done.stdout and "memories from" in done.stdout
    assert "2 processes" in done.stdout
    rebuilt = Service(settings, tmp_path, data_dir=rebuilt_dir).start()
    rebuilt.wait_lag_zero()
    assert "loaded snapshot" in rebuilt.log.read_text()
    assert answers(rebuilt, queries) == restarted
    rebuilt.stop()


def _ends(settings: Settings, base: str) -> dict[int, int]:
    topic = settings.topic(base)
    c = Consumer({**settings.kafka_client_config(), "group.id": "x", "log_level": 3})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def _batch(tenant_texts: list[tuple[str, str]], prefix: str) -> list[TelemetryEvent]:
    return [TelemetryEvent(tenant=t, session_id=f"{prefix}-s{i % 3}",
                           interaction_id=f"{prefix}-i{i}", kind="QUERY", text=text,
                           event_id=f"{prefix}-{i:04d}")
            for i, (t, text) in enumerate(tenant_texts)]


def test_replay_from_a_mid_offset_reproduces_byte_identical_memories(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = provisioned_worker_settings(stack_settings, tmp_path)
    rng = random.Random(9)
    subjects = ["billing service", "search index", "login page", "backup job", "mobile app"]
    first = _batch([(rng.choice(["acme", "globex"]),
                     f"How do I restart the {s} on cluster {i}?")
                    for i, s in enumerate(subjects * 4)], "a")
    foods = ["sourdough bread", "banana cake", "lasagna", "apple pie", "focaccia", "brownies"]
    second = [(rng.choice(["acme", "globex"]), f"Bake the {f} at {150 + 10 * i} degrees.")
              for i, f in enumerate(foods * 4)]
    second += [second[0], (second[1][0], second[1][1].replace("Bake", "bake")), second[2]]
    second_events = _batch(second, "b")

    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    try:
        wait_ready(log, 0)
        with MemstreamProducer(settings) as producer:
            for e in first:
                producer.send_async(e)
        wait_drained(settings, len(first))
        telemetry_mid = _ends(settings, "telemetry.v1")
        memories_mid = _ends(settings, "memories.v1")
        with MemstreamProducer(settings) as producer:
            for e in second_events:
                producer.send_async(e)
        wait_drained(settings, len(first) + len(second_events))
        refused = cli(settings, tmp_path, "replay", "--dry-run")
        assert refused.returncode == 2 and "live member" in refused.stderr, refused.stderr
    finally:
        assert stop_worker(worker) == 0
    original = [(p, k, v) for p, o, k, v in raw_memories(settings) if o >= memories_mid[p]]
    # One record per event, plus one more per supersession: the same food baked at another
    # temperature is a changed value ("at 150 degrees" -> "at 210 degrees").
    codec = AvroCodec(registry_client(settings))
    superseded = [codec.decode(v)["superseded_by"] for _p, _k, v in original if v is not None]
    assert len(original) == len(second_events) + sum(s is not None for s in superseded)
    assert any(s is not None for s in superseded)
    memories_before = _ends(settings, "memories.v1")

    deadline = time.monotonic() + 60  # a static member stays until its session times out
    while live_members(settings) and time.monotonic() < deadline:
        time.sleep(1)
    args = ["replay", "--topic", "telemetry.v1"]
    for p, o in sorted(telemetry_mid.items()):
        args += ["--from-offset", f"{p}:{o}"]
    plan = cli(settings, tmp_path, *args, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "dry run" in plan.stdout and "intermediate topic: to its end" in plan.stdout
    assert settings.data_dir is not None and settings.data_dir.exists()
    done = cli(settings, tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert not settings.data_dir.exists()

    since = log.stat().st_size
    worker = start_worker(settings, log)
    try:
        wait_ready(log, since)
        wait_drained(settings, len(first) + len(second_events))
    finally:
        assert stop_worker(worker) == 0, log.read_text()[-3000:]
    replayed = [(p, k, v) for p, o, k, v in raw_memories(settings) if o >= memories_before[p]]
    # Every byte of every record is the same, except the embedding's float32 bytes: batched
    # inference pads each batch to its longest text, so the last bits of a vector depend on
    # which texts shared its batch. Those must agree to float tolerance.
    assert [(p, k) for p, k, _v in replayed] == [(p, k) for p, k, _v in original]
    for (_p, key, new), (_p2, _k2, old) in zip(replayed, original, strict=True):
        a, b = codec.decode(new), codec.decode(old)
        assert np.allclose(np.frombuffer(a.pop("embedding"), np.float32),
                           np.frombuffer(b.pop("embedding"), np.float32), atol=1e-5), key
        assert a == b, f"replayed memory {key!r} differs from the original"
