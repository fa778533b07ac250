"""Memory indexes: nearest, replace, remove, one model per index, tenant isolation, exactness."""

from __future__ import annotations

import numpy as np
import pytest

from streams.models.exceptions import ModelMismatchError
from streams.models.index import IndexPolicy, TenantVectors
from streams.models.memory_index import MemoryIndex, TenantIndexes

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 8


def unit(seed: int) -> np.ndarray:
    """Return a deterministic random unit vector."""
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def index_factory():  # type: ignore[no-untyped-def]
    """Build a MemoryIndex holding memories m0..m{n-1} with vectors unit(0)..unit(n-1)."""

    def make(n: int = 5) -> MemoryIndex:
        index = MemoryIndex(MODEL, DIM, tenant="t1")
        index.add_many([f"m{i}" for i in range(n)], np.stack([unit(i) for i in range(n)]), MODEL)
        return index

    return make


def test_nearest_finds_a_memory_itself_with_similarity_one(index_factory) -> None:  # type: ignore[no-untyped-def]
    index = index_factory()
    assert len(index) == 5
    for i in range(5):
        (memory_id, similarity), *_ = index.nearest(unit(i), k=1)
        assert memory_id == f"m{i}"
        assert similarity == pytest.approx(1.0, abs=1e-5)


def test_nearest_orders_by_similarity_and_caps_k_at_size(index_factory) -> None:  # type: ignore[no-untyped-def]
    index = index_factory(3)
    hits = index.nearest(unit(1), k=10)
    assert len(hits) == 3
    assert hits[0][0] == "m1"
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert MemoryIndex(MODEL, DIM).nearest(unit(0), k=3) == []


def test_similarity_is_cosine_even_for_unnormalized_vectors() -> None:
    index = MemoryIndex(MODEL, DIM)
    index.add("m", 3.0 * unit(0), model_id=MODEL)
    [(_, similarity)] = index.nearest(0.5 * unit(0))
    assert similarity == pytest.approx(1.0, abs=1e-5)


def test_remove_drops_the_memory(index_factory) -> None:  # type: ignore[no-untyped-def]
    index = index_factory()
    assert index.remove("m2") is True
    assert index.remove("m2") is False
    assert len(index) == 4
    assert "m2" not in index
    assert all(memory_id != "m2" for memory_id, _ in index.nearest(unit(2), k=5))


def test_re_adding_an_id_replaces_its_vector(index_factory) -> None:  # type: ignore[no-untyped-def]
    index = index_factory()
    index.add("m0", unit(100), model_id=MODEL)
    assert len(index) == 5
    assert index.nearest(unit(100), k=1)[0] == ("m0", pytest.approx(1.0, abs=1e-5))
    # The old vector is gone: nothing matches unit(0) exactly any more.
    assert index.nearest(unit(0), k=1)[0][1] < 0.99


def test_add_many_keeps_the_last_vector_of_a_repeated_id() -> None:
    index = MemoryIndex(MODEL, DIM)
    index.add_many(["a", "b", "a"], np.stack([unit(0), unit(1), unit(2)]), MODEL)
    assert len(index) == 2
    assert index.nearest(unit(2), k=1)[0][0] == "a"


def test_mixing_model_ids_or_dimensions_is_refused(index_factory) -> None:  # type: ignore[no-untyped-def]
    index = index_factory()
    with pytest.raises(ModelMismatchError, match="other/model") as raised:
        index.add("x", unit(9), model_id="other/model")
    assert not raised.value.retriable
    with pytest.raises(ModelMismatchError, match="dimension 8"):
        index.add("x", np.ones(16, dtype=np.float32), model_id=MODEL)
    with pytest.raises(ModelMismatchError):
        index.nearest(np.ones(16, dtype=np.float32))
    assert len(index) == 5


