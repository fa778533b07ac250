"""Cosine nearest-neighbour indexes over memory vectors, per tenant: the one index of memstream.

memorize (near duplicates, through ``streams.models.memory_index``: memory ids, one model)
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
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

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
        # faiss parallelizes over queries: for one query, OpenMP's other threads only wake and
        # spin, next to the embedding's threads. Per calling thread (the feed's graph builds,
        # in their own thread, keep every core).
        faiss.omp_set_num_threads(1)
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
