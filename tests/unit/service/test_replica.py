"""The replica: recall by cosine with filters, tenant isolation, deletes, model checks."""

from __future__ import annotations

import numpy as np

from streams.service.memories import RecallFilters
from streams.service.replica import Replica
from tests.unit.service.conftest import DIM, MODEL, unit


def brute_force(replica: Replica, tenant: str, q: np.ndarray, k: int) -> list[str]:
    shard = replica.tenants[tenant]
    ids = sorted(shard.meta)
    matrix = np.stack([shard.vectors.matrix[shard.row_of[i]] for i in ids])
    scores = matrix @ (q / np.linalg.norm(q))
    order = sorted(range(len(ids)), key=lambda j: (-scores[j], ids[j]))
    return [ids[j] for j in order[:k]]


def test_recall_returns_the_exact_nearest_memories_of_the_tenant_only(replica_factory) -> None:
    replica = replica_factory(60)
    hits = replica.recall("acme", unit(7), k=5)
    assert hits[0].memory["memory_id"] == "acme-m7"
    assert abs(hits[0].similarity - 1.0) < 1e-5
    assert [h.memory["memory_id"] for h in hits] == brute_force(replica, "acme", unit(7), 5)
    assert all(h.memory["memory_id"].startswith("acme-") for h in hits)
    assert replica.recall("nobody", unit(7), k=5) == []


def test_filters_restrict_session_kind_time_and_value(replica_factory) -> None:
    replica = replica_factory(60)
    q = unit(3)
    hits = replica.recall("acme", q, k=100, filters=RecallFilters(session_id="s1"))
    assert hits and all(h.memory["session_id"] == "s1" for h in hits)
    hits = replica.recall("acme", q, k=100, filters=RecallFilters(kinds=("QUERY",)))
    assert hits and all(h.memory["kind"] == "QUERY" for h in hits)
    hits = replica.recall("acme", q, k=100,
                          filters=RecallFilters(time_from_ms=10_000, time_to_ms=20_000))
    assert sorted(int(h.memory["event_time"]) for h in hits) == list(range(10_000, 20_001, 1000))
    hits = replica.recall("acme", q, k=100, filters=RecallFilters(min_value=0.5))
    assert hits and all(h.memory["value"] is not None and h.memory["value"] >= 0.5 for h in hits)
    assert replica.recall("acme", q, k=100, filters=RecallFilters(session_id="nope")) == []


def test_min_similarity_drops_weak_hits(replica_factory) -> None:
    replica = replica_factory(30)
    hits = replica.recall("acme", unit(4), k=30, min_similarity=0.99)
    assert [h.memory["memory_id"] for h in hits] == ["acme-m4"]


def test_deleted_record_removes_the_memory_and_a_later_upsert_updates_in_place(
    replica_factory, memory_factory
) -> None:
    replica = replica_factory(10)
    with replica.lock:
        replica.apply("memories.v1", 0, 100, memory_factory("acme", 4, deleted=True,
                                                            embedding=b"", dimension=0))
        replica.apply("memories.v1", 0, 101, memory_factory("acme", 5, occurrence_count=9))
    assert replica.get("acme", "acme-m4") is None
    assert "acme-m4" not in [h.memory["memory_id"] for h in replica.recall("acme", unit(4), k=10)]
    assert replica.get("acme", "acme-m5")["occurrence_count"] == 9
    assert replica.get("globex", "acme-m5") is None, "another tenant's id is not found"
    assert replica.position("memories.v1", 0) == 102


def test_memories_of_another_model_are_never_indexed(memory_factory) -> None:
    replica = Replica(MODEL, DIM)
    with replica.lock:
        replica.apply("memories.v1", 0, 0, memory_factory("acme", 1, model_id="other/model"))
    assert replica.get("acme", "acme-m1") is None
    assert replica.skipped["other_model"] == 1


def test_hnsw_above_the_threshold_keeps_recall_and_honours_filters_and_deletes(
    replica_factory, memory_factory
) -> None:
    replica = replica_factory(3000, tenants=("acme",), exact_max=1000)
    shard = replica.tenants["acme"]
    assert shard.vectors.kind == "hnsw"
    rng = np.random.default_rng(1)
    agree = 0
    for _ in range(50):
        q = rng.standard_normal(DIM).astype(np.float32)
        got = [h.memory["memory_id"] for h in replica.recall("acme", q, k=10)]
        agree += len(set(got) & set(brute_force(replica, "acme", q, 10)))
    assert agree / 500 >= 0.95
    with replica.lock:
        row = shard.row_of["acme-m42"]
        replica.apply("memories.v1", 0, 10**6, memory_factory("acme", 42, deleted=True))
    assert "acme-m42" not in [h.memory["memory_id"] for h in replica.recall("acme", unit(42), k=5)]
    # The deleted memory's vector is gone from the matrix and from the graph's own copy.
    assert not shard.vectors.matrix[row].any()
    assert shard.vectors.ann is not None
    assert not shard.vectors.ann.reconstruct(row).any()
    assert replica.deletions == 1
    hits = replica.recall("acme", unit(42), k=10, filters=RecallFilters(kinds=("RESPONSE",)))
    assert len(hits) == 10 and all(h.memory["kind"] == "RESPONSE" for h in hits)


def test_the_feed_builds_a_graph_outside_the_lock_and_queries_stay_exact_until_then(
    memory_factory,
) -> None:
    from streams.models.index import IndexPolicy

    replica = Replica(MODEL, DIM, IndexPolicy(exact_max=500, hnsw_ef_search=64))
    with replica.lock:
        for i in range(800):
            replica.apply("memories.v1", 0, i, memory_factory("acme", i))
        replica.sync(build=False)
    shard = replica.tenants["acme"]
    assert shard.vectors.kind == "exact"
    assert replica.recall("acme", unit(9), k=1)[0].memory["memory_id"] == "acme-m9"
    replica.build_graphs()
    assert shard.vectors.kind == "hnsw" and shard.vectors.ann_rows == 800
    with replica.lock:
        for i in range(800, 900):  # a tail, searched exactly until it is long enough
            replica.apply("memories.v1", 0, i, memory_factory("acme", i))
        replica.sync(build=False)
    assert replica.recall("acme", unit(850), k=1)[0].memory["memory_id"] == "acme-m850"
    assert replica.recall("acme", unit(9), k=1)[0].memory["memory_id"] == "acme-m9"
