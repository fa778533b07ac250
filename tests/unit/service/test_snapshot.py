"""Snapshots: a loaded snapshot answers as the replica it was taken from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streams.models.index import IndexPolicy
from streams.service.snapshot import SnapshotStore, manifest, write_part
from tests.unit.service.conftest import DIM, MODEL
from tests.unit.test_private_files import mode, open_umask, others_can_read  # noqa: F401

TOPICS = {"memories.v1": "memories.v1", "summaries.v1": "summaries.v1"}


def answers(replica, tenant: str) -> list[list[tuple[str, float]]]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    out = []
    for _ in range(20):
        q = rng.standard_normal(DIM).astype(np.float32)
        out.append([(h.memory["memory_id"], round(h.similarity, 5))
                    for h in replica.recall(tenant, q, k=10)])
    return out


def test_loaded_snapshot_gives_the_same_answers_and_offsets(
    replica_factory, tmp_path: Path
) -> None:
    for exact_max in (10_000, 100):  # exact and HNSW
        replica = replica_factory(300, exact_max=exact_max)
        store = SnapshotStore(tmp_path / str(exact_max))
        store.save(replica, TOPICS)
        loaded = store.load(MODEL, DIM, TOPICS, IndexPolicy(exact_max=exact_max, hnsw_ef_search=64))
        assert loaded is not None
        assert loaded.offsets == replica.offsets
        assert loaded.tenants["acme"].vectors.kind == replica.tenants["acme"].vectors.kind
        graph = loaded.tenants["acme"].vectors.ann
        # The loaded graph owns its faiss object: a proxy that did not would search freed memory.
        assert graph is None or graph.thisown
        for tenant in ("acme", "globex"):
            assert answers(loaded, tenant) == answers(replica, tenant)


def test_snapshot_for_another_model_or_topics_is_not_loaded(
    replica_factory, tmp_path: Path
) -> None:
    replica = replica_factory(10)
    store = SnapshotStore(tmp_path)
    store.save(replica, TOPICS)
    assert store.load("other/model", DIM, TOPICS, IndexPolicy()) is None
    assert store.load(MODEL, DIM, {"memories.v1": "x.memories.v1"}, IndexPolicy()) is None


def test_a_half_written_snapshot_is_ignored(replica_factory, tmp_path: Path) -> None:
    replica = replica_factory(10)
    store = SnapshotStore(tmp_path)
    first = store.save(replica, TOPICS)
    (tmp_path / ".tmp-crashed").mkdir()
    (tmp_path / "000000000099").mkdir()  # renamed dir without CURRENT pointing at it
    assert store.current() == first
    assert json.loads((tmp_path / "CURRENT").read_text())["snapshot"] == first.name
    assert store.load(MODEL, DIM, TOPICS, IndexPolicy()) is not None


def test_parts_of_disjoint_tenants_load_as_one_replica(replica_factory, tmp_path: Path) -> None:
    acme, globex = replica_factory(40, tenants=("acme",)), replica_factory(30, tenants=("globex",))
    acme.offsets["memories.v1"] = {0: 40}
    globex.offsets["memories.v1"] = {1: 30}
    globex.summaries = {"globex": {"g1": {"summary_id": "g1", "session_id": "s1"}}}
    store = SnapshotStore(tmp_path)
    tmp = store.begin()
    parts = [write_part(tmp, acme, "p0-"), write_part(tmp, globex, "p1-")]
    store.commit(tmp, manifest(MODEL, DIM, TOPICS, parts))

    loaded = store.load(MODEL, DIM, TOPICS, IndexPolicy(hnsw_ef_search=64))
    assert loaded is not None
    assert loaded.offsets == {"memories.v1": {0: 40, 1: 30}, "summaries.v1": {}}
    assert loaded.applied == acme.applied + globex.applied
    assert loaded.summaries == globex.summaries
    assert answers(loaded, "acme") == answers(acme, "acme")
    assert answers(loaded, "globex") == answers(globex, "globex")


def test_parts_sharing_a_tenant_are_refused(replica_factory, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    tmp = store.begin()
    parts = [write_part(tmp, replica_factory(5), "p0-"), write_part(tmp, replica_factory(5), "p1-")]
    with pytest.raises(ValueError, match="share a tenant"):
        manifest(MODEL, DIM, TOPICS, parts)


@pytest.mark.usefixtures("open_umask")
def test_snapshots_are_private(replica_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Snapshot directories 0700 and files 0600 whatever the umask (every tenant's text)."""
    serve = tmp_path / "state" / "serve" / "app"
    SnapshotStore(serve).save(replica_factory(20), TOPICS)
    assert others_can_read(tmp_path / "state") == []
    files = [p for p in serve.rglob("*") if p.is_file()]
    assert files and all(mode(p) == 0o600 for p in files)
    assert (serve / "CURRENT").exists()


