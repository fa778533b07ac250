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
    """A window whose summary must be (re-)emitted; ``first`` when it just closed."""

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
    """The windows of one partition; the store is the truth, an index of ends is derived."""

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
        for key, value in store.committed_items():
            if key == STREAM_TIME_KEY:
                self.stream_time = int(value)
            elif key.startswith(WINDOW_PREFIX):
                self._index[key] = (int(value["end"]), bool(value["emitted"]))

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
        window = self.store.get(key) or _new_window(item, start, end)
        outcome = _upsert(window, item)
        emissions: list[Emission] = []
        if outcome in (Outcome.ADDED, Outcome.REVISED):
            if end <= self.stream_time:
                # Stream time has already closed this window: (re-)emit it now. A window
                # first created by a late event within grace closes here too.
                emissions.append(Emission(window, first=not window["emitted"]))
                window["emitted"] = True
            self.store.put(key, window)
            self._index[key] = (end, bool(window["emitted"]))
        emissions.extend(self._advance(item.event_time))
        return AddResult(outcome, emissions)

    def _advance(self, event_time: int) -> list[Emission]:
        """Move stream time to ``event_time`` if later: close and evict windows it passes."""
        if event_time <= self.stream_time:
            return []
        self.stream_time = event_time
        self.store.put(STREAM_TIME_KEY, event_time)
        due: list[Emission] = []
        for key, (end, emitted) in sorted(self._index.items(), key=lambda kv: (kv[1][0], kv[0])):
            if end > event_time:
                break
            if not emitted:
                window = self.store.get(key)
                if window is None:  # the index is derived from the store; never expected
                    raise KeyError(f"window {key!r} is indexed but not stored")
                window["emitted"] = True
                due.append(Emission(window, first=True))
                if end + self.grace_ms > event_time:
                    self.store.put(key, window)
                    self._index[key] = (end, True)
            if end + self.grace_ms <= event_time:
                self.store.delete(key)
                del self._index[key]
        return due


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
