"""``memstream export-dataset`` against the real stack: committed memories only, latest per
key, deletes honoured, reproducible bytes, pinned offsets, both formats."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from streams.common.codec import AvroCodec
from streams.common.partitioning import partition_for_tenant
from streams.common.registry import latest_schema, registry_client, subject_for
from streams.common.settings import Settings
from streams.common.topics import topic_spec
from streams.ops.export.files import sha256_of
from tests.integration.harness import REPO, memstream_env


def memory(tenant: str, memory_id: str, value: float | None, **extra: Any) -> dict[str, Any]:
    return {
        "tenant": tenant, "memory_id": memory_id, "event_id": f"ev-{memory_id}",
        "event_time": datetime(2026, 11, 1, 9, tzinfo=UTC), "session_id": "s1",
        "kind": "QUERY", "text": f"What {memory_id} says", "content_hash": f"h-{memory_id}",
        "embedding": b"\x00" * 16, "model_id": "m", "dimension": 4, "value": value,
        "confidence": 0.0 if value is None else 0.9, "occurrence_count": 1,
        "source_event_ids": [f"ev-{memory_id}"], "merges": [], "deleted": False,
        "scorer_version": None if value is None else "value-scorer/1", **extra,
    }


class MemoryWriter:
    """Writes memories.v1 the way memorize does: transactional, keyed tenant:memory_id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = AvroCodec(registry_client(settings))
        self.spec = topic_spec("memories.v1")
        self.producer = Producer({**settings.kafka_client_config(),
                                  "transactional.id": f"export-test-{uuid.uuid4()}"})
        self.producer.init_transactions(10)

    def transaction(self, records: list[tuple[str, str, dict[str, Any] | None]], *,
                    commit: bool = True) -> None:
        self.producer.begin_transaction()
        for tenant, memory_id, record in records:
            value = None if record is None else self.codec.encode(
                subject_for(self.settings, self.spec), latest_schema("memory"), record)
            self.producer.produce(
                self.settings.topic("memories.v1"), key=f"{tenant}:{memory_id}".encode(),
                value=value, partition=partition_for_tenant(tenant, self.settings.partitions))
        self.producer.flush(10)
        if commit:
            self.producer.commit_transaction(10)
        else:
            self.producer.abort_transaction(10)


