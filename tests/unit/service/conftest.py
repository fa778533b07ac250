"""Fixtures for the read service's unit tests: records, replicas and a service (over a real
replica and gate, with fakes for the feed, the broker reads, the model) without a broker."""

from __future__ import annotations

import threading
import time
import zlib
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from streams.common.partitioning import partition_for_tenant
from streams.common.settings import load_settings
from streams.common.tokens import TokenTable
from streams.models.embedder import vector_to_bytes
from streams.models.index import IndexPolicy
from streams.service.consistency import ConsistencyGate
from streams.service.core import ReadService, ServiceMetrics
from streams.service.http import create_app
from streams.service.readiness import Readiness
from streams.service.replica import Replica

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 16


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    """A deterministic random unit vector."""
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def memory_factory():  # type: ignore[no-untyped-def]
    """Build a memories.v1 record as decoded."""

    def make(tenant: str, n: int, **overrides: Any) -> dict[str, Any]:
        record = {
            "tenant": tenant, "memory_id": f"{tenant}-m{n}", "event_id": f"e{n}",
            "event_time": 1_000 * n, "session_id": f"s{n % 3}",
            "kind": ["QUERY", "RESPONSE"][n % 2], "text": f"memory number {n} of {tenant}",
            "content_hash": f"h{n}", "embedding": vector_to_bytes(unit(n)), "model_id": MODEL,
            "dimension": DIM, "value": (n % 10) / 10 if n % 4 else None, "confidence": 0.5,
            "occurrence_count": 1 + n % 3, "source_event_ids": [f"e{n}"], "merges": [],
            "deleted": False, "scorer_version": None,
        }
        record.update(overrides)
        return record

    return make


@pytest.fixture
def replica_factory(memory_factory):  # type: ignore[no-untyped-def]
    """A replica holding ``n`` memories for each of the given tenants."""

    def make(n: int = 50, tenants: tuple[str, ...] = ("acme", "globex"),
             exact_max: int = 10_000) -> Replica:
        replica = Replica(MODEL, DIM, IndexPolicy(exact_max=exact_max, hnsw_ef_search=64))
        offset = 0
        with replica.lock:
            for i in range(n):
                for tenant in tenants:
                    replica.apply("memories.v1", 0, offset, memory_factory(tenant, i))
                    offset += 1
            replica.sync()
        return replica

    return make


def _seed(text: str) -> int:
    words = text.split()
    if len(words) > 2 and words[2].isdigit():
        return int(words[2])
    return zlib.crc32(text.encode("utf-8", "surrogatepass")) + 1_000_000  # any other text


class FakeEmbedder:
    model_id = MODEL
    dimension = DIM

    def embed(self, texts: list[str]) -> np.ndarray:
        # "memory number 7 of acme" -> the vector of memory 7
        return np.stack([unit(_seed(t)) for t in texts])

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class FakeFeed:
    alive = True
    failed = None
    topics = {"memories.v1": "memories.v1", "summaries.v1": "summaries.v1"}

    def __init__(self, replica: Any = None) -> None:
        self.replica = replica
        self.caught_up = threading.Event()
        self.caught_up.set()

    def lag(self) -> int:
        return 0


class FakeOffsets:
    """A broker where the worker group has consumed everything (``committed`` huge, every
    end 0), or, with ``stuck``, where nothing ever commits and each read takes ``delay``."""

    def __init__(self, stuck: bool = False, delay: float = 0.0) -> None:
        self.stuck, self.delay = stuck, delay
        self.reads = 0

    def _read(self, timeout: float) -> None:
        self.reads += 1
        time.sleep(min(self.delay, timeout))

    def committed(self, topic: str, partition: int, timeout: float) -> int:
        self._read(timeout)
        return 0 if self.stuck else 2**62

    def end(self, topic: str, partition: int, timeout: float) -> int:
        self._read(timeout)
        return 0

    def no_data_between(self, topic: str, partition: int, start: int, end: int,
                        timeout: float) -> bool:
        self._read(timeout)
        return not self.stuck

    def partition_count(self, topic: str, timeout: float) -> int | None:
        return 4

    def close(self) -> None:
        pass


class FakeCommands:
    def __init__(self, replica: Any, memory_factory: Any) -> None:
        self.replica, self.make = replica, memory_factory

    def delete(self, tenant: str, memory: dict[str, Any]) -> str:
        n = int(memory["memory_id"].rsplit("m", 1)[1])
        with self.replica.lock:
            self.replica.apply("memories.v1", 0, 999, self.make(tenant, n, deleted=True))
        return f"commands.v1:{partition_for_tenant(tenant, 4)}:0"


@pytest.fixture
def client(service_factory) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(create_app(service_factory()))


@pytest.fixture
def service_factory(replica_factory, memory_factory):  # type: ignore[no-untyped-def]
    """A service over a replica of 20 memories per tenant, with the given (fake) model."""

    def make(embedder: Any = None, model_error: str | None = None,
             offsets: Any = None, **settings: Any) -> ReadService:
        return _service(replica_factory, memory_factory, embedder or FakeEmbedder(), model_error,
                        offsets or FakeOffsets(), settings)

    return make


@pytest.fixture
def reachable_dependencies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Broker and registry checks pass without a broker or a registry."""
    monkeypatch.setattr(Readiness, "broker", lambda _s: {"ok": True, "detail": "fake"})
    monkeypatch.setattr(Readiness, "registry", lambda _s: {"ok": True, "detail": "fake"})


def _service(replica_factory: Any, memory_factory: Any, embedder: Any,
             model_error: str | None, offsets: Any, settings: dict[str, Any]) -> ReadService:
    replica = replica_factory(20)
    with replica.lock:
        replica.apply("summaries.v1", 0, 0, {
            "tenant": "acme", "summary_id": "sum-1", "event_id": "x", "event_time": 5,
            "session_id": "s1", "window_start": 0, "window_end": 10,
            "text": "the session was about keys", "key_terms": [], "event_ids": ["e1", "e4"],
        })
    feed = FakeFeed(replica)
    config = load_settings(**settings)
    return ReadService(
        config, replica, feed, ConsistencyGate(config, feed, offsets),  # type: ignore[arg-type]
        embedder,
        TokenTable.parse("tok-acme=acme,tok-globex=globex"), ServiceMetrics(),
        FakeCommands(replica, memory_factory), model_error,  # type: ignore[arg-type]
    )


ACME = {"Authorization": "Bearer tok-acme"}
GLOBEX = {"Authorization": "Bearer tok-globex"}
