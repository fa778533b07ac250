"""Event-time session windows: out-of-order events across hours, grace, eviction, restarts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agents.summarizing import Outcome, ScoredItem, SessionWindows, summarize_window, summary_id
from agents.summarizing.windows import STREAM_TIME_KEY

HOUR = 3_600_000
MIN = 60_000
T0 = 1_793_520_000_000  # 2026-11-01 08:00 UTC, an hour boundary


class DictStore:
    """A state store in a dict; values round-trip through JSON as in the real store."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str) -> Any | None:
        raw = self.data.get(key)
        return None if raw is None else json.loads(raw)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def committed_items(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for key, raw in sorted(self.data.items()):
            if key.startswith(prefix):
                yield key, json.loads(raw)


def item(
    event_id: str,
    at: int,
    *,
    session: str = "s1",
    revision: int = 0,
    value: float | None = None,
    text: str | None = None,
    kind: str = "QUERY",
    outcome: float | None = None,
) -> ScoredItem:
    text = text or f"How do I rotate the billing keys for {event_id}?"
    return ScoredItem(
        tenant="acme", session_id=session, event_id=event_id, event_time=at,
        revision=revision, kind=kind, text=text, content_hash=f"h-{text}", value=value,
        outcome_quality=outcome,
    )


@pytest.fixture
def windows_factory():  # type: ignore[no-untyped-def]
    def make(store: DictStore | None = None, grace_ms: int = 10 * MIN) -> SessionWindows:
        return SessionWindows(store or DictStore(), window_ms=HOUR, grace_ms=grace_ms)

    return make


def test_window_closes_when_stream_time_passes_its_end(windows_factory) -> None:  # type: ignore[no-untyped-def]
    windows = windows_factory()
    assert windows.add(item("a", T0 + 5 * MIN)).emissions == []
    assert windows.add(item("b", T0 + 59 * MIN)).emissions == []
    result = windows.add(item("c", T0 + HOUR + MIN))  # first event of the next hour
    assert [e.first for e in result.emissions] == [True]
    window = result.emissions[0].window
    assert sorted(window["events"]) == ["a", "b"]
    assert summarize_window(window).summary_id == summary_id("acme", "s1", T0)


def test_out_of_order_across_hours(windows_factory) -> None:  # type: ignore[no-untyped-def]
    windows = windows_factory(grace_ms=30 * MIN)
    out = []
    # hour 2 arrives first, then hour 1 (late, within grace), then hour 3, then hour 2 again
    for event in [item("h2-a", T0 + HOUR + 10 * MIN), item("h1-a", T0 + 20 * MIN),
                  item("h1-b", T0 + 40 * MIN), item("h3-a", T0 + 2 * HOUR + 5 * MIN),
                  item("h2-b", T0 + HOUR + 50 * MIN), item("h4-a", T0 + 3 * HOUR + 40 * MIN)]:
        result = windows.add(event)
        assert result.outcome is Outcome.ADDED, event.event_id
        out += [(e.window["start"], e.first, sorted(e.window["events"])) for e in result.emissions]
    assert out == [
        (T0, True, ["h1-a"]),  # created after stream time passed its end: emitted at once
        (T0, False, ["h1-a", "h1-b"]),  # late within grace: same window, re-emitted
        (T0 + HOUR, True, ["h2-a"]),  # closed by hour 3's first event
        (T0 + HOUR, False, ["h2-a", "h2-b"]),  # late within grace
        (T0 + 2 * HOUR, True, ["h3-a"]),  # closed (and hour 2 evicted) by hour 4
    ]
    assert windows.open_windows == 1  # hour 4: hours 1-3 are past end + grace


def test_window_created_late_within_grace_emits_immediately(windows_factory) -> None:  # type: ignore[no-untyped-def]
    windows = windows_factory(grace_ms=15 * MIN)
    windows.add(item("other", T0 + HOUR + 5 * MIN, session="s2"))
    result = windows.add(item("a", T0 + 30 * MIN, session="s1"))
    assert result.outcome is Outcome.ADDED
    assert [(e.window["session_id"], e.first) for e in result.emissions] == [("s1", True)]
    # and it is not emitted a second time as "first" when stream time moves on
    later = windows.add(item("z", T0 + HOUR + 20 * MIN, session="s2")).emissions
    assert later == []


def test_late_within_grace_reemits_updated_summary_with_same_id(windows_factory) -> None:  # type: ignore[no-untyped-def]
    windows = windows_factory(grace_ms=15 * MIN)
    windows.add(item("a", T0 + 10 * MIN))
    first = windows.add(item("b", T0 + HOUR + 2 * MIN)).emissions  # closes hour 1
    assert [e.first for e in first] == [True]
    late = windows.add(item("late", T0 + 50 * MIN))  # 12 min after the end: within grace
    assert late.outcome is Outcome.ADDED
    assert [e.first for e in late.emissions] == [False]
    before = summarize_window(first[0].window)
    after = summarize_window(late.emissions[0].window)
    assert after.summary_id == before.summary_id
    assert after.event_ids == ("a", "late") and before.event_ids == ("a",)


def test_late_beyond_grace_is_dropped(windows_factory) -> None:  # type: ignore[no-untyped-def]
    windows = windows_factory(grace_ms=10 * MIN)
    windows.add(item("a", T0 + 10 * MIN))
    windows.add(item("b", T0 + HOUR + 11 * MIN))  # past hour 1's end + grace: evicted
    assert windows.open_windows == 1
    result = windows.add(item("too-late", T0 + 30 * MIN))
    assert result.outcome is Outcome.LATE and result.emissions == []
    assert windows.open_windows == 1


def test_first_close_and_eviction_in_one_step_still_emits(windows_factory) -> None:  # type: ignore[no-untyped-def]
    windows = windows_factory(grace_ms=0)
    windows.add(item("a", T0 + 10 * MIN))
    result = windows.add(item("b", T0 + 5 * HOUR))
    assert [(e.window["start"], e.first) for e in result.emissions] == [(T0, True)]
    assert windows.open_windows == 1


def test_latest_revision_wins_and_older_revisions_are_ignored(windows_factory) -> None:  # type: ignore[no-untyped-def]
    windows = windows_factory()
    windows.add(item("a", T0 + MIN, revision=0, value=None))
    windows.add(item("a", T0 + MIN, revision=2, value=0.9))
    assert windows.add(item("a", T0 + MIN, revision=1, value=0.1)).outcome is Outcome.DUPLICATE
    assert windows.add(item("a", T0 + MIN, revision=2, value=0.9)).outcome is Outcome.DUPLICATE
    window = windows.add(item("z", T0 + 2 * HOUR)).emissions[0].window
    summary = summarize_window(window)
    assert summary.event_ids == ("a",)
    assert summary.highlights[0].value == 0.9


def test_rescore_of_closed_window_within_grace_reemits(windows_factory) -> None:  # type: ignore[no-untyped-def]
    windows = windows_factory(grace_ms=30 * MIN)
    windows.add(item("a", T0 + MIN))
    windows.add(item("b", T0 + HOUR + MIN))
    result = windows.add(item("a", T0 + MIN, revision=1, value=0.7))
    assert result.outcome is Outcome.REVISED
    assert [e.first for e in result.emissions] == [False]


def test_sessions_have_separate_windows_closed_in_order(windows_factory) -> None:  # type: ignore[no-untyped-def]
    windows = windows_factory()
    windows.add(item("b1", T0 + HOUR + MIN, session="s2"))
    windows.add(item("a1", T0 + MIN, session="s1"))
    windows.add(item("a2", T0 + HOUR + 2 * MIN, session="s1"))
    result = windows.add(item("x", T0 + 3 * HOUR, session="s3"))
    order = [(e.window["start"], e.window["session_id"]) for e in result.emissions]
    # s1's hour 1 closed earlier (stream time passed T0+1h); here hour 2 of s1 and s2
    assert order == [(T0 + HOUR, "s1"), (T0 + HOUR, "s2")]


def test_stream_time_and_windows_survive_a_restart(windows_factory) -> None:  # type: ignore[no-untyped-def]
    store = DictStore()
    windows = windows_factory(store)
    windows.add(item("a", T0 + 10 * MIN))
    windows.add(item("b", T0 + HOUR + 30 * MIN))  # hour 1 evicted (grace 10 min)
    assert store.get(STREAM_TIME_KEY) is None, "nothing is written before the batch ends"
    windows.flush()
    assert store.get(STREAM_TIME_KEY) == T0 + HOUR + 30 * MIN
    restarted = windows_factory(store)
    assert restarted.stream_time == T0 + HOUR + 30 * MIN
    assert restarted.add(item("late", T0 + 20 * MIN)).outcome is Outcome.LATE
    closed = restarted.add(item("c", T0 + 2 * HOUR + MIN)).emissions
    assert [sorted(e.window["events"]) for e in closed] == [["b"]]


def test_same_input_in_same_order_gives_identical_summaries(windows_factory) -> None:  # type: ignore[no-untyped-def]
    events = [item(f"e{i}", T0 + (i * 7919 % 300) * MIN, session=f"s{i % 3}",
                   value=(i % 5) / 5 or None) for i in range(120)]

    def run() -> list[Any]:
        windows = windows_factory(grace_ms=90 * MIN)
        out = []
        for event in events + [item("end", T0 + 10 * HOUR)]:
            out += [summarize_window(e.window) for e in windows.add(event).emissions]
        return out

    assert run() == run()


def test_a_batch_writes_each_changed_window_once(windows_factory) -> None:  # type: ignore[no-untyped-def]
    store = DictStore()
    writes: list[str] = []
    put = store.put
    store.put = lambda key, value: (writes.append(key), put(key, value))  # type: ignore[method-assign]
    windows = windows_factory(store)
    for i in range(50):
        windows.add(item(f"e{i}", T0 + i * MIN, session=f"s{i % 2}"))
    windows.flush()
    assert sorted(writes) == sorted(
        [STREAM_TIME_KEY, *{k for k in store.data if k != STREAM_TIME_KEY}])
    assert len(writes) == 3  # the windows of s0 and s1, and the stream time
    restarted = windows_factory(store)
    assert restarted.open_windows == windows.open_windows == 2


# -- forgetting: a deleted memory leaves every summary that quoted it ------------------------
SECRET = "The staging database password is hunter2-prod."
NEAR_SECRET = "the staging db password is hunter2-prod!!"  # merged into it as a near duplicate


def quoted(window: dict[str, Any]) -> str:
    return summarize_window(window).text + " ".join(summarize_window(window).key_terms)


def test_forget_rederives_closed_and_open_windows_and_keeps_the_memory_out(
    windows_factory,  # type: ignore[no-untyped-def]
) -> None:
    store = DictStore()
    windows = windows_factory(store, grace_ms=10 * MIN)
    windows.add(item("a", T0 + 5 * MIN, text=SECRET))
    windows.add(item("b", T0 + 6 * MIN, text="How do I rotate the billing keys?"))
    windows.add(item("near", T0 + 7 * MIN, text=NEAR_SECRET))
    closed = windows.add(item("c", T0 + 2 * HOUR, text=SECRET)).emissions  # hour 0 closed
    assert "hunter2" in quoted(closed[0].window)
    windows.add(item("d", T0 + 2 * HOUR + MIN, text="Lunch is at noon."))
    windows.flush()
    assert any(k.startswith("c\x00acme\x00") for k in store.data), "hour 0 was archived"

    from agents.dedupe import memory_id_of_hash
    mid = memory_id_of_hash("acme", f"h-{SECRET}")
    again = windows_factory(store)  # a restarted worker: the archive is in the store
    emissions = again.forget("acme", mid, ["a", "near"])
    assert [(e.window["start"], e.first) for e in emissions] == [(T0, False)], \
        "the closed window is emitted again; the open one is not emitted yet"
    assert sorted(emissions[0].window["events"]) == ["b"]
    assert "hunter2" not in quoted(emissions[0].window)
    again.flush()
    assert "hunter2" not in json.dumps(store.data), "no copy of the text left in the state"

    # Later: the same content (another event id) and the near duplicate's id stay out.
    assert again.add(item("e", T0 + 2 * HOUR + 2 * MIN, text=SECRET)).outcome is \
        Outcome.FORGOTTEN
    out = again.add(item("z", T0 + 4 * HOUR, text="Deploy on Friday.")).emissions
    assert [sorted(e.window["events"]) for e in out] == [["d"]]


def test_forgotten_events_still_move_stream_time(windows_factory) -> None:  # type: ignore[no-untyped-def]
    """A replay may read the delete before the event; windows must close alike."""
    from agents.dedupe import memory_id_of_hash
    windows = windows_factory()
    windows.add(item("a", T0 + 5 * MIN))
    windows.forget("acme", memory_id_of_hash("acme", f"h-{SECRET}"), [])
    result = windows.add(item("s", T0 + HOUR + MIN, text=SECRET))
    assert result.outcome is Outcome.FORGOTTEN
    assert [sorted(e.window["events"]) for e in result.emissions] == [["a"]]
