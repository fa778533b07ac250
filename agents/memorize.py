"""The memorize agent: scored events in, memories out — exact dedupe, embedding, near-dupes.

A near duplicate is merged only when it states the same facts (``agents.facts``); one that
changes a value ("deploys on Friday" -> "on Tuesday") becomes a new memory superseding the
old one, which leaves the near-duplicate index and records ``superseded_by``/``superseded_at``.

Stores: ``content`` (tenant + normalized-content hash → memory id and the similarity seen
when that content arrived) and ``memories`` (tenant + memory id → the memory record, its
embedding included). The exact index per tenant (``streams.models.index``) is derived from
``memories`` whenever the owned partitions change, so it never holds an uncommitted memory
and is never re-embedded.

(About 390 lines: one agent's decisions — exact, near, fact change, delete — over two
stores; what a memory record becomes in each case is ``agents.memory_records``.)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from agents.facts import Action, FactComparison, Verdict, decide_near
from agents.memory_records import (
    NO_RELATIONS,
    count_into_deleted,
    forgotten_event_key,
    fresh_id,
    merge_into,
    new_memory,
    update_value,
)
from streams.common.codec import to_millis
from streams.common.exceptions import CorruptStateError, ValidationError
from streams.common.keys import SEP
from streams.common.observability import WorkerMetrics
from streams.common.topics import memory_key
from streams.common.validation import check_event
from streams.models.embedder import Embedder, vector_from_bytes
from streams.models.memory_index import TenantIndexes
from streams.processing.api import (
    Agent,
    BatchContext,
    InputRecord,
    StoreAccess,
    fault_point,
    reason_for,
)

logger = logging.getLogger(__name__)

# Near neighbours looked at: one about another subject does not hide the next one.
NEAR_CANDIDATES = 3


class MemorizeAgent(Agent):
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
        supersede_threshold: float | None = None,
        same_frame_threshold: float | None = None,
    ) -> None:
        self.embedder = embedder
        self.threshold = threshold
        self.supersede_threshold = threshold if supersede_threshold is None else supersede_threshold
        self.same_frame_threshold = same_frame_threshold
        self.max_text_chars = max_text_chars
        self.embed_batch_size = embed_batch_size
        self.metrics = metrics
        self.indexes = TenantIndexes(embedder.model_id, embedder.dimension)
        self._exact_duplicates = metrics.duplicates.labels("exact")
        # (tenant, memory id) of the superseded memories of the owned partitions: content of
        # theirs stated again is decided like new content, and its search joins the batch's
        # prefetch. Only a hint (a miss searches alone, a stale entry prefetches for nothing).
        self._superseded: set[tuple[str, str]] = set()

    def rebuild(self, partitions: frozenset[int], stores: StoreAccess) -> None:
        """Rebuild the tenant indexes from the committed memories of the owned partitions."""
        started = time.monotonic()
        self.indexes.clear()
        self._superseded.clear()
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
                # Superseded memories leave the near-duplicate index: later statements
                # compare against the current value.
                if memory.get("superseded_by"):
                    self._superseded.add((memory["tenant"], memory["memory_id"]))
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
        # Each tenant's near-duplicate candidates for the whole batch in one pass over its
        # vectors (new content and superseded content stated again); _place completes them
        # with the memories the batch adds before them.
        self.indexes.prefetch({**vectors, **self._restated(valid, known, ctx)},
                              k=NEAR_CANDIDATES)
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
                      event_time=max(memory["event_time"], to_millis(v["event_time"])),
                      **NO_RELATIONS)
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
            "deleted": True, "scorer_version": None, **NO_RELATIONS,
        }

    def _acceptable(self, record: InputRecord, ctx: BatchContext) -> bool:
        """The SDK's own check (score applies it too; this guards scored.v1 from elsewhere)."""
        try:
            check_event(record.topic, record.value, max_text_chars=self.max_text_chars)
        except ValidationError as exc:
            tenant = None if exc.field == "tenant" else record.value["tenant"]
            ctx.dead_letter(record, reason_for(exc), str(exc), tenant=tenant)
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

    def _restated(
        self,
        records: list[InputRecord],
        known: dict[tuple[str, str], dict[str, Any]],
        ctx: BatchContext,
    ) -> dict[tuple[str, str], np.ndarray]:
        """The vectors of known content whose memory is superseded, for the prefetch: a
        repeated stream restates each changed fact, and one search at a time over all the
        tenant's memories was ~22 % of the worker's samples on 20,000-event passes."""
        restated: dict[tuple[str, str], np.ndarray] = {}
        for r in records:
            slot = (r.value["tenant"], r.value["content_hash"])
            seen = known.get(slot)
            if seen is None or slot in restated \
                    or (slot[0], seen["memory_id"]) not in self._superseded:
                continue
            memory = ctx.store("memories", r.partition).get(f"{slot[0]}{SEP}{seen['memory_id']}")
            if memory is not None and self._restates_superseded(memory, r.value):
                restated[slot] = vector_from_bytes(memory["embedding"], memory["dimension"])
        return restated

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
                raise CorruptStateError(f"memorize: content store entry {tenant}/{digest} names "
                                        f"memory {seen['memory_id']}, which the memories store "
                                        "lacks")
            if memory["deleted"]:
                if v["event_id"] not in memory["source_event_ids"]:
                    count_into_deleted(memory, v)
                self._save(memory, memories, ctx)
                return
            if not self._restates_superseded(memory, v):
                if v["event_id"] in memory["source_event_ids"]:
                    update_value(memory, v)  # a re-score of an event already memorized
                else:
                    merge_into(memory, v, similarity=1.0, match="exact")
                    self._exact_duplicates.inc()
                self._save(memory, memories, ctx)
                return
            # A value that was superseded, stated again: decided like new content.
            vector = vector_from_bytes(memory["embedding"], memory["dimension"])
        else:
            gone = content.get(forgotten_event_key(tenant, v["event_id"]))
            if gone is not None:
                memory = memories.get(f"{tenant}{SEP}{gone['memory_id']}")
                if memory is not None and memory["deleted"]:
                    count_into_deleted(memory, v)
                    content.put(content_key, {"memory_id": memory["memory_id"], "similarity": 0.0})
                    self._save(memory, memories, ctx)
                    return
            vector = vectors[(tenant, digest)]
        memory, similarity = self._place(v, vector, memories, ctx, digest)
        content.put(content_key, {"memory_id": memory["memory_id"], "similarity": similarity})

    def _restates_superseded(self, memory: dict[str, Any], v: dict[str, Any]) -> bool:
        return bool(
            memory.get("superseded_by") and not memory["deleted"]
            and v["event_id"] not in memory["source_event_ids"]
            and memory["model_id"] == self.embedder.model_id
        )

    def _place(
        self, v: dict[str, Any], vector: np.ndarray, memories: Any, ctx: BatchContext,
        key: str,
    ) -> tuple[dict[str, Any], float]:
        """Merge into, supersede, or stand beside the nearest memories; save what changed
        and return the memory the content now belongs to, with the nearest similarity
        (``key``: the content hash the batch's prefetch selected candidates for)."""
        tenant = v["tenant"]
        mid = fresh_id(v, memories)
        memory = memories.get(f"{tenant}{SEP}{mid}")
        # Content deleted before its first occurrence was (re)processed stays deleted: it
        # may merge into a near memory, never supersede one as a memory of its own.
        deleted = memory is not None and memory["deleted"]
        nearest = self.indexes.nearest(tenant, vector, k=NEAR_CANDIDATES, key=key)
        for near_id, similarity in nearest:
            near = memories.get(f"{tenant}{SEP}{near_id}")
            if near is None:
                raise CorruptStateError(f"memorize: the index of tenant {tenant} holds memory "
                                        f"{near_id}, which the memories store lacks")
            decision = decide_near(near["text"], v["text"], similarity,
                                   merge_threshold=self.threshold,
                                   supersede_threshold=self.supersede_threshold,
                                   same_frame_threshold=self.same_frame_threshold)
            if decision.action is Action.MERGE:
                merge_into(near, v, similarity=similarity, match="near")
                self.metrics.duplicates.labels("near").inc()
                self._save(near, memories, ctx)
                return near, similarity
            if decision.action is Action.SUPERSEDE and not deleted:
                return self._supersede(near, v, mid, vector, decision.comparison, memories,
                                       ctx), similarity
            if decision.comparison.verdict is not Verdict.DISTINCT:
                break  # the next neighbours are further away still
        similarity = nearest[0][1] if nearest else 0.0
        if memory is not None and deleted:
            # Deleted before its first occurrence was (re)processed: stays deleted.
            count_into_deleted(memory, v)
        else:
            memory = new_memory(v, mid, vector, self.embedder)
            self.indexes.add(tenant, memory["memory_id"], vector, self.embedder.model_id)
        self._save(memory, memories, ctx)
        return memory, similarity

    def _supersede(
        self,
        old: dict[str, Any],
        v: dict[str, Any],
        mid: str,
        vector: np.ndarray,
        found: FactComparison,
        memories: Any,
        ctx: BatchContext,
    ) -> dict[str, Any]:
        """A new memory for the changed value; the old one records when and by what it
        was superseded and leaves the near-duplicate index. A statement older (in event
        time) than the memory it conflicts with arrives superseded already."""
        tenant, changed_at = v["tenant"], to_millis(v["event_time"])
        new = new_memory(v, mid, vector, self.embedder)
        old_from = old.get("valid_from") or old["event_time"]
        if changed_at >= old_from:
            new["supersedes"] = old["memory_id"]
            old["superseded_by"] = new["memory_id"]
            self._superseded.add((tenant, old["memory_id"]))
            old["superseded_at"] = changed_at
            old["event_id"] = v["event_id"]
            old["event_time"] = max(old["event_time"], changed_at)
            self.indexes.remove(tenant, old["memory_id"])
            self.indexes.add(tenant, new["memory_id"], vector, self.embedder.model_id)
        else:
            new["superseded_by"] = old["memory_id"]
            new["superseded_at"] = old_from
            self._superseded.add((tenant, new["memory_id"]))
            if old.get("supersedes") is None:
                old["supersedes"] = new["memory_id"]
        self.metrics.supersessions.labels(found.kind or "unknown").inc()
        logger.info("tenant %s: %s changed between memory %s and the new memory %s", tenant,
                    found.kind, old["memory_id"], new["memory_id"])
        self._save(new, memories, ctx)
        self._save(old, memories, ctx)
        return new

    @staticmethod
    def _save(memory: dict[str, Any], memories: Any, ctx: BatchContext) -> None:
        tenant = memory["tenant"]
        memories.put(f"{tenant}{SEP}{memory['memory_id']}", memory)
        ctx.send("memories.v1", memory, key=memory_key(tenant, memory["memory_id"]))
