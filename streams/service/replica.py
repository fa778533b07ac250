"""The read replica: memories.v1 and summaries.v1 materialized per tenant, with the offsets.

One writer (the feed thread) applies records; HTTP handlers read. A lock guards each
apply batch and each query, so a query never sees half a batch. Memories of another
embedding model than the replica's are skipped (counted), never indexed: a query
embedded with this model is never compared with vectors of another one.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.models.index import IndexPolicy
from streams.service.memories import RecallFilters, TenantMemories

logger = logging.getLogger(__name__)

MEMORIES = "memories.v1"
SUMMARIES = "summaries.v1"
SUMMARY_FIELDS = ("summary_id", "event_id", "event_time", "session_id", "window_start",
                  "window_end", "text", "key_terms", "event_ids")


@dataclass(frozen=True)
class Hit:
    """One recalled memory."""

    memory: dict[str, Any]
    similarity: float
    # With ``include_history``: the superseded values before it, newest first.
    history: list[dict[str, Any]] | None = None


@dataclass
class Replica:
    """Per-tenant memories and summaries, and the next offset of each partition applied."""

    model_id: str
    dimension: int
    policy: IndexPolicy = field(default_factory=IndexPolicy)
    tenants: dict[str, TenantMemories] = field(default_factory=dict)
    summaries: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # base topic -> partition -> next offset to apply
    offsets: dict[str, dict[int, int]] = field(
        default_factory=lambda: {MEMORIES: {}, SUMMARIES: {}}
    )
    skipped: Counter[str] = field(default_factory=Counter)
    applied: int = 0
    deletions: int = 0  # deleted memories applied (the feed then replaces the snapshots)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # -- writes (the feed thread) ----------------------------------------------------------
    def apply(self, base: str, partition: int, offset: int, value: dict[str, Any] | None) -> None:
        """Apply one committed record of ``base`` at ``partition``/``offset`` (caller locks)."""
        if value is not None:
            if base == MEMORIES:
                self._apply_memory(value)
            elif base == SUMMARIES:
                self._apply_summary(value)
        self.offsets[base][partition] = max(self.offsets[base].get(partition, 0), offset + 1)
        self.applied += 1

    def _apply_memory(self, m: dict[str, Any]) -> None:
        tenant = m["tenant"]
        if m.get("deleted"):
            shard = self.tenants.get(tenant)
            if shard is not None and shard.remove(m["memory_id"]):
                self.deletions += 1
            return
        if not self.dimension and m["model_id"] == self.model_id:
            self.dimension = int(m["dimension"])  # a rebuild that loads no model learns it here
        if m["model_id"] != self.model_id or m["dimension"] != self.dimension:
            self.skipped["other_model"] += 1
            return
        embedding = m.pop("embedding")
        if len(embedding) != 4 * self.dimension:
            self.skipped["bad_embedding"] += 1
            return
        shard = self.tenants.get(tenant)
        if shard is None:
            shard = self.tenants[tenant] = TenantMemories(tenant, self.dimension, self.policy)
        m.pop("merges", None)
        if type(m["event_time"]) is not int:
            _plain(m)
        if m.get("superseded_by"):
            shard.supersede(m)  # out of search; kept as history of the memory that replaced it
            return
        # Little-endian float32 bytes as stored: the index copies them into its rows.
        shard.upsert(m, embedding)

    def _apply_summary(self, s: dict[str, Any]) -> None:
        record = _plain(s)
        self.summaries.setdefault(s["tenant"], {})[s["summary_id"]] = {
            f: record.get(f) for f in SUMMARY_FIELDS
        }

    def sync(self, *, build: bool = True) -> None:
        """Let each tenant's index extend (and with ``build``, build) its graph (caller locks)."""
        for shard in self.tenants.values():
            shard.settle()
            shard.vectors.sync(build=build)

    def build_graphs(self) -> None:
        """Build the graphs now due *without* holding the lock during the build (seconds for
        tens of thousands of vectors), then attach each under the lock. Only the single
        writer (the feed thread) may call it: nothing appends rows meanwhile."""
        for shard in list(self.tenants.values()):
            graph = shard.vectors.build_graph()
            if graph is not None:
                with self.lock:
                    shard.vectors.ann = graph
                logger.info("tenant %s: HNSW graph over %d rows", shard.tenant, graph.ntotal)

    # -- reads (HTTP handlers) ---------------------------------------------------------------
    def recall(
        self,
        tenant: str,
        query: np.ndarray,
        *,
        k: int,
        min_similarity: float = -1.0,
        filters: RecallFilters | None = None,
        include_history: bool = False,
    ) -> list[Hit]:
        """The tenant's ``k`` current memories most similar to ``query``; never another
        tenant's. With ``include_history`` each hit carries the values it superseded."""
        with self.lock:
            shard = self.tenants.get(tenant)
            if shard is None:
                return []
            found = shard.search(query, k, filters or RecallFilters())
            return [
                Hit(dict(shard.meta[mid]), score,
                    [dict(m) for m in shard.predecessors(shard.meta[mid])]
                    if include_history else None)
                for mid, score in found if score >= min_similarity
            ]

    def get(self, tenant: str, memory_id: str) -> dict[str, Any] | None:
        """One of the tenant's memories, current or superseded, or None (also for another
        tenant's id)."""
        with self.lock:
            shard = self.tenants.get(tenant)
            if shard is None:
                return None
            found = shard.meta.get(memory_id) or shard.history.get(memory_id)
            return dict(found) if found is not None else None

    def superseded_among(self, tenant: str, event_ids: list[str]) -> list[dict[str, Any]]:
        """The tenant's superseded memories that any of ``event_ids`` went into."""
        wanted = set(event_ids)
        with self.lock:
            shard = self.tenants.get(tenant)
            if shard is None or not shard.history or not wanted:
                return []
            return [dict(m) for _, m in sorted(shard.history.items())
                    if wanted.intersection(m["source_event_ids"])]

    def predecessors(self, tenant: str, memory: dict[str, Any]) -> list[dict[str, Any]]:
        """The superseded values before ``memory``, newest first."""
        with self.lock:
            shard = self.tenants.get(tenant)
            return [dict(m) for m in shard.predecessors(memory)] if shard else []

    def session_memories(self, tenant: str, session_id: str) -> list[dict[str, Any]]:
        """The tenant's memories first seen in ``session_id``, newest first."""
        with self.lock:
            shard = self.tenants.get(tenant)
            return [dict(m) for m in shard.session_memories(session_id)] if shard else []

    def latest_summaries(self, tenant: str, session_id: str, limit: int) -> list[dict[str, Any]]:
        """The session's summaries with the latest windows first."""
        with self.lock:
            found = [s for s in self.summaries.get(tenant, {}).values()
                     if s["session_id"] == session_id]
        found.sort(key=lambda s: (-int(s["window_end"]), s["summary_id"]))
        return [dict(s) for s in found[:limit]]

    def size(self) -> dict[str, int]:
        """Live memories per index kind (exact / hnsw), and summaries."""
        with self.lock:
            sizes: Counter[str] = Counter()
            for shard in self.tenants.values():
                sizes[shard.vectors.kind] += len(shard)
            sizes["summaries"] = sum(len(s) for s in self.summaries.values())
            return dict(sizes)

    def position(self, base: str, partition: int) -> int:
        """The next offset of ``base[partition]`` this replica has not applied."""
        with self.lock:
            return self.offsets[base].get(partition, 0)


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with timestamps as epoch milliseconds (in place: the replica owns it)."""
    for name in ("event_time", "window_start", "window_end"):
        value = record.get(name)
        if value is not None and not isinstance(value, int):
            record[name] = int(value.timestamp() * 1000)
    return record
