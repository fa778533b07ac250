"""``memstream rebuild-index`` against the real stack: a parallel rebuild (one process per
share of the partitions) writes the same snapshot as a single process, and a share killed
with SIGKILL fails the rebuild without touching the current snapshot."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from streams.common.admin import ensure_topics
from streams.common.codec import AvroCodec
from streams.common.partitioning import partition_for_tenant
from streams.common.registry import latest_schema, register_all, registry_client, subject_for
from streams.common.settings import Settings
from streams.common.topics import topic_spec
from streams.models.embedder import vector_to_bytes
from streams.models.index import IndexPolicy
from streams.service.feed import feed_topics
from streams.service.rebuild import RebuildError, rebuild_index
from streams.service.replica import Replica
from streams.service.snapshot import SnapshotStore

MODEL = "sentence-transformers/all-MiniLM-L6-v2@onnx-fp32"  # the default backend's model id
DIM = 384
TENANTS = [f"tenant-{i}" for i in range(7)]


def _memory(i: int, tenant: str, **overrides: Any) -> dict[str, Any]:
    vec = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    record = {
        "tenant": tenant, "memory_id": f"{tenant}-m{i}", "event_id": f"e{i}",
        "event_time": 1_700_000_000_000 + i, "session_id": f"s{i % 5}",
        "kind": ("QUERY", "RESPONSE", "TOOL_CALL")[i % 3], "text": f"memory {i} of {tenant}",
        "content_hash": f"{i:064x}", "embedding": vector_to_bytes(vec / np.linalg.norm(vec)),
        "model_id": MODEL, "dimension": DIM, "value": None if i % 4 == 0 else (i % 10) / 10,
        "confidence": 0.5, "occurrence_count": 1, "source_event_ids": [f"e{i}"], "merges": [],
        "deleted": False, "scorer_version": "v1",
    }
    record.update(overrides)
    return record


def _summary(i: int, tenant: str) -> dict[str, Any]:
    return {
        "tenant": tenant, "summary_id": f"{tenant}-sum{i}", "event_id": f"sum{i}",
        "event_time": 1_700_000_000_000 + i, "session_id": f"s{i % 5}",
        "window_start": 1_700_000_000_000, "window_end": 1_700_000_600_000,
        "text": f"summary {i}", "key_terms": ["a", "b"], "counts_by_kind": {"QUERY": 1},
        "outcome_rate": None, "event_ids": [f"e{i}"], "method": "extractive",
    }


@pytest.fixture
def memories_log(stack_settings: Settings) -> tuple[Settings, int]:
    """4 partitions of memories (inserts, updates, deletes) and summaries for 7 tenants."""
    settings = stack_settings.model_copy(update={"partitions": 4})
    ensure_topics(settings)
    register_all(settings, progress=lambda _m: None)
    codec = AvroCodec(registry_client(settings))
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 20, "log_level": 3})
    count = 0

    def send(base: str, schema: str, record: dict[str, Any]) -> None:
        nonlocal count
        spec = topic_spec(base)
        value = codec.encode(subject_for(settings, spec), latest_schema(schema), record)
        partition = partition_for_tenant(record["tenant"], settings.partitions)
        producer.produce(settings.topic(base), value=value, partition=partition,
                         key=record["tenant"].encode())
        producer.poll(0)
        count += 1

    for i in range(12_000):
        tenant = TENANTS[i % len(TENANTS)]
        send("memories.v1", "memory", _memory(i, tenant))
        if i % 50 == 7:  # a later occurrence of an earlier memory
            send("memories.v1", "memory", _memory(i - 7, tenant, occurrence_count=2,
                                                  source_event_ids=[f"e{i - 7}", f"x{i}"]))
        if i % 97 == 20:  # a deletion (same tenant: 14 is a multiple of 7)
            send("memories.v1", "memory", _memory(i - 14, tenant, deleted=True))
        if i % 400 == 0:
            send("summaries.v1", "summary", _summary(i, tenant))
    assert producer.flush(60) == 0
    return settings, count


def _load(settings: Settings) -> Replica:
    loaded = SnapshotStore(settings.serve_snapshot_dir).load(
        MODEL, 0, feed_topics(settings), IndexPolicy())
    assert loaded is not None
    return loaded


def _state(replica: Replica) -> dict[str, Any]:
    tenants = {}
    for name, shard in replica.tenants.items():
        # Bytes, not lists: an unknown value is NaN, and NaN != NaN.
        arrays = {k: (v.dtype.str, v.tobytes()) for k, v in shard.arrays().items()}
        tenants[name] = (shard.meta, shard.id_of_row, shard.codes, arrays)
    return {"tenants": tenants, "summaries": replica.summaries, "offsets": replica.offsets,
            "applied": replica.applied}


def test_parallel_rebuild_writes_the_single_process_snapshot(
    memories_log: tuple[Settings, int], tmp_path: Path
) -> None:
    settings, produced = memories_log
    one = settings.model_copy(update={"serve_data_dir": tmp_path / "one"})
    three = settings.model_copy(update={"serve_data_dir": tmp_path / "three"})
    seen: list[tuple[int, int]] = []

    single = rebuild_index(one, jobs=1)
    parallel = rebuild_index(three, lambda done, total: seen.append((done, total)), jobs=3)

    assert (single.jobs, parallel.jobs) == (1, 3)
    assert single.records == parallel.records == produced
    assert single.memories == parallel.memories == 12_000 - len(range(20, 12_000, 97))
    assert seen and seen[-1][0] == produced, "progress reaches every record"
    assert all(a <= b for (a, _), (b, _) in zip(seen, seen[1:], strict=False))
    assert {p.name for p in Path(parallel.snapshot).iterdir()} >= {"p0-t0.npz", "p2-t0.npz"}
    assert _state(_load(one)) == _state(_load(three))
    assert len(_load(three).tenants) == len(TENANTS)


def _shares() -> list[int]:
    """Pids of this process's rebuild share processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"streams.service.rebuild" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_killed_share_fails_the_rebuild_and_keeps_the_current_snapshot(
    memories_log: tuple[Settings, int], tmp_path: Path
) -> None:
    settings, _produced = memories_log
    settings = settings.model_copy(update={"serve_data_dir": tmp_path / "data"})
    before = rebuild_index(settings, jobs=1)
    killed: list[int] = []

    def kill_one(done: int, total: int) -> None:
        if not killed and done < total:
            victim = _shares()[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    with pytest.raises(RebuildError, match=r"exit code -9"):
        rebuild_index(settings, kill_one, jobs=2)

    assert killed, "the rebuild ended before a share could be killed"
    store = SnapshotStore(settings.serve_snapshot_dir)
    assert store.current() == Path(before.snapshot), "CURRENT moved"
    assert not list(settings.serve_snapshot_dir.glob(".tmp-*")), "half-written files left"
    assert _state(_load(settings))["applied"] == before.records
