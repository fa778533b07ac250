"""The HTTP layer over a real replica with fakes for the feed, the gate and the model."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from streams.service import http
from streams.service.auth import TokenTable
from streams.service.core import MissingModel, ModelNotLoadedError, ReadService, ServiceMetrics
from streams.service.http import create_app
from streams.settings import load_settings
from tests.unit.service.conftest import DIM, MODEL, unit


class FakeEmbedder:
    model_id = MODEL
    dimension = DIM

    def embed(self, texts: list[str]) -> np.ndarray:
        # "memory number 7 of acme" -> the vector of memory 7
        return np.stack([unit(int(t.split()[2])) for t in texts])

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class FakeFeed:
    alive = True
    failed = None
    topics = {"memories.v1": "memories.v1", "summaries.v1": "summaries.v1"}

    def __init__(self) -> None:
        self.caught_up = threading.Event()
        self.caught_up.set()

    def lag(self) -> int:
        return 0


class FakeGate:
    def wait(self, positions: list[Any], timeout_s: float | None = None) -> None:
        self.waited = positions


class FakeCommands:
    def __init__(self, replica: Any, memory_factory: Any) -> None:
        self.replica, self.make = replica, memory_factory

    def delete(self, tenant: str, memory: dict[str, Any]) -> str:
        n = int(memory["memory_id"].rsplit("m", 1)[1])
        with self.replica.lock:
            self.replica.apply("memories.v1", 0, 999, self.make(tenant, n, deleted=True))
        return "commands.v1:0:999"


@pytest.fixture
def client(service_factory) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(create_app(service_factory()))


@pytest.fixture
def service_factory(replica_factory, memory_factory):  # type: ignore[no-untyped-def]
    """A service over a replica of 20 memories per tenant, with the given (fake) model."""

    def make(embedder: Any = None, model_error: str | None = None) -> ReadService:
        return _service(replica_factory, memory_factory, embedder or FakeEmbedder(), model_error)

    return make


@pytest.fixture
def reachable_dependencies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Broker and registry checks pass without a broker or a registry."""
    monkeypatch.setattr(http, "_check_broker", lambda _s: {"ok": True, "detail": "fake"})
    monkeypatch.setattr(http, "_check_registry", lambda _s: {"ok": True, "detail": "fake"})


def _service(replica_factory: Any, memory_factory: Any, embedder: Any,
             model_error: str | None) -> ReadService:
    replica = replica_factory(20)
    with replica.lock:
        replica.apply("summaries.v1", 0, 0, {
            "tenant": "acme", "summary_id": "sum-1", "event_id": "x", "event_time": 5,
            "session_id": "s1", "window_start": 0, "window_end": 10,
            "text": "the session was about keys", "key_terms": [], "event_ids": ["e1", "e4"],
        })
    return ReadService(
        load_settings(), replica, FakeFeed(), FakeGate(), embedder,  # type: ignore[arg-type]
        TokenTable.parse("tok-acme=acme,tok-globex=globex"), ServiceMetrics(),
        FakeCommands(replica, memory_factory), model_error,  # type: ignore[arg-type]
    )


ACME = {"Authorization": "Bearer tok-acme"}
GLOBEX = {"Authorization": "Bearer tok-globex"}


