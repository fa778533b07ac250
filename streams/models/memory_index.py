"""memorize's near-duplicate index: ``TenantVectors`` by memory id, one model, per tenant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streams.models.exceptions import ModelMismatchError
from streams.models.index import EXACT, IndexPolicy, TenantVectors

# A memory index copies its live rows into a fresh one past this many dead rows (and more
# dead than live).
_COMPACT_MIN = 1024
# A prefetch keeps this many candidates beyond the k asked for: rows that die before the
# query is answered, and rounding between the batched product and the final scores.
_PREFETCH_MARGIN = 8
# Queries per matrix product in a prefetch, at most; fewer for a tenant with so many rows
# that its scores (rows × queries, float32) would pass _PREFETCH_SCORES (64 MB).
_PREFETCH_CHUNK = 64
_PREFETCH_SCORES = 16_000_000


@dataclass(frozen=True)
class _Prefetched:
    """One query's candidates among the rows of its index when the batch began."""

    generation: int  # the index's layout (a compaction renumbers rows)
    start: int  # rows then; rows from here on were added since
    rows: np.ndarray  # candidate rows, ascending
    complete: bool  # every row alive then is a candidate
    width: int  # how many were selected (before dead rows were dropped)


class MemoryIndex:
    """One tenant's memory vectors of one model, by memory id (memorize's near-duplicate index).

    A re-added id moves to a new row (its old row dies); once dead rows outnumber live ones
    (and ``_COMPACT_MIN``), the live rows are copied into a fresh index."""

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
        self._generation = 0
        self._prefetched: dict[str, _Prefetched] = {}

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
        dead = self.vectors.rows - len(self._row_of)
        if dead > max(_COMPACT_MIN, len(self._row_of)):
            self._compact()
        return True

    def _compact(self) -> None:
        """Keep only the live rows (in their order), so deletions never grow the index."""
        self.vectors.normalize()
        live = sorted(self._row_of.items(), key=lambda item: item[1])
        compact = TenantVectors(self.dimension, self.vectors.policy)
        rows = np.fromiter((row for _, row in live), dtype=np.int64, count=len(live))
        compact.append_block(self.vectors.matrix[rows])
        compact.mark_normalized()
        compact.sync()
        self.vectors = compact
        self._generation += 1
        self._id_of_row = [memory_id for memory_id, _ in live]
        self._row_of = {memory_id: row for row, memory_id in enumerate(self._id_of_row)}

    def nearest(self, vector: np.ndarray, k: int = 1, *, key: str | None = None
                ) -> list[tuple[str, float]]:
        """Return up to ``k`` (memory id, cosine similarity) pairs, most similar first.

        With the ``key`` of a ``prefetch``, the candidates selected then are completed with
        the rows added since (unless too many of them died, or the index was compacted):
        the same answer as a search now, without a pass over every vector.
        """
        query = self._unit(vector)
        rows = self._prefetched_rows(key, k)
        if rows is None:
            found = self.vectors.search(query, k + _PREFETCH_MARGIN)
            rows = np.sort(np.fromiter((row for row, _ in found), dtype=np.int64))
        return self._ranked(rows, query, k)

    def prefetch(self, queries: Mapping[str, np.ndarray], k: int) -> None:
        """Select the candidates of many queries in one matrix product per chunk (one pass
        over the vectors for a whole batch instead of one per query); ``nearest(key=)``
        answers them later. Replaces the previous prefetch."""
        self._prefetched.clear()
        n = self.vectors.rows
        if n == 0 or not queries:
            return
        self.vectors.normalize()
        alive = self.vectors.alive[:n]
        live = int(alive.sum())
        width = min(k + _PREFETCH_MARGIN, n)
        dead = ~alive
        keys = list(queries)
        step = max(1, min(_PREFETCH_CHUNK, _PREFETCH_SCORES // n))
        for begin in range(0, len(keys), step):
            chunk = keys[begin : begin + step]
            block = np.vstack([self._unit(queries[key]) for key in chunk])
            scores = block @ self.vectors.matrix[:n].T  # queries × rows
            scores[:, dead] = -np.inf
            top = (np.argpartition(scores, n - width, axis=1)[:, n - width :] if width < n
                   else np.broadcast_to(np.arange(n), (len(chunk), n)))
            for line, key in enumerate(chunk):
                rows = top[line]
                self._prefetched[key] = _Prefetched(
                    self._generation, n, np.sort(rows[alive[rows]]), live <= width, width)

    def _prefetched_rows(self, key: str | None, k: int) -> np.ndarray | None:
        """The candidate rows of a prefetched query now, or None to search them all."""
        hit = self._prefetched.get(key) if key is not None else None
        if hit is None or hit.generation != self._generation:
            return None
        alive = self.vectors.alive
        old = hit.rows[alive[hit.rows]]
        # Rows outside the prefetch rank below every row in it, so the rows still alive
        # are the best of the old rows as long as enough are left beyond k.
        if not hit.complete and hit.width - (hit.rows.size - old.size) < k + _PREFETCH_MARGIN // 2:
            return None
        added = np.arange(hit.start, self.vectors.rows)
        return np.concatenate([old, added[alive[added]]])

    def _ranked(self, rows: np.ndarray, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The best ``k`` of ``rows``, scored in float64 and rounded to float32: the same
        score for a row whichever way it was selected (the products that select candidates
        may differ in the last bits by their shape)."""
        if k <= 0 or rows.size == 0:
            return []
        exact = self.vectors.matrix[rows].astype(np.float64) @ query.astype(np.float64)
        scores = exact.astype(np.float32)
        if rows.size > k:  # the k best, and any row tied with the k-th
            keep = scores >= np.partition(scores, rows.size - k)[rows.size - k]
            rows, scores = rows[keep], scores[keep]
        # Equal scores in id order: row order depends on history (a rebuild lays rows out in
        # key order), and a replay must choose the same neighbour.
        found = sorted(((self._id_of_row[int(row)], float(score))
                        for row, score in zip(rows, scores, strict=True)),
                       key=lambda hit: (-hit[1], hit[0]))
        return found[:k]

    def _unit(self, vector: np.ndarray) -> np.ndarray:
        query = np.array(vector, dtype=np.float32, copy=True).reshape(-1)
        if query.shape[0] != self.dimension:
            raise ModelMismatchError(
                f"index of tenant {self.tenant!r} (model {self.model_id!r}) expects dimension "
                f"{self.dimension}, got a query of shape {np.shape(vector)}")
        norm = float(np.linalg.norm(query))
        if norm > 0:
            query /= norm
        return query


class TenantIndexes:
    """One ``MemoryIndex`` per tenant, created on first add, all of one model and dimension."""

    def __init__(self, model_id: str, dimension: int, policy: IndexPolicy = EXACT) -> None:
        self.model_id = model_id
        self.dimension = dimension
        self.policy = policy
        self._indexes: dict[str, MemoryIndex] = {}
        self._prefetched: set[str] = set()  # tenants the last prefetch selected for

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

    def nearest(self, tenant: str, vector: np.ndarray, k: int = 1, *,
                key: str | None = None) -> list[tuple[str, float]]:
        """Return the tenant's ``k`` most similar memories; never another tenant's (``key``:
        a query of the last ``prefetch``)."""
        index = self._indexes.get(tenant)
        return index.nearest(vector, k, key=key) if index is not None else []

    def prefetch(self, queries: Mapping[tuple[str, str], np.ndarray], k: int) -> None:
        """Select candidates for many (tenant, key) queries at once, one matrix product per
        tenant (``MemoryIndex.prefetch``); ``nearest(tenant, vector, k, key=key)`` answers
        each. A tenant without an index yet has nothing to select."""
        by_tenant: dict[str, dict[str, np.ndarray]] = {}
        for (tenant, key), vector in queries.items():
            by_tenant.setdefault(tenant, {})[key] = vector
        # Only the tenants of this batch and of the last one: never a pass over every tenant.
        for tenant in self._prefetched | by_tenant.keys():
            index = self._indexes.get(tenant)
            if index is not None:
                index.prefetch(by_tenant.get(tenant, {}), k)
        self._prefetched = set(by_tenant)

    def clear(self) -> None:
        """Drop every tenant's index (before a rebuild from the log)."""
        self._indexes.clear()
        self._prefetched.clear()
