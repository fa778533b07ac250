"""Cosine nearest-neighbour indexes over memory vectors, per tenant: the one index of memstream.

memorize (near duplicates, through ``MemoryIndex``/``TenantIndexes``: memory ids, one model)
and the read service (recall, through ``streams.service.memories``: rows aligned with its
filter columns) both search ``TenantVectors``.

``TenantVectors`` is one tenant's vectors: exact search below a size threshold, HNSW above it.
Rows are append-only: a memory's vector keeps its row, a deleted memory's row is marked
dead (filtered out of every search) and zeroed. Exact search is a matrix-vector product over
the live rows. Once a tenant holds ``exact_max`` rows an HNSW graph (inner product on
unit vectors = cosine) is built over them; rows added later are searched exactly as a
"tail" until ``sync`` adds them to the graph in one batch, so a single write never pays
for an HNSW insert. Filters and deletions go to faiss as an ``IDSelectorBitmap``; a filter
that leaves few rows is answered exactly over those rows instead (a selective filter is
where HNSW loses recall).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from streams.models.exceptions import ModelMismatchError

# Below this many allowed rows a filtered search is exact over just those rows.
_EXACT_SUBSET_MAX = 4096
# Tail rows (not yet in the graph) searched exactly before ``sync`` adds them; small, so
# an add (under the replica's lock) stalls queries for ~0.1 s at most.
_TAIL_MAX = 256


@dataclass(frozen=True)
class IndexPolicy:
    """How a tenant's index is built: exact up to ``exact_max`` rows, HNSW above."""

    exact_max: int = 20_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128


# Exact at any size: memorize's near-duplicate decisions must not depend on a graph's recall.
EXACT = IndexPolicy(exact_max=sys.maxsize)