def test_every_v1_request_needs_a_valid_token(client: TestClient) -> None:
    body = {"query": "memory number 3 of acme"}
    assert client.post("/v1/recall", json=body).status_code == 401
    assert client.post("/v1/recall", json=body,
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/memories/acme-m3").status_code == 401
    assert client.post("/v1/recall", json=body, headers=ACME).status_code == 200


def test_recall_is_scoped_to_the_token_tenant(client: TestClient) -> None:
    body = {"query": "memory number 3 of acme", "k": 5}
    hits = client.post("/v1/recall", json=body, headers=ACME).json()["hits"]
    assert hits[0]["memory_id"] == "acme-m3" and hits[0]["similarity"] > 0.999
    assert {"text", "value", "occurrence_count", "source_event_ids"} <= set(hits[0])
    other = client.post("/v1/recall", json=body, headers=GLOBEX).json()["hits"]
    assert all(h["memory_id"].startswith("globex-") for h in other)
    assert client.get("/v1/memories/acme-m3", headers=GLOBEX).status_code == 404
    assert client.delete("/v1/memories/acme-m3", headers=GLOBEX).status_code == 404
    assert client.get("/v1/memories/acme-m3", headers=ACME).json()["memory_id"] == "acme-m3"


def test_recall_filters_and_delete(client: TestClient) -> None:
    body = {"query": "memory number 3 of acme", "k": 20,
            "filters": {"kinds": ["RESPONSE"], "session_id": "s0"}}
    hits = client.post("/v1/recall", json=body, headers=ACME).json()["hits"]
    assert hits and all(h["kind"] == "RESPONSE" and h["session_id"] == "s0" for h in hits)
    deleted = client.delete("/v1/memories/acme-m3", headers=ACME)
    assert deleted.status_code == 200 and deleted.json()["applied"]
    assert client.get("/v1/memories/acme-m3", headers=ACME).status_code == 404
    hits = client.post("/v1/recall", json={"query": "memory number 3 of acme"},
                       headers=ACME).json()["hits"]
    assert "acme-m3" not in [h["memory_id"] for h in hits]


def test_context_packs_summaries_then_memories_within_budget(client: TestClient) -> None:
    body = {"session_id": "s1", "query": "memory number 4 of acme", "token_budget": 12, "k": 5}
    ctx = client.post("/v1/context", json=body, headers=ACME).json()
    assert ctx["pieces"][0] == {
        "type": "summary", "id": "sum-1", "text": "the session was about keys",
        "tokens": 5, "source_ids": ["e1", "e4"], "similarity": None,
    }
    assert ctx["pieces"][1]["id"] == "acme-m4" and ctx["pieces"][1]["source_ids"] == ["e4"]
    assert ctx["tokens_used"] <= 12
    assert ctx["tokens_used"] == sum(p["tokens"] for p in ctx["pieces"])
    none = client.post("/v1/context", json=body, headers=GLOBEX).json()
    assert all(not p["id"].startswith("acme") and p["id"] != "sum-1" for p in none["pieces"])


def test_health_ready_metrics_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    client.post("/v1/recall", json={"query": "memory number 1 of acme"}, headers=ACME)
    text = client.get("/metrics").text
    assert ('memstream_serve_request_seconds_count'
            '{method="POST",route="/v1/recall",status="200"}') in text
    assert 'memstream_serve_index_memories{kind="exact"} 40.0' in text
    spec = client.get("/openapi.json").json()
    assert {"/v1/recall", "/v1/context", "/v1/memories/{memory_id}"} <= set(spec["paths"])


@pytest.mark.usefixtures("reachable_dependencies")
def test_readiness_includes_a_passing_model_check(client: TestClient) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert set(ready.json()["checks"]) == {"broker", "registry", "index", "model"}
    assert ready.json()["checks"]["model"] == {"ok": True, "detail": f"{MODEL} (dimension {DIM})"}


@pytest.mark.usefixtures("reachable_dependencies")
def test_a_model_that_did_not_load_keeps_the_service_live_but_not_ready(
    service_factory: Any,
) -> None:
    missing = MissingModel("/no/such/model", MODEL, OSError("Path /no/such/model not found"))
    client = TestClient(create_app(service_factory(missing, missing.detail)))
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["failing"] == ["model"]
    assert ready.json()["checks"]["model"] == {
        "ok": False, "detail": "/no/such/model: Path /no/such/model not found"}
    recall = client.post("/v1/recall", json={"query": "memory number 3 of acme"}, headers=ACME)
    assert recall.status_code == 503
    assert "/no/such/model: Path /no/such/model not found" in recall.json()["detail"]
    for body in ({"session_id": "s1", "query": "keys"}, {"session_id": "s1"}):
        assert client.post("/v1/context", json=body, headers=ACME).status_code == 503
    # What needs no model still works; an unknown token is still 401 first.
    assert client.get("/v1/memories/acme-m3", headers=ACME).status_code == 200
    assert client.post("/v1/recall", json={"query": "x"}).status_code == 401


def test_missing_model_refuses_every_use() -> None:
    missing = MissingModel("/no/such/model", "/no/such/model", OSError("not found"))
    assert (missing.model_id, missing.dimension) == ("/no/such/model", 0)
    with pytest.raises(ModelNotLoadedError, match="/no/such/model: not found"):
        missing.embed(["x"])
    with pytest.raises(ModelNotLoadedError, match="/no/such/model: not found"):
        missing.count_tokens("x")


def test_service_metrics_export_the_snapshot_directory_disk_use(tmp_path: Path) -> None:
    (tmp_path / "CURRENT").write_bytes(b"x" * 10)
    text = generate_latest(ServiceMetrics(tmp_path).registry).decode()
    assert 'memstream_state_dir_bytes{dir="serve"} 10.0' in text
    assert 'memstream_state_fs_free_bytes{dir="serve"}' in text
    assert 'memstream_state_fs_size_bytes{dir="serve"}' in text
    assert "memstream_state_dir_bytes" not in generate_latest(ServiceMetrics().registry).decode()
