"""Fixtures for the read service's unit tests: records and replicas without a broker."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agents.models.embedder import vector_to_bytes
from streams.service.replica import Replica
from streams.service.vectors import IndexPolicy

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
