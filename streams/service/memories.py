"""One tenant's materialized memories: metadata, filter columns and vectors, row-aligned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.models.index import IndexPolicy, TenantVectors


@dataclass(frozen=True)
class RecallFilters:
    """Optional restrictions of a recall; ``None`` means no restriction."""

    session_id: str | None = None
    kinds: tuple[str, ...] | None = None
    time_from_ms: int | None = None
    time_to_ms: int | None = None
    min_value: float | None = None

    @property
    def empty(self) -> bool:
        """Whether nothing is restricted."""
        return self == RecallFilters()


# How far back a memory's chain of superseded values is followed at most.
MAX_HISTORY = 50


class TenantMemories:
    """A tenant's live memories by id, with the columns recall filters on, and the memories
    whose value was superseded (``history``: metadata only, never searched)."""

    def __init__(self, tenant: str, dimension: int, policy: IndexPolicy) -> None:
        self.tenant = tenant
        self.vectors = TenantVectors(dimension, policy)
        self.meta: dict[str, dict[str, Any]] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.row_of: dict[str, int] = {}
        self.id_of_row: list[str] = []
        self.codes: dict[str, int] = {}
        self.session_col = np.zeros(0, dtype=np.int32)
        self.kind_col = np.zeros(0, dtype=np.int32)
        self.time_col = np.zeros(0, dtype=np.int64)
        self.value_col = np.zeros(0, dtype=np.float64)
        # New memories whose rows are reserved but not yet written (see ``settle``).
        self._pending: list[tuple[bytes, dict[str, Any]]] = []

    def __len__(self) -> int:
        return len(self.meta)

    def upsert(self, record: dict[str, Any], embedding: bytes) -> None:
        """Insert or update a memory; its vector keeps its row unless the vector changed.

        ``record`` is kept as the memory's metadata (the caller hands it over, without
        its embedding); ``embedding`` is the vector as little-endian float32 bytes. A new memory's
        row is reserved at once and written with the next ones in one block (``settle``),
        so a rebuild pays one numpy copy per batch, not one per memory."""
        memory_id = record["memory_id"]
        self.history.pop(memory_id, None)
        row = self.row_of.get(memory_id)
        if row is None:
            self.row_of[memory_id] = self.vectors.rows + len(self._pending)
            self.id_of_row.append(memory_id)
            self._pending.append((embedding, record))
            self.meta[memory_id] = record
            return
        self.settle()
        vector = np.frombuffer(embedding, dtype="<f4")
        if not _same_direction(self.vectors.matrix[row], vector):
            self.vectors.kill(row)
            row = self.vectors.append(vector)
            self.row_of[memory_id] = row
            self.id_of_row.append(memory_id)
            self._grow(self.vectors.rows)
        self.meta[memory_id] = record
        self.session_col[row] = self._code(record["session_id"])
        self.kind_col[row] = self._code(record["kind"])
        self.time_col[row] = int(record["event_time"])
        value = record.get("value")
        self.value_col[row] = np.nan if value is None else float(value)

    def settle(self) -> None:
        """Write the rows of the memories inserted since the last call, in one block."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        start, n = self.vectors.rows, len(pending)
        block = np.frombuffer(b"".join([e for e, _ in pending]), dtype="<f4")
        self.vectors.append_block(block.reshape(n, self.vectors.dimension))
        self._grow(start + n)
        end, code = start + n, self._code
        self.session_col[start:end] = [code(r["session_id"]) for _, r in pending]
        self.kind_col[start:end] = [code(r["kind"]) for _, r in pending]
        self.time_col[start:end] = [r["event_time"] for _, r in pending]
        self.value_col[start:end] = [
            np.nan if r.get("value") is None else r["value"] for _, r in pending
        ]

    def supersede(self, record: dict[str, Any]) -> None:
        """Move a memory whose value was superseded out of search, into ``history``."""
        self.remove(record["memory_id"])
        self.history[record["memory_id"]] = record

    def predecessors(self, memory: dict[str, Any]) -> list[dict[str, Any]]:
        """The superseded values before ``memory``, newest first (its ``supersedes`` chain)."""
        chain: list[dict[str, Any]] = []
        seen = {memory["memory_id"]}
        previous = memory.get("supersedes")
        while previous and previous not in seen and len(chain) < MAX_HISTORY:
            found = self.history.get(previous)
            if found is None:
                break  # deleted, or compacted away
            chain.append(found)
            seen.add(previous)
            previous = found.get("supersedes")
        return chain

    def remove(self, memory_id: str) -> bool:
        """Forget a memory (its row stays, dead); return whether it was live."""
        self.settle()
        self.history.pop(memory_id, None)
        row = self.row_of.pop(memory_id, None)
        if row is None:
            return False
        self.vectors.kill(row)
        del self.meta[memory_id]
        return True

    def search(
        self, query: np.ndarray, k: int, filters: RecallFilters
    ) -> list[tuple[str, float]]:
        """Return up to ``k`` (memory id, cosine) pairs, best first; ties by id."""
        self.settle()
        allowed = None if filters.empty else self._mask(filters)
        if allowed is not None and not allowed.any():
            return []
        hits = self.vectors.search(query, k, allowed)
        # Equal scores order by id, so a restart and a rebuild agree on the order.
        return sorted(
            ((self.id_of_row[row], score) for row, score in hits), key=lambda h: (-h[1], h[0])
        )

    def _mask(self, f: RecallFilters) -> np.ndarray:
        n = self.vectors.rows
        mask = np.ones(n, dtype=bool)
        if f.session_id is not None:
            code = self.codes.get(f.session_id)
            if code is None:
                return np.zeros(n, dtype=bool)
            mask &= self.session_col[:n] == code
        if f.kinds is not None:
            codes = [self.codes[k] for k in f.kinds if k in self.codes]
            mask &= np.isin(self.kind_col[:n], np.asarray(codes, dtype=np.int32))
        if f.time_from_ms is not None:
            mask &= self.time_col[:n] >= f.time_from_ms
        if f.time_to_ms is not None:
            mask &= self.time_col[:n] <= f.time_to_ms
        if f.min_value is not None:
            # Unknown value (NaN) never passes a minimum.
            mask &= np.nan_to_num(self.value_col[:n], nan=-np.inf) >= f.min_value
        return mask

    def session_memories(self, session_id: str) -> list[dict[str, Any]]:
        """The session's memories, newest first."""
        found = [m for m in self.meta.values() if m["session_id"] == session_id]
        return sorted(found, key=lambda m: (-int(m["event_time"]), m["memory_id"]))

    def _code(self, value: str) -> int:
        code = self.codes.get(value)
        if code is None:
            code = self.codes[value] = len(self.codes)
        return code

    def _grow(self, rows: int) -> None:
        if rows <= self.session_col.shape[0]:
            return
        capacity = max(rows, 2 * self.session_col.shape[0], 1024)
        self.session_col = _resized(self.session_col, capacity)
        self.kind_col = _resized(self.kind_col, capacity)
        self.time_col = _resized(self.time_col, capacity)
        self.value_col = _resized(self.value_col, capacity)

    # -- snapshot form ------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The row-aligned arrays, trimmed to the rows in use."""
        self.settle()
        n = self.vectors.rows
        return {
            "matrix": self.vectors.matrix[:n],
            "alive": self.vectors.alive[:n],
            "session": self.session_col[:n],
            "kind": self.kind_col[:n],
            "time": self.time_col[:n],
            "value": self.value_col[:n],
        }

    def restore(self, arrays: dict[str, np.ndarray], id_of_row: list[str],
                codes: dict[str, int], meta: dict[str, dict[str, Any]],
                history: dict[str, dict[str, Any]] | None = None) -> None:
        """Load the state ``arrays``/``id_of_row``/``codes``/``meta``/``history`` describe
        (a snapshot; snapshots written before supersession have no history)."""
        v = self.vectors
        v.matrix = np.ascontiguousarray(arrays["matrix"], dtype=np.float32)
        v.alive = np.array(arrays["alive"], dtype=bool)
        v.rows = v.matrix.shape[0]
        # Saved rows are unit-norm already; normalizing again would move them by an ulp
        # and a restarted replica would no longer score exactly like the one it restarts.
        v.mark_normalized()
        self.session_col = np.array(arrays["session"], dtype=np.int32)
        self.kind_col = np.array(arrays["kind"], dtype=np.int32)
        self.time_col = np.array(arrays["time"], dtype=np.int64)
        self.value_col = np.array(arrays["value"], dtype=np.float64)
        self.id_of_row = list(id_of_row)
        self.codes = dict(codes)
        self.meta = meta
        self.history = history or {}
        self._pending = []
        self.row_of = {}
        for row in np.flatnonzero(v.alive):
            self.row_of[self.id_of_row[row]] = int(row)


def _resized(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros(capacity, dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


def _same_direction(row: np.ndarray, vector: np.ndarray) -> bool:
    v = np.asarray(vector, dtype=np.float32)
    norm, row_norm = float(np.linalg.norm(v)), float(np.linalg.norm(row))
    return norm > 0 and row_norm > 0 and bool(np.allclose(row / row_norm, v / norm, atol=1e-6))