class TenantVectors:
    """Unit-norm float32 rows of one dimension, searchable by cosine similarity."""

    def __init__(self, dimension: int, policy: IndexPolicy) -> None:
        self.dimension = dimension
        self.policy = policy
        self.matrix = np.zeros((0, dimension), dtype=np.float32)
        self.alive = np.zeros(0, dtype=bool)
        self.rows = 0
        self._normalized = 0  # rows below this are unit-norm
        self.ann: faiss.IndexHNSWFlat | None = None

    @property
    def kind(self) -> str:
        """``exact`` or ``hnsw``."""
        return "hnsw" if self.ann is not None else "exact"

    @property
    def ann_rows(self) -> int:
        """Rows covered by the HNSW graph (0 without one)."""
        return 0 if self.ann is None else int(self.ann.ntotal)

    def append(self, vector: np.ndarray) -> int:
        """Append one row (normalized in bulk later, before any search); return its number."""
        row = self.rows
        if row >= self.matrix.shape[0]:
            self._reserve(row + 1)
        self.matrix[row] = vector
        self.alive[row] = True
        self.rows = row + 1
        return row

    def append_block(self, block: np.ndarray) -> None:
        """Append rows (n × dimension) in one copy."""
        start, n = self.rows, block.shape[0]
        if start + n > self.matrix.shape[0]:
            self._reserve(start + n)
        self.matrix[start : start + n] = block
        self.alive[start : start + n] = True
        self.rows = start + n

    def _reserve(self, rows: int) -> None:
        capacity = max(rows, 2 * self.matrix.shape[0], 1024)
        grown = np.zeros((capacity, self.dimension), dtype=np.float32)
        grown[: self.rows] = self.matrix[: self.rows]
        alive = np.zeros(capacity, dtype=bool)
        alive[: self.rows] = self.alive[: self.rows]
        self.matrix, self.alive = grown, alive

    def mark_normalized(self) -> None:
        """Declare every row unit-norm already (loaded from a snapshot)."""
        self._normalized = self.rows

    def normalize(self) -> None:
        """Make the rows appended since the last call unit-norm (one faiss call)."""
        if self._normalized < self.rows:
            faiss.normalize_L2(self.matrix[self._normalized : self.rows])
            self._normalized = self.rows

    def kill(self, row: int) -> None:
        """Mark a row dead: it is never returned again, and its vector is zeroed here and
        in the graph's copy, so no snapshot keeps a deleted memory's vector."""
        self.alive[row] = False
        self.matrix[row] = 0.0
        if self.ann is not None and row < self.ann.ntotal:
            # faiss's stubs type the storage as a plain Index; it is an IndexFlat.
            storage: Any = faiss.downcast_index(self.ann.storage)
            stored = faiss.rev_swig_ptr(storage.get_xb(), self.ann.ntotal * self.dimension)
            stored[row * self.dimension : (row + 1) * self.dimension] = 0.0

    def sync(self, *, build: bool = True) -> None:
        """Add a long tail to the graph; with ``build``, also build the graph once past
        ``exact_max`` rows (the feed builds it outside the lock instead: ``build_graph``)."""
        self.normalize()
        if self.ann is None:
            if build:
                graph = self.build_graph()
                if graph is not None:
                    self.ann = graph
        elif self.rows - self.ann.ntotal >= _TAIL_MAX:
            self.ann.add(self.matrix[self.ann.ntotal : self.rows])

    def build_graph(self) -> faiss.IndexHNSWFlat | None:
        """A graph over the current rows if one is due, else None; it reads only rows the
        single writer has finished (normalized), so it may run without the lock while
        readers search exactly, and is attached (``ann = graph``) under the lock."""
        if self.ann is not None or int(self.alive[: self.rows].sum()) < self.policy.exact_max:
            return None
        self.normalize()
        graph = self._new_graph()
        graph.add(self.matrix[: self.rows])
        return graph

    def flush(self) -> None:
        """Add every tail row to the graph (before a snapshot)."""
        self.normalize()
        if self.ann is not None and self.ann.ntotal < self.rows:
            self.ann.add(self.matrix[self.ann.ntotal : self.rows])

    def _new_graph(self) -> faiss.IndexHNSWFlat:
        graph = faiss.IndexHNSWFlat(self.dimension, self.policy.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.policy.hnsw_ef_construction
        graph.hnsw.efSearch = self.policy.hnsw_ef_search
        return graph

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Return up to ``k`` (row, cosine) pairs among live (and ``allowed``) rows, best first."""
        if k <= 0 or self.rows == 0:
            return []
        self.normalize()
        q = np.array(query, dtype=np.float32, copy=True).reshape(1, -1)
        norm = float(np.linalg.norm(q))
        if norm > 0:  # numpy, not faiss: no OpenMP region on the query path
            q /= norm
        mask = self.alive[: self.rows]
        if allowed is not None:
            mask = mask & allowed[: self.rows]
        selected = int(mask.sum())
        if selected == 0:
            return []
        if self.ann is None or selected <= _EXACT_SUBSET_MAX:
            return _exact(self.matrix, np.flatnonzero(mask), q[0], k)
        covered = self.ann_rows
        found = self._graph_search(q, k, mask[:covered], full=bool(mask[:covered].all()))
        tail = np.flatnonzero(mask[covered:]) + covered
        if tail.size:
            found = sorted(found + _exact(self.matrix, tail, q[0], k), key=lambda h: -h[1])[:k]
        return found

    def _graph_search(
        self, q: np.ndarray, k: int, mask: np.ndarray, *, full: bool
    ) -> list[tuple[int, float]]:
        assert self.ann is not None
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in the stubs
        params.efSearch = max(self.policy.hnsw_ef_search, k)
        if not full:
            bits = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(mask.shape[0], faiss.swig_ptr(bits))
            params.sel = selector
        scores, ids = self.ann.search(q, k, params=params)
        return [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]


def _exact(matrix: np.ndarray, rows: np.ndarray, q: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Exact top-``k`` of ``rows`` by inner product with ``q``."""
    first, span = int(rows[0]), int(rows[-1]) - int(rows[0]) + 1
    if span == rows.size:  # one contiguous run: no gather copy
        scores = matrix[first : first + span] @ q
    elif 2 * rows.size >= span:
        # Mostly live rows (a few deleted): scoring the whole span is cheaper than gathering
        # a copy of the live rows (a 15 MB copy per query at 10k rows).
        scores = (matrix[first : first + span] @ q)[rows - first]
    else:
        scores = matrix[rows] @ q
    k = min(k, rows.size)
    top = np.argpartition(-scores, k - 1)[:k] if k < rows.size else np.arange(rows.size)
    return [(int(rows[i]), float(scores[i])) for i in top[np.argsort(-scores[top], kind="stable")]]


class MemoryIndex:
    """One tenant's memory vectors of one model, by memory id (memorize's near-duplicate index).

    A re-added id moves to a new row (its old row dies); dead rows are dropped when the
    index is rebuilt (memorize rebuilds it on every assignment)."""

    def __init__(self, model_id: str, dimension: int, *, tenant: str | None = None,
                 policy: IndexPolicy = EXACT) -> None:
        if dimension < 1:
            raise ValueError(f"dimension must be >= 1, got {dimension}")
        self.model_id = model_id
        self.dimension = dimension
        self.tenant = tenant
        self.vectors = TenantVectors(dimension, policy)
        self._row_of: dict[str, int] = {}
        self._id_of_row: list[str] = []

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self._row_of

    def add(self, memory_id: str, vector: np.ndarray, *, model_id: str) -> None:
        """Add or replace one memory's vector; a vector of another model is refused."""
        self.add_many([memory_id], np.asarray(vector).reshape(1, -1), model_id)

    def add_many(self, ids: Sequence[str], matrix: np.ndarray, model_id: str) -> None:
        """Add or replace many vectors at once (rebuilds); the last row wins for a repeated id."""
        if model_id != self.model_id:
            raise ModelMismatchError(
                f"index of tenant {self.tenant!r} holds model {self.model_id!r}, "
                f"refusing a vector of model {model_id!r}")
        rows = np.asarray(matrix, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dimension:
            raise ModelMismatchError(
                f"index of tenant {self.tenant!r} (model {self.model_id!r}) expects dimension "
                f"{self.dimension}, got vectors of shape {rows.shape}")
        if rows.shape[0] != len(ids):
            raise ValueError(f"add_many got {len(ids)} ids for {rows.shape[0]} vectors")
        last_row = {memory_id: row for row, memory_id in enumerate(ids)}
        if not last_row:
            return
        for memory_id in last_row:
            self.remove(memory_id)
        start = self.vectors.rows
        self.vectors.append_block(rows[np.fromiter(last_row.values(), dtype=np.int64)])
        for row, memory_id in enumerate(last_row, start):
            self._row_of[memory_id] = row
        self._id_of_row.extend(last_row)
        self.vectors.sync()

    def remove(self, memory_id: str) -> bool:
        """Remove a memory's vector; return whether it was present."""
        row = self._row_of.pop(memory_id, None)
        if row is None:
            return False
        self.vectors.kill(row)
        return True

    def nearest(self, vector: np.ndarray, k: int = 1) -> list[tuple[str, float]]:
        """Return up to ``k`` (memory id, cosine similarity) pairs, most similar first."""
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.dimension:
            raise ModelMismatchError(
                f"index of tenant {self.tenant!r} (model {self.model_id!r}) expects dimension "
                f"{self.dimension}, got a query of shape {np.shape(vector)}")
        return [(self._id_of_row[row], score) for row, score in self.vectors.search(query, k)]


class TenantIndexes:
    """One ``MemoryIndex`` per tenant, created on first add, all of one model and dimension."""

    def __init__(self, model_id: str, dimension: int, policy: IndexPolicy = EXACT) -> None:
        self.model_id = model_id
        self.dimension = dimension
        self.policy = policy
        self._indexes: dict[str, MemoryIndex] = {}

    def __len__(self) -> int:
        return sum(len(index) for index in self._indexes.values())

    def get(self, tenant: str) -> MemoryIndex | None:
        """Return the tenant's index, or None if it has never had a memory."""
        return self._indexes.get(tenant)

    def add(self, tenant: str, memory_id: str, vector: np.ndarray, model_id: str) -> None:
        """Add or replace a memory's vector in its tenant's index."""
        self.add_many(tenant, [memory_id], np.asarray(vector).reshape(1, -1), model_id)

    def add_many(
        self, tenant: str, ids: Sequence[str], matrix: np.ndarray, model_id: str
    ) -> None:
        """Add or replace many of a tenant's vectors at once (rebuilds)."""
        index = self._indexes.get(tenant)
        if index is None:
            index = MemoryIndex(self.model_id, self.dimension, tenant=tenant, policy=self.policy)
            # Kept only once the first add succeeds, so a refused vector leaves no trace.
            index.add_many(ids, matrix, model_id)
            self._indexes[tenant] = index
            return
        index.add_many(ids, matrix, model_id)

    def remove(self, tenant: str, memory_id: str) -> bool:
        """Remove a memory's vector from its tenant's index; return whether it was present."""
        index = self._indexes.get(tenant)
        return index.remove(memory_id) if index is not None else False

    def nearest(self, tenant: str, vector: np.ndarray, k: int = 1) -> list[tuple[str, float]]:
        """Return the tenant's ``k`` most similar memories; never another tenant's."""
        index = self._indexes.get(tenant)
        return index.nearest(vector, k) if index is not None else []

    def clear(self) -> None:
        """Drop every tenant's index (before a rebuild from the log)."""
        self._indexes.clear()
