"""The memory record memorize writes to memories.v1: how one is made, merged into and counted.

Pure functions over the record (a dict in memories.v1's latest schema); the agent decides
*when* (``agents.memorize``), these say *what* changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.dedupe import memory_id, restatement_id
from streams.common.codec import to_millis
from streams.common.keys import SEP
from streams.models.embedder import Embedder, vector_to_bytes

# A memory lists at most this many source ids and merges (its count keeps growing).
MAX_SOURCES = 1000
# Content-store keys of the events a delete took with it (see ``MemorizeAgent._delete``).
FORGOTTEN_EVENT = f"\x01forgotten{SEP}"


def forgotten_event_key(tenant: str, event_id: str) -> str:
    """The content-store key that sends event ``event_id`` into a deleted memory."""
    return f"{FORGOTTEN_EVENT}{tenant}{SEP}{event_id}"


# A deleted memory keeps no validity interval or supersession: those depend on the order
# in which the delete and the events were read, and a replay may read the delete first.
NO_RELATIONS: dict[str, Any] = {
    "valid_from": None, "supersedes": None, "superseded_by": None, "superseded_at": None,
}


def fresh_id(v: dict[str, Any], memories: Any) -> str:
    """The content's memory id, or (when a superseded memory holds it) a restatement id."""
    mid = memory_id(v["tenant"], v["text"])
    taken = memories.get(f"{v['tenant']}{SEP}{mid}")
    if taken is not None and not taken["deleted"]:
        return restatement_id(v["tenant"], v["text"], v["event_id"])
    return mid


def new_memory(v: dict[str, Any], mid: str, vector: np.ndarray, embedder: Embedder
               ) -> dict[str, Any]:
    """A memory of one scored event ``v``, with its vector and the model that made it."""
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
        "model_id": embedder.model_id,
        "dimension": embedder.dimension,
        "value": v["value"],
        "confidence": v["confidence"],
        "occurrence_count": 1,
        "source_event_ids": [v["event_id"]],
        "merges": [],
        "deleted": False,
        "scorer_version": v["scorer_version"],
        "valid_from": to_millis(v["event_time"]),
        "supersedes": None,
        "superseded_by": None,
        "superseded_at": None,
    }


def count_into_deleted(memory: dict[str, Any], v: dict[str, Any]) -> None:
    """Count an event into a deleted memory: it stays deleted, with no value."""
    memory["occurrence_count"] += 1
    memory["source_event_ids"] = (memory["source_event_ids"] + [v["event_id"]])[-MAX_SOURCES:]
    memory["event_time"] = max(memory["event_time"], to_millis(v["event_time"]))


def merge_into(memory: dict[str, Any], v: dict[str, Any], *, similarity: float, match: str
               ) -> None:
    """Merge event ``v`` into ``memory`` (``match``: exact or near, at ``similarity``)."""
    memory["occurrence_count"] += 1
    memory["source_event_ids"] = (memory["source_event_ids"] + [v["event_id"]])[-MAX_SOURCES:]
    memory["merges"] = (
        memory["merges"]
        + [{"event_id": v["event_id"], "similarity": round(float(similarity), 6),
           "match": match}]
    )[-MAX_SOURCES:]
    update_value(memory, v)


def update_value(memory: dict[str, Any], v: dict[str, Any]) -> None:
    """The latest known value wins; an unknown value never erases a known one."""
    memory["event_id"] = v["event_id"]
    memory["event_time"] = max(memory["event_time"], to_millis(v["event_time"]))
    if v["value"] is not None:
        memory["value"] = v["value"]
        memory["confidence"] = v["confidence"]
        memory["scorer_version"] = v["scorer_version"]
