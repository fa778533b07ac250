"""Tumbling event-time windows per (tenant, session) of one partition, kept in a state store.

Event time, never wall-clock time, decides everything, so a replay of the same partition
makes the same decisions:

- an event belongs to the window ``[t - t % window, ... + window)``;
- the partition's *stream time* is the largest event time seen so far; it lives in the
  store (key ``STREAM_TIME_KEY``), so a restarted worker resumes with the same clock;
- a window *closes* (its summary is first emitted) once stream time reaches its end;
- until stream time reaches ``end + grace`` a late event still joins the window and its
  summary is emitted again under the same id; after that the window is *closed*: it moves
  to the ``c`` keys (so that a later delete can re-derive its summary) and any later
  event for it is dropped (the caller counts it).

A window keeps the latest revision of each scored event (late feedback re-scores an
event: the revision with the highest number wins).

Forgetting: a deleted memory (``forget``) takes out of every window of its tenant, open or
closed, the events named by the delete and the events whose content is the memory's own
(same content hash → same memory id); each summary that changed is emitted again without
them. The delete is kept (``f`` keys) so that such events arriving later are left out too.

(A little over 300 lines: the window rules above are one state machine over one store.)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from agents.dedupe import memory_id_of_hash
from streams.common.keys import SEP

STREAM_TIME_KEY = "\x01stream-time"
WINDOW_PREFIX = f"w{SEP}"
CLOSED_PREFIX = f"c{SEP}"
FORGOTTEN_PREFIX = f"f{SEP}"
# Event ids one deleted memory keeps out of summaries at most (a memory lists 1,000).
MAX_FORGOTTEN_EVENTS = 5000
# Bounds on one window's state (a store value travels as one changelog record, 2 MiB max):
# events beyond MAX_WINDOW_EVENTS are dropped and counted, texts are kept truncated.
MAX_WINDOW_EVENTS = 2000
TEXT_KEEP_CHARS = 200
NEVER = 2**63 - 1


class KeyValueStore(Protocol):
    """What windows need of a state store (``PartitionStore`` is one)."""

    def get(self, key: str) -> Any | None:
        """The value of ``key``, seeing this batch's own writes."""

    def put(self, key: str, value: Any) -> None:
        """Write ``key``."""

    def delete(self, key: str) -> None:
        """Delete ``key``."""

    def committed_items(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Every committed (key, value) whose key starts with ``prefix``, in key order."""


@dataclass(frozen=True)
class ScoredItem:
    """What a summary needs of one scored event (one revision of it)."""

    tenant: str
    session_id: str
    event_id: str
    event_time: int
    revision: int
    kind: str
    text: str
    content_hash: str
    value: float | None
    outcome_quality: float | None


class Outcome(StrEnum):
    """What adding an event did to its window."""

    ADDED = "added"
    REVISED = "revised"
    DUPLICATE = "duplicate"
    LATE = "late"
    FULL = "full"
    FORGOTTEN = "forgotten"


@dataclass(frozen=True)
class Emission:
    """A window whose summary must be (re-)emitted; ``first`` when it just closed.

    ``window`` is a copy of the state at that moment (later events do not change it)."""

    window: dict[str, Any]
    first: bool


@dataclass(frozen=True)
class AddResult:
    """The outcome for the event added, and the summaries due after it, in order."""

    outcome: Outcome
    emissions: list[Emission] = field(default_factory=list)


def window_key(tenant: str, session_id: str, start: int) -> str:
    """The store key of a window (sorts by tenant, session, start)."""
    return f"{WINDOW_PREFIX}{tenant}{SEP}{session_id}{SEP}{start:015d}"


def forgotten_key(tenant: str, memory_id: str) -> str:
    """The store key of a deleted memory's record (the event ids it keeps out)."""
    return f"{FORGOTTEN_PREFIX}{tenant}{SEP}{memory_id}"


class SessionWindows:
    """The windows of one partition; the store is the truth, an index of ends is derived.

    Changes are buffered until ``flush``, which the agent calls once per batch; a batch
    that aborts is forgotten by rebuilding from the committed store.
    """

    def __init__(self, store: KeyValueStore, *, window_ms: int, grace_ms: int) -> None:
        if window_ms <= 0 or grace_ms < 0:
            raise ValueError(
                f"window_ms must be > 0 and grace_ms >= 0, got {window_ms} and {grace_ms}"
            )
        self.store = store
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self.stream_time = -1
        # window key -> (end, emitted); rebuilt from the committed store
        self._index: dict[str, tuple[int, bool]] = {}
        # Changes of the current batch, written once by flush(): a window that takes many
        # events in one batch becomes one changelog record, not one per event.
        self._dirty: dict[str, dict[str, Any] | None] = {}
        self._time_dirty = False
        stream_time = store.get(STREAM_TIME_KEY)
        if stream_time is not None:
            self.stream_time = int(stream_time)
        for key, value in store.committed_items(WINDOW_PREFIX):
            self._index[key] = (int(value["end"]), bool(value["emitted"]))
        # Deleted memories: tenant -> memory ids, and (tenant, event id) kept out.
        self._forgotten_ids: dict[str, set[str]] = {}
        self._forgotten_events: set[tuple[str, str]] = set()
        for key, value in store.committed_items(FORGOTTEN_PREFIX):
            tenant, memory_id = key[len(FORGOTTEN_PREFIX):].split(SEP, 1)
            self._remember(tenant, memory_id, value["event_ids"])
        # The earliest stream time at which some window closes or is evicted: stream time
        # moves with nearly every event, the index is scanned only when it passes this.
        self._next_deadline = self._earliest_deadline()

    @property
    def open_windows(self) -> int:
        """Windows kept (not yet past their grace period)."""
        return len(self._index)

    def bounds(self, event_time: int) -> tuple[int, int]:
        """Start and end of the window holding ``event_time``."""
        start = event_time - event_time % self.window_ms
        return start, start + self.window_ms

    def add(self, item: ScoredItem) -> AddResult:
        """Add one scored event, advance stream time, and say which summaries are due."""
        if self._is_forgotten(item.tenant, item.event_id, item.content_hash):
            # Still moves stream time: a replay that reads the delete first closes the
            # same windows at the same events as the run that read it later.
            return AddResult(Outcome.FORGOTTEN, self._advance(item.event_time))
        start, end = self.bounds(item.event_time)
        if end + self.grace_ms <= self.stream_time:
            return AddResult(Outcome.LATE)
        key = window_key(item.tenant, item.session_id, start)
        window = self._get(key) or _new_window(item, start, end)
        outcome = _upsert(window, item)
        emissions: list[Emission] = []
        if outcome in (Outcome.ADDED, Outcome.REVISED):
            if end <= self.stream_time:
                # Stream time has already closed this window: (re-)emit it now. A window
                # first created by a late event within grace closes here too.
                first = not window["emitted"]
                window["emitted"] = True
                emissions.append(Emission(copy.deepcopy(window), first=first))
            self._dirty[key] = window
            self._index[key] = (end, bool(window["emitted"]))
            self._next_deadline = min(self._next_deadline, self._deadline(end, window["emitted"]))
        emissions.extend(self._advance(item.event_time))
        return AddResult(outcome, emissions)

    def _advance(self, event_time: int) -> list[Emission]:
        """Move stream time to ``event_time`` if later: close and evict windows it passes."""
        if event_time <= self.stream_time:
            return []
        self.stream_time = event_time
        self._time_dirty = True
        if event_time < self._next_deadline:
            return []
        due: list[Emission] = []
        for key, (end, emitted) in sorted(self._index.items(), key=lambda kv: (kv[1][0], kv[0])):
            if end > event_time:
                break
            if not emitted:
                window = self._get(key)
                if window is None:  # the index is derived from the store; never expected
                    raise KeyError(f"window {key!r} is indexed but not stored")
                window["emitted"] = True
                due.append(Emission(copy.deepcopy(window), first=True))
                self._dirty[key] = window
                self._index[key] = (end, True)
            if end + self.grace_ms <= event_time:
                closed = self._get(key)
                self._dirty[key] = None
                self._dirty[CLOSED_PREFIX + key[len(WINDOW_PREFIX):]] = closed
                del self._index[key]
        self._next_deadline = self._earliest_deadline()
        return due

    def forget(self, tenant: str, memory_id: str, event_ids: list[str]) -> list[Emission]:
        """Keep a deleted memory out of the tenant's windows, open and closed, from now on;
        return the summaries to emit again (those already emitted that quoted it)."""
        key = forgotten_key(tenant, memory_id)
        known = self._get(key)
        ids = sorted(set(event_ids) | set(known["event_ids"] if known else ()))
        self._dirty[key] = {"event_ids": ids[:MAX_FORGOTTEN_EVENTS]}
        self._remember(tenant, memory_id, ids[:MAX_FORGOTTEN_EVENTS])
        emissions: list[Emission] = []
        for wkey in self._tenant_windows(tenant):
            window = self._get(wkey)
            if window is None or not self._drop_forgotten(window):
                continue
            self._dirty[wkey] = window
            if window["emitted"]:
                emissions.append(Emission(copy.deepcopy(window), first=False))
        return emissions

    def _remember(self, tenant: str, memory_id: str, event_ids: list[str]) -> None:
        self._forgotten_ids.setdefault(tenant, set()).add(memory_id)
        self._forgotten_events.update((tenant, e) for e in event_ids)

    def _is_forgotten(self, tenant: str, event_id: str, content_hash: str) -> bool:
        ids = self._forgotten_ids.get(tenant)
        if not ids:
            return False
        return ((tenant, event_id) in self._forgotten_events
                or memory_id_of_hash(tenant, content_hash) in ids)

    def _tenant_windows(self, tenant: str) -> list[str]:
        """Keys of the tenant's open and closed windows (committed or written this batch)."""
        open_prefix = f"{WINDOW_PREFIX}{tenant}{SEP}"
        closed_prefix = f"{CLOSED_PREFIX}{tenant}{SEP}"
        keys = {k for k in self._index if k.startswith(open_prefix)}
        keys.update(k for k, _ in self.store.committed_items(closed_prefix))
        keys.update(k for k, v in self._dirty.items()
                    if v is not None and k.startswith((open_prefix, closed_prefix)))
        return sorted(k for k in keys if k not in self._dirty or self._dirty[k] is not None)

    def _drop_forgotten(self, window: dict[str, Any]) -> bool:
        """Take the forgotten events (and texts only they used) out; whether any was."""
        tenant = window["tenant"]
        events: dict[str, list[Any]] = window["events"]
        gone = [e for e, rev in events.items() if self._is_forgotten(tenant, e, rev[2])]
        for event_id in gone:
            del events[event_id]
        used = {rev[2] for rev in events.values()}
        texts: dict[str, str] = window["texts"]
        for digest in [d for d in texts if d not in used]:
            del texts[digest]
        return bool(gone)

    def _deadline(self, end: int, emitted: bool) -> int:
        return end + self.grace_ms if emitted else end

    def _earliest_deadline(self) -> int:
        return min((self._deadline(end, done) for end, done in self._index.values()),
                   default=NEVER)

    def flush(self) -> None:
        """Write this batch's window changes and stream time to the store (in key order)."""
        for key in sorted(self._dirty):
            window = self._dirty[key]
            if window is None:
                self.store.delete(key)
            else:
                self.store.put(key, window)
        self._dirty.clear()
        if self._time_dirty:
            self.store.put(STREAM_TIME_KEY, self.stream_time)
            self._time_dirty = False

    def _get(self, key: str) -> dict[str, Any] | None:
        if key in self._dirty:
            return self._dirty[key]
        value: dict[str, Any] | None = self.store.get(key)
        return value


def _new_window(item: ScoredItem, start: int, end: int) -> dict[str, Any]:
    return {
        "tenant": item.tenant,
        "session_id": item.session_id,
        "start": start,
        "end": end,
        "emitted": False,
        "events": {},
        "texts": {},
    }


def _upsert(window: dict[str, Any], item: ScoredItem) -> Outcome:
    """Keep the latest revision of the event in ``window``."""
    events: dict[str, list[Any]] = window["events"]
    known = events.get(item.event_id)
    if known is not None and known[0] >= item.revision:
        return Outcome.DUPLICATE
    if known is None and len(events) >= MAX_WINDOW_EVENTS:
        return Outcome.FULL
    events[item.event_id] = [
        item.revision, item.kind, item.content_hash, item.value, item.outcome_quality,
        item.event_time,
    ]
    window["texts"].setdefault(item.content_hash, item.text[:TEXT_KEEP_CHARS])
    return Outcome.REVISED if known is not None else Outcome.ADDED
