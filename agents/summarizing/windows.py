"""Tumbling event-time windows per (tenant, session) of one partition, kept in a state store.

Event time, never wall-clock time, decides everything, so a replay of the same partition
makes the same decisions:

- an event belongs to the window ``[t - t % window, ... + window)``;
- the partition's *stream time* is the largest event time seen so far; it lives in the
  store (key ``STREAM_TIME_KEY``), so a restarted worker resumes with the same clock;
- a window *closes* (its summary is first emitted) once stream time reaches its end;
- until stream time reaches ``end + grace`` a late event still joins the window and its
  summary is emitted again under the same id; after that the window is evicted and any
  later event for it is dropped (the caller counts it).

A window keeps the latest revision of each scored event (late feedback re-scores an
event: the revision with the highest number wins).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

SEP = "\x00"
STREAM_TIME_KEY = "\x01stream-time"
WINDOW_PREFIX = f"w{SEP}"
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

    def committed_items(self) -> Iterator[tuple[str, Any]]:
        """Every committed (key, value)."""


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
        for key, value in store.committed_items():
            if key == STREAM_TIME_KEY:
                self.stream_time = int(value)
            elif key.startswith(WINDOW_PREFIX):
                self._index[key] = (int(value["end"]), bool(value["emitted"]))
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
                self._dirty[key] = None
                del self._index[key]
        self._next_deadline = self._earliest_deadline()
        return due

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
