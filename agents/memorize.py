"""The memorize agent: scored events in, memories out — exact dedupe, embedding, near-dupes.

Stores: ``content`` (tenant + normalized-content hash → memory id and the similarity seen
when that content arrived) and ``memories`` (tenant + memory id → the memory record, its
embedding included). The FAISS index per tenant is derived from ``memories`` whenever the
owned partitions change, so it never holds an uncommitted memory and is never re-embedded.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from agents.deadletter import DeadLetterReason
from agents.dedupe import memory_id
from agents.models.embedder import Embedder, vector_from_bytes, vector_to_bytes
from agents.models.exceptions import ModelMismatchError
from agents.models.index import TenantIndexes
from agents.score import SEP, to_millis
from streams.observability import WorkerMetrics
from streams.processing.runtime import BatchContext, InputRecord, StoreAccess, fault_point
from streams.topics import memory_key

logger = logging.getLogger(__name__)

# A memory lists at most this many source ids and merges (its count keeps growing).
MAX_SOURCES = 1000
# Content-store keys of the events a delete took with it (see ``_delete``).
FORGOTTEN_EVENT = f"\x01forgotten{SEP}"


def forgotten_event_key(tenant: str, event_id: str) -> str:
    """The content-store key that sends event ``event_id`` into a deleted memory."""
    return f"{FORGOTTEN_EVENT}{tenant}{SEP}{event_id}"


class MemorizeAgent:
    """Turns scored events into memories, merging exact and near duplicates."""

    name = "memorize"
    # commands.v1: the users' deletes (written by the read service), co-partitioned with
    # scored.v1 and applied in the same transactions, so memorize is the only writer of
    # memories.v1 and never reads it back.
    inputs = ("scored.v1", "commands.v1")
    stores = ("content", "memories")

    def __init__(
        self,
        embedder: Embedder,
        *,
        threshold: float,
        max_text_chars: int,
        embed_batch_size: int,
        metrics: WorkerMetrics,
    ) -> None:
        self.embedder = embedder
        self.threshold = threshold
        self.max_text_chars = max_text_chars
        self.embed_batch_size = embed_batch_size
        self.metrics = metrics
        self.indexes = TenantIndexes(embedder.model_id, embedder.dimension)
        self._exact_duplicates = metrics.duplicates.labels("exact")

    def on_assigned(self, partitions: frozenset[int], stores: StoreAccess) -> None:
        """Rebuild the tenant indexes from the committed memories of the owned partitions."""
        started = time.monotonic()
        self.indexes.clear()
        # Per tenant, added in one call: one faiss add per memory made restarts slow.
        ids: dict[str, list[str]] = {}
        vectors: dict[str, list[np.ndarray]] = {}
        model = self.embedder.model_id
        for partition in partitions:
            if not stores.has("memories", partition):
                continue
            for _key, memory in stores.store("memories", partition).committed_items():
                if memory["deleted"] or memory["model_id"] != model:
                    continue
                tenant = memory["tenant"]
                ids.setdefault(tenant, []).append(memory["memory_id"])
                vectors.setdefault(tenant, []).append(
                    vector_from_bytes(memory["embedding"], memory["dimension"])
                )
        count = 0
        for tenant, tenant_ids in ids.items():
            self.indexes.add_many(tenant, tenant_ids, np.vstack(vectors[tenant]), model)
            count += len(tenant_ids)
        logger.info(
            "memory indexes rebuilt: %d memories in %.2fs", count, time.monotonic() - started
        )

    def process(self, records: list[InputRecord], ctx: BatchContext) -> None:
        """Apply deletes, dedupe exactly, embed what is new (one batch), then merge or
        create in order."""
        for record in records:
            if record.topic == "commands.v1" and record.value["action"] == "DELETE":
                self._delete(record, ctx)
        records = [r for r in records if r.topic == "scored.v1"]
        valid = [r for r in records if self._acceptable(r, ctx)]
        known: dict[tuple[str, str], dict[str, Any]] = {}
        vectors = self._embed_unseen(valid, known, ctx)
        for record in valid:
            self._memorize(record, vectors, known, ctx)
        fault_point("memorize-embedded", prepare=ctx.flush)

    # -- steps -------------------------------------------------------------------------------
    def _delete(self, record: InputRecord, ctx: BatchContext) -> None:
        """Mark the memory deleted for good: its text and vector go, its count stays, and
        later repeats of its content are counted into it without bringing it back. A
        delete that arrives before the memory exists (a replay reads commands.v1 from its
        start) leaves a deleted marker that the memory is created into."""
        v = record.value
        tenant, mid = v["tenant"], v["memory_id"]
        memories = ctx.store("memories", record.partition)
        key = f"{tenant}{SEP}{mid}"
        memory = memories.get(key)
        if memory is not None and memory["deleted"]:
            return
        if memory is None:
            memory = self._marker(v)
        # The events it took with it (near duplicates too) stay with it: a replay that reads
        # this delete before them counts them into it instead of making new memories.
        content = ctx.store("content", record.partition)
        for event_id in dict.fromkeys([*v["source_event_ids"], *memory["source_event_ids"]]):
            content.put(forgotten_event_key(tenant, event_id), {"memory_id": mid})
        # The content goes: text, hash and vector are blanked, and so is all else that
        # depends on the order the delete and the events came in (a replay reads the delete
        # first), so that a replay writes the same record; the count stays (`memstream
        # stats` balances with it) and so do the source event ids.
        memory.update(text="", content_hash="", embedding=b"", dimension=0, deleted=True,
                      session_id="", kind="", value=None, confidence=0.0, merges=[],
                      scorer_version=None, event_id=v["event_id"],
                      event_time=max(memory["event_time"], to_millis(v["event_time"])))
        self.indexes.remove(tenant, mid)
        self._save(memory, memories, ctx)
        logger.info("memory %s of tenant %s deleted", mid, tenant)

    def _marker(self, command: dict[str, Any]) -> dict[str, Any]:
        """A deleted memory that has not been seen yet."""
        return {
            "tenant": command["tenant"], "memory_id": command["memory_id"],
            "event_id": command["event_id"], "event_time": to_millis(command["event_time"]),
            "session_id": "", "kind": "", "text": "", "content_hash": "", "embedding": b"",
            "model_id": self.embedder.model_id, "dimension": 0, "value": None,
            "confidence": 0.0, "occurrence_count": 0, "source_event_ids": [], "merges": [],
            "deleted": True, "scorer_version": None,
        }

    def _acceptable(self, record: InputRecord, ctx: BatchContext) -> bool:
        text = record.value["text"]
        tenant = record.value["tenant"]
        if not text.strip():
            ctx.dead_letter(record, DeadLetterReason.EMPTY_TEXT, "text is empty", tenant=tenant)
            return False
        if len(text) > self.max_text_chars:
            ctx.dead_letter(record, DeadLetterReason.OVERSIZE,
                            f"text is {len(text)} characters, over {self.max_text_chars}",
                            tenant=tenant)
            return False
        return True

    def _embed_unseen(
        self,
        records: list[InputRecord],
        known: dict[tuple[str, str], dict[str, Any]],
        ctx: BatchContext,
    ) -> dict[tuple[str, str], np.ndarray]:
        """Embed each distinct (tenant, content) not yet in the content store, in batches;
        the content entries found go into ``known`` (an entry never changes once written)."""
        todo: dict[tuple[str, str], str] = {}
        for r in records:
            slot = (r.value["tenant"], r.value["content_hash"])
            if slot in todo or slot in known:
                continue
            seen = ctx.store("content", r.partition).get(f"{slot[0]}{SEP}{slot[1]}")
            if seen is None:
                todo[slot] = r.value["text"]
            else:
                known[slot] = seen
        vectors: dict[tuple[str, str], np.ndarray] = {}
        slots = list(todo)
        for start in range(0, len(slots), self.embed_batch_size):
            chunk = slots[start : start + self.embed_batch_size]
            began = time.monotonic()
            try:
                matrix = self.embedder.embed([todo[s] for s in chunk])
            except Exception:
                self.metrics.embed_errors.inc()
                raise
            self.metrics.embed_seconds.observe(time.monotonic() - began)
            self.metrics.embed_batch_size.observe(len(chunk))
            vectors.update(zip(chunk, matrix, strict=True))
        return vectors

    def _memorize(
        self,
        record: InputRecord,
        vectors: dict[tuple[str, str], np.ndarray],
        known: dict[tuple[str, str], dict[str, Any]],
        ctx: BatchContext,
    ) -> None:
        v = record.value
        tenant, digest = v["tenant"], v["content_hash"]
        content = ctx.store("content", record.partition)
        memories = ctx.store("memories", record.partition)
        content_key = f"{tenant}{SEP}{digest}"
        # Content new at the start of the batch may have been written by an earlier record.
        seen = known.get((tenant, digest)) or content.get(content_key)
        if seen is not None:
            memory = memories.get(f"{tenant}{SEP}{seen['memory_id']}")
            if memory is None:
                raise ModelMismatchError(f"content {digest} points at missing memory")
            if memory["deleted"]:
                if v["event_id"] not in memory["source_event_ids"]:
                    self._count_into_deleted(memory, v)
            elif v["event_id"] in memory["source_event_ids"]:
                self._update_value(memory, v)  # a re-score of an event already memorized
            else:
                self._merge(memory, v, similarity=1.0, match="exact")
                self._exact_duplicates.inc()
            self._save(memory, memories, ctx)
            return
        gone = content.get(forgotten_event_key(tenant, v["event_id"]))
        if gone is not None:
            memory = memories.get(f"{tenant}{SEP}{gone['memory_id']}")
            if memory is not None and memory["deleted"]:
                self._count_into_deleted(memory, v)
                content.put(content_key, {"memory_id": memory["memory_id"], "similarity": 0.0})
                self._save(memory, memories, ctx)
                return
        vector = vectors[(tenant, digest)]
        nearest = self.indexes.nearest(tenant, vector, k=1)
        similarity = nearest[0][1] if nearest else 0.0
        if nearest and similarity >= self.threshold:
            memory = memories.get(f"{tenant}{SEP}{nearest[0][0]}")
            if memory is None:
                raise ModelMismatchError(f"index holds {nearest[0][0]} but the store does not")
            self._merge(memory, v, similarity=similarity, match="near")
            self.metrics.duplicates.labels("near").inc()
        else:
            mid = memory_id(tenant, v["text"])
            memory = memories.get(f"{tenant}{SEP}{mid}")
            if memory is not None and memory["deleted"]:
                # Deleted before its first occurrence was (re)processed: stays deleted.
                self._count_into_deleted(memory, v)
            else:
                memory = self._new_memory(v, mid, vector)
                self.indexes.add(tenant, memory["memory_id"], vector, self.embedder.model_id)
        content.put(content_key, {"memory_id": memory["memory_id"], "similarity": similarity})
        self._save(memory, memories, ctx)

    def _new_memory(self, v: dict[str, Any], mid: str, vector: np.ndarray) -> dict[str, Any]:
        return {
            "tenant": v["tenant"],
            "memory_id": mid,
            "event_id": v["event_id"],
            "event_time": to_millis(v["event_time"]),
            "session_id": v["session_id"],
            "kind": v["kind"],
            "text": v["text"],
            "content_hash": v["content_hash"],
            "embedding": vector_to_bytes(vector),
            "model_id": self.embedder.model_id,
            "dimension": self.embedder.dimension,
            "value": v["value"],
            "confidence": v["confidence"],
            "occurrence_count": 1,
            "source_event_ids": [v["event_id"]],
            "merges": [],
            "deleted": False,
            "scorer_version": v["scorer_version"],
        }

    @staticmethod
    def _count_into_deleted(memory: dict[str, Any], v: dict[str, Any]) -> None:
        """Count an event into a deleted memory: it stays deleted, with no value."""
        memory["occurrence_count"] += 1
        memory["source_event_ids"] = (memory["source_event_ids"] + [v["event_id"]])[-MAX_SOURCES:]
        memory["event_time"] = max(memory["event_time"], to_millis(v["event_time"]))

    @staticmethod
    def _merge(memory: dict[str, Any], v: dict[str, Any], *, similarity: float, match: str) -> None:
        memory["occurrence_count"] += 1
        memory["source_event_ids"] = (memory["source_event_ids"] + [v["event_id"]])[-MAX_SOURCES:]
        memory["merges"] = (
            memory["merges"]
            + [{"event_id": v["event_id"], "similarity": round(float(similarity), 6),
               "match": match}]
        )[-MAX_SOURCES:]
        MemorizeAgent._update_value(memory, v)

    @staticmethod
    def _update_value(memory: dict[str, Any], v: dict[str, Any]) -> None:
        """The latest known value wins; an unknown value never erases a known one."""
        memory["event_id"] = v["event_id"]
        memory["event_time"] = max(memory["event_time"], to_millis(v["event_time"]))
        if v["value"] is not None:
            memory["value"] = v["value"]
            memory["confidence"] = v["confidence"]
            memory["scorer_version"] = v["scorer_version"]

    @staticmethod
    def _save(memory: dict[str, Any], memories: Any, ctx: BatchContext) -> None:
        tenant = memory["tenant"]
        memories.put(f"{tenant}{SEP}{memory['memory_id']}", memory)
        ctx.send("memories.v1", memory, key=memory_key(tenant, memory["memory_id"]))