def test_a_purging_save_leaves_no_older_snapshot_with_a_deleted_memory(
    replica_factory, memory_factory, tmp_path: Path
) -> None:
    replica = replica_factory(50, exact_max=20)  # HNSW: the graph keeps a copy of each row
    store = SnapshotStore(tmp_path / "snap")
    doomed = replica.get("acme", "acme-m7")
    assert doomed is not None
    row = replica.tenants["acme"].row_of["acme-m7"]
    marker = replica.tenants["acme"].vectors.matrix[row].tobytes()[:64]  # a copy
    store.save(replica, TOPICS)
    store.save(replica, TOPICS)
    with replica.lock:
        replica.apply("memories.v1", 0, 10**6, memory_factory("acme", 7, deleted=True))
    store.save(replica, TOPICS)  # the default keeps the previous one...
    kept = [p for p in (tmp_path / "snap").iterdir() if p.name.isdigit()]
    assert len(kept) == 2
    store.save(replica, TOPICS, keep=1)  # ...a purge does not
    (only,) = [p for p in (tmp_path / "snap").iterdir() if p.name.isdigit()]
    entry = next(t for t in json.loads((only / "manifest.json").read_text())["tenants"]
                 if t["tenant"] == "acme")  # globex-m7 has the same vector: not that one
    blobs = b"".join(f.read_bytes() for f in only.glob(f"{entry['file']}.*"))
    assert entry["hnsw"] and marker not in blobs, "the vector is in no file (matrix, graph)"
    loaded = store.load(MODEL, DIM, TOPICS, IndexPolicy(exact_max=20))
    assert loaded is not None and "acme-m7" not in loaded.tenants["acme"].meta


def test_the_feed_replaces_every_snapshot_until_one_is_caught_up_after_the_deletion(
    replica_factory, memory_factory, tmp_path: Path
) -> None:
    """A snapshot taken before the summaries re-derived with a delete were applied keeps
    the purge pending: the next one still replaces all older snapshots."""
    import time

    from streams.common.settings import load_settings
    from streams.service.feed import ReplicaFeed

    replica = replica_factory(20)
    snapshots = SnapshotStore(tmp_path / "feed")
    feed = ReplicaFeed(load_settings(), replica, snapshots)
    feed.snapshot()
    feed.snapshot()
    with replica.lock:
        replica.apply("memories.v1", 0, 10**6, memory_factory("acme", 3, deleted=True))
    feed._purge_after = time.monotonic()  # what _apply does on a deletion
    feed.high = {("summaries.v1", 0): 10**9}  # the re-derived summary not applied yet
    feed._high_at = time.monotonic()
    feed._since_snapshot = 1
    feed.snapshot()  # e.g. due by record count, while behind
    digits = [p for p in (tmp_path / "feed").iterdir() if p.name.isdigit()]
    assert len(digits) == 1 and feed._purge_after is not None, "still pending"
    feed.high = {}  # caught up
    feed._high_at = time.monotonic()
    feed._since_snapshot = 1
    feed._maybe_snapshot()
    assert feed._purge_after is None
    feed.snapshot()  # afterwards the usual two are kept again
    assert len([p for p in (tmp_path / "feed").iterdir() if p.name.isdigit()]) == 2
