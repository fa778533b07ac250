"""memorize's near-duplicate index: ``TenantVectors`` by memory id, one model, per tenant."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streams.models.exceptions import ModelMismatchError
from streams.models.index import EXACT, IndexPolicy, TenantVectors

# A memory index copies its live rows into a fresh one past this many dead rows (and more
# dead than live).
_COMPACT_MIN = 1024


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
        self._id_of_row = [memory_id for memory_id, _ in live]
        self._row_of = {memory_id: row for row, memory_id in enumerate(self._id_of_row)}

    def nearest(self, vector: np.ndarray, k: int = 1) -> list[tuple[str, float]]:
        """Return up to ``k`` (memory id, cosine similarity) pairs, most similar first."""
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.dimension:
            raise ModelMismatchError(
                f"index of tenant {self.tenant!r} (model {self.model_id!r}) expects dimension "
                f"{self.dimension}, got a query of shape {np.shape(vector)}")
        found = [(self._id_of_row[row], score) for row, score in self.vectors.search(query, k)]
        # Equal scores in id order: row order depends on history (a rebuild lays rows out in
        # key order), and a replay must choose the same neighbour.
        found.sort(key=lambda hit: (-hit[1], hit[0]))
        return found


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
