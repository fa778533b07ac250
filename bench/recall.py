"""Read-service benchmark: recall latency, approximate-index recall, snapshot restart, rebuild.

Synthetic 384-d memories (a 1000-centre Gaussian mixture, the "clustered" data of
LIMITS.md, which behaves like real text embeddings; ``--isotropic`` for the worst case)
in one tenant, through the service's own code (Replica, TenantVectors, SnapshotStore):

- recall p50/p99 with the index alone (embedding excluded), and with the query embedded
  by the real all-MiniLM-L6-v2 first, on the default backend (embedding included);
- recall@10 of the tenant's index (HNSW above ``exact_max``) against exact search;
- snapshot write and load (restart) time;
- rebuild throughput from the log: memory records produced to a fresh memories.v1, then
  ``rebuild_index`` (what ``memstream rebuild-index`` runs) timed end to end.

    PYTHONPATH=. python -m bench.recall --sizes 10000,100000,1000000 --log-records 200000
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from streams.common.topics import TOPICS as TOPIC_SPECS
from streams.models.embedder import vector_to_bytes
from streams.models.embedding_backends import DEFAULT_BACKEND, embedding_model_id, load_embedder
from streams.models.index import IndexPolicy
from streams.service.replica import Replica
from streams.service.snapshot import SnapshotStore

# The model id the read service uses by default (its backend named in it).
MODEL = embedding_model_id("all-MiniLM-L6-v2", DEFAULT_BACKEND)
DIM = 384
TOPICS = {"memories.v1": "bench.memories.v1", "summaries.v1": "bench.summaries.v1"}


def vectors(n: int, seed: int, isotropic: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if isotropic:
        x = rng.standard_normal((n, DIM), dtype=np.float32)
    else:
        centres = np.random.default_rng(12345).standard_normal((1000, DIM), dtype=np.float32)
        x = centres[rng.integers(0, 1000, n)] + rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def record(i: int, vec: np.ndarray, tenant: str = "bench") -> dict[str, Any]:
    return {
        "tenant": tenant, "memory_id": f"m{i:08d}", "event_id": f"e{i}", "event_time": i,
        "session_id": f"s{i % 1000}", "kind": ("QUERY", "RESPONSE", "TOOL_CALL")[i % 3],
        "text": f"synthetic memory {i}", "content_hash": f"{i:064x}",
        "embedding": vector_to_bytes(vec), "model_id": MODEL, "dimension": DIM,
        "value": (i % 10) / 10, "confidence": 0.5, "occurrence_count": 1,
        "source_event_ids": [f"e{i}"], "merges": [], "deleted": False, "scorer_version": None,
    }


def kept_snapshot(n: int, args: argparse.Namespace) -> SnapshotStore | None:
    """Where ``--keep-snapshots`` keeps the index of this size and policy, or None."""
    if not args.keep_snapshots:
        return None
    kind = "iso" if args.isotropic else "clustered"
    name = f"n{n}-{kind}-max{args.exact_max}-m{args.hnsw_m}-efc{args.ef_construction}"
    return SnapshotStore(Path(args.keep_snapshots) / name)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_size(n: int, args: argparse.Namespace, embedder: Any) -> dict[str, Any]:
    policy = IndexPolicy(exact_max=args.exact_max, hnsw_m=args.hnsw_m,
                         hnsw_ef_construction=args.ef_construction, hnsw_ef_search=args.ef_search)
    data = vectors(n, seed=1, isotropic=args.isotropic)
    kept = kept_snapshot(n, args)
    out: dict[str, Any] = {"n": n}
    if kept is not None and kept.current() is not None:
        # Built by an earlier run (the 1M HNSW build takes minutes): load it, as a restart does.
        t = time.perf_counter()
        loaded = kept.load(MODEL, DIM, TOPICS, policy)
        out["snapshot_load_s"] = round(time.perf_counter() - t, 2)
        assert loaded is not None and len(loaded.tenants["bench"]) == n
        replica, build_s = loaded, None
    else:
        replica = Replica(MODEL, DIM, policy)
        started = time.perf_counter()
        with replica.lock:
            for i in range(n):
                replica.apply("memories.v1", 0, i, record(i, data[i]))
                if i % 10_000 == 9_999:
                    replica.sync()
            replica.sync()
            replica.tenants["bench"].vectors.flush()
        build_s = time.perf_counter() - started
        if kept is not None:
            t = time.perf_counter()
            with replica.lock:
                kept.save(replica, TOPICS)
            out["snapshot_write_s"] = round(time.perf_counter() - t, 2)
    shard = replica.tenants["bench"]
    queries = vectors(args.queries, seed=2, isotropic=args.isotropic)
    for q in queries[:10]:  # warm-up
        replica.recall("bench", q, k=10)
    search_ms, hits = [], []
    for q in queries:
        t = time.perf_counter()
        found = replica.recall("bench", q, k=10)
        search_ms.append((time.perf_counter() - t) * 1000)
        hits.append([int(h.memory["memory_id"][1:]) for h in found])
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10] if n <= 200_000 else np.stack(
        [np.argpartition(-(data @ q), 10)[:10] for q in queries])
    recall10 = float(np.mean([len(set(h) & set(e.tolist())) / 10 for h, e in zip(hits, exact,
                                                                               strict=True)]))
    sweep = []
    for ef in (int(x) for x in args.ef_sweep.split(",") if x):
        if shard.vectors.kind != "hnsw":
            break
        shard.vectors.policy = dataclasses.replace(policy, hnsw_ef_search=ef)
        times, got = [], []
        for q in queries:
            t = time.perf_counter()
            found = replica.recall("bench", q, k=10)
            times.append((time.perf_counter() - t) * 1000)
            got.append({int(h.memory["memory_id"][1:]) for h in found})
        sweep.append({"ef_search": ef, "p50_ms": round(pct(times, 50), 3),
                      "p99_ms": round(pct(times, 99), 3),
                      "recall_at_10": round(float(np.mean(
                          [len(g & set(e.tolist())) / 10 for g, e in zip(got, exact, strict=True)]
                      )), 4)})
    shard.vectors.policy = policy
    texts = [f"How do I restart the billing service after deploy number {i}?"
             for i in range(args.queries)]
    for text in texts[:10]:  # warm-up: the model's first calls are slow
        embedder.embed([text])
    total_ms = []
    for text in texts:
        t = time.perf_counter()
        q = embedder.embed([text])[0]
        replica.recall("bench", q, k=10)
        total_ms.append((time.perf_counter() - t) * 1000)
    out.update({
        "index": shard.vectors.kind, "build_s": build_s and round(build_s, 2),
        "build_per_s": build_s and round(n / build_s),
        "search_p50_ms": round(pct(search_ms, 50), 3),
        "search_p99_ms": round(pct(search_ms, 99), 3), "total_p50_ms": round(pct(total_ms, 50), 2),
        "total_p99_ms": round(pct(total_ms, 99), 2), "recall_at_10": round(recall10, 4),
        "ef_sweep": sweep,
    })
    if args.snapshot and kept is None:
        with tempfile.TemporaryDirectory(dir=args.tmp) as d:
            store = SnapshotStore(Path(d))
            t = time.perf_counter()
            with replica.lock:
                store.save(replica, TOPICS)
            out["snapshot_write_s"] = round(time.perf_counter() - t, 2)
            del replica, shard
            t = time.perf_counter()
            loaded = store.load(MODEL, DIM, TOPICS, policy)
            out["snapshot_load_s"] = round(time.perf_counter() - t, 2)
            assert loaded is not None and len(loaded.tenants["bench"]) == n
    return out


def bench_log_rebuild(count: int, tenants: int, args: argparse.Namespace) -> dict[str, Any]:
    """Produce ``count`` memory records to a fresh prefix, then time rebuild_index."""
    from confluent_kafka import Producer

    from streams.common.admin import admin_client, ensure_topics
    from streams.common.codec import AvroCodec
    from streams.common.partitioning import partition_for_tenant
    from streams.common.registry import latest_schema, register_all, registry_client, subject_for
    from streams.common.settings import load_settings
    from streams.common.topics import topic_spec
    from streams.service.rebuild import rebuild_index

    prefix = f"bench.recall.{uuid.uuid4().hex[:6]}."
    settings = load_settings(topic_prefix=prefix, partitions=args.partitions,
                             serve_data_dir=Path(args.tmp or tempfile.gettempdir()) / prefix,
                             exact_search_max=args.exact_max)
    ensure_topics(settings)
    register_all(settings, progress=lambda _m: None)
    spec = topic_spec("memories.v1")
    codec = AvroCodec(registry_client(settings))
    subject, schema = subject_for(settings, spec), latest_schema(spec.schema)
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 50,
                         "compression.type": "zstd", "batch.size": 1_000_000, "log_level": 3})
    topic = settings.topic("memories.v1")
    data = vectors(min(count, 100_000), seed=5, isotropic=False)
    sample: list[bytes] = []
    started = time.perf_counter()
    for i in range(count):
        tenant = f"tenant-{i % tenants}"
        value = codec.encode(subject, schema, record(i, data[i % data.shape[0]], tenant))
        while True:
            try:
                producer.produce(topic, value=value, key=f"{tenant}:m{i:08d}".encode(),
                                 partition=partition_for_tenant(tenant, settings.partitions))
                break
            except BufferError:
                producer.poll(0.1)
        if i % 1000 == 0:
            producer.poll(0)
        if i < 50_000:
            sample.append(value)
    producer.flush(120)
    produce_s = time.perf_counter() - started
    report = rebuild_index(settings, jobs=args.rebuild_jobs or None)
    # The raw ceiling, measured in the same run: fastavro decode of the same records alone,
    # in one process; a rebuild with J processes can at best reach J times it.
    import fastavro

    parsed = fastavro.parse_schema(schema)
    t = time.perf_counter()
    for value in sample:
        fastavro.schemaless_reader(io.BytesIO(value[5:]), parsed, None)
    raw_decode = len(sample) / (time.perf_counter() - t)
    out = {"records": count, "tenants": tenants, "produce_s": round(produce_s, 1),
           "jobs": report.jobs, "rebuild_s": round(report.seconds, 2),
           "rebuild_per_s": round(report.rate),
           "read_and_apply_s": round(report.read_s, 2),
           "read_and_apply_per_s": round(report.records / report.read_s),
           "snapshot_s": round(report.snapshot_s, 2),
           "memories": report.memories, "raw_fastavro_decode_per_s": round(raw_decode),
           "ratio_to_raw_decode_x_jobs": round(report.rate / (raw_decode * report.jobs), 2)}
    admin = admin_client(settings)  # kept alive until the deletions are done
    for done in admin.delete_topics([settings.topic(s.base) for s in TOPIC_SPECS]).values():
        done.result()  # wait: a run that exits first leaves 1.7 GB of log behind
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--exact-max", type=int, default=20_000)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--ef-sweep", default="", help="efSearch values to also measure")
    parser.add_argument("--isotropic", action="store_true")
    parser.add_argument("--snapshot", action="store_true", help="time snapshot write/load")
    parser.add_argument("--keep-snapshots", default=None, metavar="DIR",
                        help="save each built index here; a later run loads it (timing the "
                             "restart) instead of building it again")
    parser.add_argument("--log-records", type=int, default=0, help="0: skip the log rebuild")
    parser.add_argument("--log-tenants", type=int, default=100)
    parser.add_argument("--rebuild-jobs", type=int, default=0, help="0: one per CPU")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--tmp", default=None)
    args = parser.parse_args()
    from streams.common.settings import load_settings
    from streams.service.run import single_threaded_blas

    single_threaded_blas()  # as `memstream serve` does
    embedder = load_embedder("all-MiniLM-L6-v2", DEFAULT_BACKEND,
                             cache_dir=load_settings().cache_dir, batch_size=1)
    print(json.dumps({"machine": platform.processor() or platform.machine(),
                      "model": embedder.model_id, "args": vars(args)}), flush=True)
    for n in (int(s) for s in args.sizes.split(",") if s):
        print(json.dumps(bench_size(n, args, embedder)), flush=True)
    if args.log_records:
        print(json.dumps(bench_log_rebuild(args.log_records, args.log_tenants, args)), flush=True)


if __name__ == "__main__":
    main()