def export(settings: Settings, out: Path, *args: str, rc: int = 0
           ) -> subprocess.CompletedProcess[str]:
    env = memstream_env(settings)
    result = subprocess.run(
        [sys.executable, "-m", "streams", "export-dataset", "--out", str(out), *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == rc, result.stderr[-3000:]
    return result


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def manifest(path: Path) -> dict[str, Any]:
    return json.loads(path.with_name(path.name + ".manifest.json").read_text())


def test_export_dataset_is_reproducible_filtered_and_pinnable(
    provisioned: Settings, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    writer = MemoryWriter(provisioned)
    writer.transaction([
        ("acme", "m1", memory("acme", "m1", 0.9)),
        ("acme", "m2", memory("acme", "m2", 0.3)),
        ("acme", "m3", memory("acme", "m3", None)),
        ("globex", "m4", memory("globex", "m4", 0.8)),
        ("acme", "m5", memory("acme", "m5", 0.7)),
        ("acme", "m5", memory("acme", "m5", 0.7, deleted=True)),
        ("acme", "m6", memory("acme", "m6", 0.6)),
        ("acme", "m6", None),  # tombstone
        ("acme", "m1", memory("acme", "m1", 0.95, occurrence_count=2,
                              source_event_ids=["ev-m1", "ev-m1b"])),
    ])
    writer.transaction([("acme", "m7", memory("acme", "m7", 0.99))], commit=False)

    first, second = tmp_path / "a" / "d.jsonl", tmp_path / "b" / "d.jsonl"
    result = export(provisioned, first, "--min-value", "0.5")
    assert "2 rows" in result.stdout
    assert "\r" not in result.stderr, "no progress bar when stderr is not a terminal"
    export(provisioned, second, "--min-value", "0.5", "--quiet")
    assert first.read_bytes() == second.read_bytes()
    assert manifest(first) == manifest(second)
    got = rows(first)
    assert [(r["tenant"], r["memory_id"], r["value"]) for r in got] == [
        ("acme", "m1", 0.95), ("globex", "m4", 0.8)]
    assert got[0]["occurrence_count"] == 2 and got[0]["source_event_ids"] == ["ev-m1", "ev-m1b"]
    m = manifest(first)
    assert m["rows"] == 2 and m["sha256"] == sha256_of(first)
    assert m["scorer_versions"] == ["value-scorer/1"]
    assert m["source"]["topic"] == provisioned.topic("memories.v1")
    assert m["source"]["live_memories"] == 4  # m1..m4: deleted, tombstoned, aborted gone
    assert sum(m["source"]["offsets"].values()) >= 10  # 9 records + commit markers
    assert not list(tmp_path.glob("**/.*.tmp")), "no temporary file left behind"

    with_unknown = tmp_path / "u.jsonl"
    export(provisioned, with_unknown, "--min-value", "0.5", "--include-unknown", "-q")
    assert [r["memory_id"] for r in rows(with_unknown)] == ["m1", "m3", "m4"]

    parquet = tmp_path / "d.parquet"
    export(provisioned, parquet, "--min-value", "0.5", "-q")
    assert pq.read_table(parquet).to_pylist() == got
    again = tmp_path / "again.parquet"
    export(provisioned, again, "--min-value", "0.5", "--format", "parquet", "-q")
    assert parquet.read_bytes() == again.read_bytes()

    # New memories arrive; an export pinned to the first one's offsets does not see them.
    writer.transaction([("acme", "m8", memory("acme", "m8", 0.9)),
                        ("acme", "m1", memory("acme", "m1", 0.1))])
    pinned = tmp_path / "pinned" / "d.jsonl"
    export(provisioned, pinned, "--min-value", "0.5", "-q", "--to-offsets",
           str(first.with_name("d.jsonl.manifest.json")))
    assert pinned.read_bytes() == first.read_bytes()
    assert manifest(pinned) == manifest(first)
    latest = tmp_path / "latest.jsonl"
    export(provisioned, latest, "--min-value", "0.5", "-q")
    assert [r["memory_id"] for r in rows(latest)] == ["m8", "m4"]


def test_export_covers_committed_offsets_only_and_rejects_bad_pins(
    provisioned: Settings, tmp_path: Path
) -> None:
    writer = MemoryWriter(provisioned)
    writer.transaction([("acme", "m1", memory("acme", "m1", 0.9))])
    # another writer's transaction stays open during the export: not covered, not waited for
    pending = MemoryWriter(provisioned)
    pending.producer.begin_transaction()
    pending.producer.produce(provisioned.topic("memories.v1"), key=b"acme:m2",
                             value=pending.codec.encode(
                                 subject_for(provisioned, pending.spec), latest_schema("memory"),
                                 memory("acme", "m2", 0.9)),
                             partition=partition_for_tenant("acme", provisioned.partitions))
    pending.producer.flush(10)
    out = tmp_path / "d.jsonl"
    export(provisioned, out, "-q")
    assert [r["memory_id"] for r in rows(out)] == ["m1"]
    pending.producer.abort_transaction(10)

    bad = manifest(out)
    bad["source"]["offsets"] = {p: o + 100 for p, o in bad["source"]["offsets"].items()}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    result = export(provisioned, tmp_path / "x.jsonl", "--to-offsets", str(tmp_path / "bad.json"),
                    rc=2)
    assert "outside" in result.stderr
    assert not (tmp_path / "x.jsonl").exists()
    other = manifest(out)
    other["source"]["topic"] = "elsewhere.memories.v1"
    (tmp_path / "other.json").write_text(json.dumps(other))
    result = export(provisioned, tmp_path / "x.jsonl", "--to-offsets",
                    str(tmp_path / "other.json"), rc=2)
    assert "covers topic 'elsewhere.memories.v1'" in result.stderr
