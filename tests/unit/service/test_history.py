"""Superseded memories in the read service: out of recall by default, history on request,
kept across snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from streams.models.embedder import vector_to_bytes
from streams.models.index import IndexPolicy
from streams.service.http import create_app
from streams.service.replica import Replica
from streams.service.snapshot import SnapshotStore
from tests.unit.service.conftest import ACME, DIM, MODEL, unit

TOPICS = {"memories.v1": "memories.v1", "summaries.v1": "summaries.v1"}
T0, T1, T2 = 1_000_000, 2_000_000, 3_000_000


def chain(memory_factory: Any) -> list[dict[str, Any]]:
    """Friday (T0) superseded by Tuesday (T1) superseded by Thursday (T2), as memorize
    writes them: each new memory, then the old one with superseded_by."""
    near = unit(777)

    def make(n: int, text: str, at: int, **extra: Any) -> dict[str, Any]:
        return memory_factory("acme", n, text=text, event_time=at, valid_from=at,
                              embedding=vector_to_bytes(near + 0.01 * unit(100 + n)), **extra)

    fri = make(101, "deploys on Friday", T0)
    tue = make(102, "deploys on Tuesday", T1, supersedes=fri["memory_id"])
    thu = make(103, "deploys on Thursday", T2, supersedes=tue["memory_id"])
    return [fri, tue,
            {**fri, "superseded_by": tue["memory_id"], "superseded_at": T1, "event_time": T1},
            thu,
            {**tue, "superseded_by": thu["memory_id"], "superseded_at": T2, "event_time": T2}]


def apply_all(replica: Replica, records: list[dict[str, Any]], start: int = 100) -> None:
    with replica.lock:
        for i, record in enumerate(records):
            replica.apply("memories.v1", 0, start + i, dict(record))
        replica.sync()


def test_recall_returns_only_the_current_value_and_history_on_request(
    replica_factory: Any, memory_factory: Any
) -> None:
    replica = replica_factory(20)
    apply_all(replica, chain(memory_factory))
    query = unit(777)

    hits = replica.recall("acme", query, k=3)
    ids = [h.memory["memory_id"] for h in hits]
    assert ids[0] == "acme-m103"
    assert not {"acme-m101", "acme-m102"} & set(ids)
    assert hits[0].history is None

    (top, *_rest) = replica.recall("acme", query, k=3, include_history=True)
    assert [(m["text"], m["valid_from"], m["superseded_at"]) for m in top.history or []] == [
        ("deploys on Tuesday", T1, T2), ("deploys on Friday", T0, T1)]
    assert replica.get("acme", "acme-m101")["superseded_by"] == "acme-m102"
    assert replica.size()["exact"] == 41  # 40 + Thursday: superseded ones are not live


def test_history_survives_a_snapshot(
    replica_factory: Any, memory_factory: Any, tmp_path: Path
) -> None:
    replica = replica_factory(20)
    apply_all(replica, chain(memory_factory))
    store = SnapshotStore(tmp_path)
    store.save(replica, TOPICS)
    loaded = store.load(MODEL, DIM, TOPICS, IndexPolicy())
    assert loaded is not None
    (top, *_r) = loaded.recall("acme", unit(777), k=1, include_history=True)
    assert [m["memory_id"] for m in top.history or []] == ["acme-m102", "acme-m101"]


def test_deleting_a_superseded_memory_drops_it_from_history(
    replica_factory: Any, memory_factory: Any
) -> None:
    replica = replica_factory(5)
    records = chain(memory_factory)
    apply_all(replica, [*records, {**records[2], "deleted": True}])
    (top, *_r) = replica.recall("acme", unit(777), k=1, include_history=True)
    assert [m["memory_id"] for m in top.history or []] == ["acme-m102"]
    assert replica.get("acme", "acme-m101") is None


def test_a_cycle_in_the_chain_ends(replica_factory: Any, memory_factory: Any) -> None:
    replica = replica_factory(2)
    a = memory_factory("acme", 201, supersedes="acme-m202")
    b = memory_factory("acme", 202, supersedes="acme-m201", superseded_by="acme-m201",
                       superseded_at=5)
    apply_all(replica, [a, b])
    shard = replica.tenants["acme"]
    assert [m["memory_id"] for m in shard.predecessors(shard.meta["acme-m201"])] == ["acme-m202"]


class ChainEmbedder:
    model_id = MODEL
    dimension = DIM

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([unit(777) for _ in texts])

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def test_http_recall_and_context_current_by_default_history_with_intervals(
    memory_factory: Any, service_factory: Any
) -> None:
    service = service_factory(ChainEmbedder())
    apply_all(service.replica, chain(memory_factory))
    client = TestClient(create_app(service))

    body: dict[str, Any] = {"query": "when does it deploy", "k": 1}
    (hit,) = client.post("/v1/recall", json=body, headers=ACME).json()["hits"]
    assert (hit["text"], hit["valid_from"], hit["valid_until"], hit["history"]) == (
        "deploys on Thursday", T2, None, None)
    (hit,) = client.post("/v1/recall", json={**body, "include_history": True},
                         headers=ACME).json()["hits"]
    assert [(h["text"], h["valid_from"], h["valid_until"]) for h in hit["history"]] == [
        ("deploys on Tuesday", T1, T2), ("deploys on Friday", T0, T1)]

    ctx = {"session_id": "nobody", "query": "when does it deploy", "k": 1, "token_budget": 100}
    pieces = client.post("/v1/context", json=ctx, headers=ACME).json()["pieces"]
    assert [p["text"] for p in pieces] == ["deploys on Thursday"]
    pieces = client.post("/v1/context", json={**ctx, "include_history": True},
                         headers=ACME).json()["pieces"]
    assert [(p["type"], p["text"], p["valid_until"]) for p in pieces] == [
        ("memory", "deploys on Thursday", None),
        ("superseded_memory", "deploys on Tuesday", T2),
        ("superseded_memory", "deploys on Friday", T1)]

    old = client.get("/v1/memories/acme-m101", headers=ACME).json()
    assert (old["superseded_by"], old["superseded_at"], old["valid_from"]) == (
        "acme-m102", T1, T0)


def test_a_summary_quoting_a_superseded_value_drops_or_marks_that_highlight(
    memory_factory: Any, service_factory: Any
) -> None:
    service = service_factory(ChainEmbedder())
    records = chain(memory_factory)  # Friday's event is e101, Tuesday's e102
    apply_all(service.replica, records)
    text = ("Session s1: 3 events.\nHighlights:\n- deploys on Friday (unrated)\n"
            "- deploys on Tuesday (unrated)\n- deploys on Thursday (unrated)")
    with service.replica.lock:
        service.replica.apply("summaries.v1", 0, 50, {
            "tenant": "acme", "summary_id": "sum-2", "event_id": "x", "event_time": 6,
            "session_id": "s9", "window_start": 0, "window_end": 20, "text": text,
            "key_terms": [], "event_ids": ["e101", "e102", "e103"]})
    client = TestClient(create_app(service))
    body = {"session_id": "s9", "k": 0, "token_budget": 200}

    (summary,) = client.post("/v1/context", json=body, headers=ACME).json()["pieces"]
    assert summary["superseded_memory_ids"] == ["acme-m101", "acme-m102"]
    assert "Friday" not in summary["text"] and "Tuesday" not in summary["text"]
    assert summary["text"].endswith("- deploys on Thursday (unrated)")
    (summary,) = client.post("/v1/context", json={**body, "include_history": True},
                             headers=ACME).json()["pieces"]
    assert "- [superseded] deploys on Friday (unrated)" in summary["text"]
    assert "- deploys on Thursday (unrated)" in summary["text"]