def test_tenants_are_isolated() -> None:
    indexes = TenantIndexes(MODEL, DIM)
    indexes.add("alice", "a1", unit(0), MODEL)
    indexes.add("bob", "b1", unit(0), MODEL)
    assert indexes.nearest("alice", unit(0), k=5) == [("a1", pytest.approx(1.0, abs=1e-5))]
    assert indexes.nearest("bob", unit(0), k=5) == [("b1", pytest.approx(1.0, abs=1e-5))]
    assert indexes.nearest("carol", unit(0), k=5) == []
    assert indexes.remove("alice", "b1") is False
    assert indexes.remove("alice", "a1") is True
    assert indexes.nearest("alice", unit(0)) == []
    assert len(indexes) == 1
    indexes.clear()
    assert indexes.nearest("bob", unit(0)) == []


def test_equal_similarities_come_in_memory_id_order_whatever_the_insertion_order() -> None:
    # A replay rebuilds rows in store-key order; live processing adds them as they come.
    # Memorize merges into the first candidate, so ties must not depend on row order.
    for order in (["m-c", "m-a", "m-b"], ["m-b", "m-c", "m-a"]):
        indexes = TenantIndexes(MODEL, DIM)
        for mid in order:
            indexes.add("acme", mid, unit(0), MODEL)
        assert [mid for mid, _ in indexes.nearest("acme", unit(0), k=3)] == ["m-a", "m-b", "m-c"]


def test_refused_vector_creates_no_tenant_index() -> None:
    indexes = TenantIndexes(MODEL, DIM)
    with pytest.raises(ModelMismatchError):
        indexes.add("alice", "a1", unit(0), "other/model")
    assert indexes.get("alice") is None


def brute_force(matrix: np.ndarray, live: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    """The ``k`` best live rows by cosine, ties by row."""
    scores = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)) @ query
    order = sorted(np.flatnonzero(live), key=lambda r: (-scores[r], r))
    return [int(r) for r in order[:k]]


@pytest.mark.parametrize("dead_every", [0, 3, 2, 1])
def test_exact_search_matches_brute_force_with_deleted_rows(dead_every: int) -> None:
    # 0: no deletions (one contiguous run); 3: mostly live (scored over the span);
    # 2, 1: half or all but one dead (scored over the gathered rows).
    n = 300
    matrix = np.stack([unit(i) for i in range(n)])
    vectors = TenantVectors(DIM, IndexPolicy())
    vectors.append_block(matrix)
    live = np.ones(n, dtype=bool)
    for row in range(n) if dead_every else ():
        if row % dead_every == 0 or dead_every == 1 and row != 7:
            vectors.kill(row)
            live[row] = False
    for seed in range(1000, 1020):
        query = unit(seed)
        assert [r for r, _ in vectors.search(query, 10)] == brute_force(matrix, live, query, 10)


def test_memorize_index_stays_exact_past_the_read_service_graph_size() -> None:
    # memorize's near-duplicate decision must not depend on an approximate graph's recall.
    n = IndexPolicy().exact_max + 10
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((n, DIM)).astype(np.float32)
    index = MemoryIndex(MODEL, DIM)
    index.add_many([f"m{i}" for i in range(n)], matrix, MODEL)
    assert index.vectors.kind == "exact"
    query = unit(77)
    expected = brute_force(matrix, np.ones(n, dtype=bool), query, 3)
    assert [m for m, _ in index.nearest(query, k=3)] == [f"m{r}" for r in expected]


def test_replacing_and_removing_memories_does_not_grow_the_index_for_ever() -> None:
    index = MemoryIndex(MODEL, DIM)
    for round_ in range(6):
        index.add_many([f"m{i}" for i in range(500)],
                       np.stack([unit(round_ * 1000 + i) for i in range(500)]), MODEL)
    for i in range(0, 500, 2):
        index.remove(f"m{i}")
    assert len(index) == 250
    assert index.vectors.rows <= 250 + 1024 + 500  # compacted, not 3,000 rows
    for i in (1, 251, 499):
        assert index.nearest(unit(5000 + i), k=1) == [(f"m{i}", pytest.approx(1.0, abs=1e-5))]
    assert all(m != "m2" for m, _ in index.nearest(unit(5002), k=250))
