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


def _brute_force(live: dict[str, np.ndarray], query: np.ndarray, k: int
                 ) -> list[tuple[str, float]]:
    q = query.astype(np.float64) / np.linalg.norm(query.astype(np.float64))
    scored = []
    for memory_id, vector in live.items():
        v = vector.astype(np.float64) / np.linalg.norm(vector.astype(np.float64))
        scored.append((memory_id, float(v @ q)))
    return sorted(scored, key=lambda hit: (-hit[1], hit[0]))[:k]


@pytest.mark.parametrize("scores_cap", [16_000_000, 150])  # 150: two queries per product
@pytest.mark.parametrize("seed", range(6))
def test_prefetched_answers_equal_a_search_now_through_adds_removes_and_compaction(
    monkeypatch: pytest.MonkeyPatch, seed: int, scores_cap: int
) -> None:
    """memorize prefetches a batch's candidates, then adds, supersedes and deletes
    memories between the answers: each answer must be what a search at that moment gives
    (compared with a float64 brute force), including after a compaction renumbered rows
    and after more candidates died than the prefetch kept."""
    import streams.models.memory_index as memory_index

    monkeypatch.setattr(memory_index, "_COMPACT_MIN", 8)
    monkeypatch.setattr(memory_index, "_PREFETCH_SCORES", scores_cap)
    rng = np.random.default_rng(seed)
    dim, k = 16, 3
    index = MemoryIndex("m", dim, tenant="t")
    live: dict[str, np.ndarray] = {}
    base = rng.standard_normal((60, dim)).astype(np.float32)
    for i, vector in enumerate(base):
        index.add(f"m{i:03d}", vector, model_id="m")
        live[f"m{i:03d}"] = vector
    # Queries close to existing memories, so their candidates are the ones that die.
    queries = {f"q{j}": base[j] + 0.05 * rng.standard_normal(dim).astype(np.float32)
               for j in range(30)}
    for i in range(0, 60, 4):  # dead rows before the prefetch too, some of them nearest
        index.remove(f"m{i:03d}")
        del live[f"m{i:03d}"]
    index.prefetch(queries, k)
    fresh = 0
    for j, (key, query) in enumerate(queries.items()):
        for _ in range(int(rng.integers(0, 4))):
            victim = sorted(live)[int(rng.integers(0, len(live)))]
            if rng.random() < 0.5:  # supersede: the old one leaves, a new one comes
                index.remove(victim)
                del live[victim]
            vector = (live.get(victim, query) + 0.01 * rng.standard_normal(dim)).astype(
                np.float32)
            memory_id = victim if victim in live else f"n{fresh:03d}"
            fresh += 1
            index.add(memory_id, vector, model_id="m")
            live[memory_id] = vector
        if j % 7 == 3:  # a delete right at the query's own nearest memories
            for memory_id, _ in _brute_force(live, query, 2):
                index.remove(memory_id)
                del live[memory_id]
        got = index.nearest(query, k, key=key)
        want = _brute_force(live, query, k)
        assert [m for m, _ in got] == [m for m, _ in want], (j, got, want)
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-6)
        assert got == index.nearest(query, k)  # the same scores whichever way selected


def test_prefetch_of_tenants_stays_within_each_tenant() -> None:
    indexes = TenantIndexes("m", 4)
    indexes.add("a", "a1", np.array([1, 0, 0, 0], dtype=np.float32), "m")
    indexes.add("b", "b1", np.array([1, 0, 0, 0], dtype=np.float32), "m")
    query = np.array([1, 0.1, 0, 0], dtype=np.float32)
    indexes.prefetch({("a", "h1"): query, ("c", "h2"): query}, k=3)
    assert [m for m, _ in indexes.nearest("a", query, 3, key="h1")] == ["a1"]
    assert [m for m, _ in indexes.nearest("b", query, 3, key="h1")] == ["b1"]
    assert indexes.nearest("c", query, 3, key="h2") == []


def test_prefetched_query_whose_candidates_all_died_searches_again() -> None:
    """Ten memories near the query and ten opposite: the prefetch keeps the ten near ones
    (and one more); all ten are deleted before the answer, which must then come from the
    opposite ones (a search now), never from the deleted rows."""
    rng = np.random.default_rng(5)
    axis = np.zeros(8, dtype=np.float32)
    axis[0] = 1.0
    index = MemoryIndex("m", 8)
    live: dict[str, np.ndarray] = {}
    for i in range(20):
        sign = 1.0 if i < 10 else -1.0
        vector = (sign * axis + 0.1 * rng.standard_normal(8)).astype(np.float32)
        index.add(f"m{i:02d}", vector, model_id="m")
        live[f"m{i:02d}"] = vector
    index.prefetch({"q": axis}, 3)
    for i in range(10):
        index.remove(f"m{i:02d}")
        del live[f"m{i:02d}"]
    got = index.nearest(axis, 3, key="q")
    assert [m for m, _ in got] == [m for m, _ in _brute_force(live, axis, 3)]
    assert all(score < 0 for _, score in got)
