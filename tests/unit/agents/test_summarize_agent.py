"""The summarize agent over the real RocksDB partition store: an aborted batch leaves no
trace (the agent rebuilds from committed state), and its retry emits what it would have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.summarize import STORE, SummarizeAgent
from streams.common.observability import WorkerMetrics
from streams.processing.api import InputRecord
from streams.processing.context import StoreMap
from streams.processing.store import PartitionStore

HOUR = 3_600_000
MIN = 60_000
T0 = 1_793_520_000_000


class Context(StoreMap):
    """Stores plus a captured ``send``: what BatchContext offers the agent."""

    def __init__(self, stores: dict[tuple[str, int], PartitionStore]) -> None:
        super().__init__(stores)
        self.sent: list[dict[str, Any]] = []

    def send(self, topic: str, record: dict[str, Any], *, key: str) -> None:
        assert topic == "summaries.v1" and key == f"{record['tenant']}:{record['summary_id']}"
        self.sent.append(record)


def scored(event_id: str, at: int, session: str = "s1", revision: int = 0,
           value: float | None = None) -> InputRecord:
    return InputRecord("scored.v1", 0, 0, b"acme", b"", {
        "tenant": "acme", "session_id": session, "event_id": event_id, "event_time": at,
        "kind": "QUERY", "text": f"{event_id}: rotate the billing keys", "revision": revision,
        "content_hash": f"h-{event_id}", "value": value, "components": {}})


def open_store(path: Path, changelog: list[tuple[bytes, bytes | None]]) -> PartitionStore:
    return PartitionStore(STORE, path, "cl", 0, lambda _t, _p, k, v: changelog.append((k, v)))


def agent() -> SummarizeAgent:
    return SummarizeAgent(window_s=3600, grace_s=1200, max_highlights=3, metrics=WorkerMetrics())


BATCH_1 = [scored("a", T0 + MIN), scored("b", T0 + 30 * MIN, session="s2")]
BATCH_2 = [scored("c", T0 + HOUR + 5 * MIN), scored("late", T0 + 50 * MIN),
           scored("a", T0 + MIN, revision=1, value=0.8)]


def test_aborted_batch_is_forgotten_and_its_retry_emits_the_same(tmp_path: Path) -> None:
    changelog: list[tuple[bytes, bytes | None]] = []
    store = open_store(tmp_path / "a", changelog)
    ctx = Context({(STORE, 0): store})
    summarize = agent()
    summarize.rebuild(frozenset({0}), ctx)
    summarize.process(BATCH_1, ctx)
    store.send_changes()
    store.apply(None)  # committed

    summarize.process(BATCH_2, ctx)
    aborted = list(ctx.sent)
    store.discard()  # the transaction aborted: what the runtime does next
    summarize.rebuild(frozenset({0}), ctx)
    ctx.sent.clear()
    summarize.process(BATCH_2, ctx)
    store.send_changes()
    store.apply(None)
    assert ctx.sent == aborted
    assert [(r["session_id"], r["event_ids"]) for r in ctx.sent] == [
        ("s1", ["a"]), ("s2", ["b"]),  # hour 1 closes at 1:05
        ("s1", ["a", "late"]),  # late within grace: same id again
        ("s1", ["a", "late"]),  # a re-scored: same id again, now with its value
    ]
    assert "value 0.80" in ctx.sent[-1]["text"]
    assert len({r["summary_id"] for r in ctx.sent if r["session_id"] == "s1"}) == 1

    # A fresh agent and store on the same RocksDB files (a restart) continue identically:
    store.close()
    reopened = open_store(tmp_path / "a", changelog)
    ctx2 = Context({(STORE, 0): reopened})
    restarted = agent()
    restarted.rebuild(frozenset({0}), ctx2)
    # the persisted stream time (1:05) says the hour before T0 is past its grace
    restarted.process([scored("before", T0 - 30 * MIN)], ctx2)
    assert restarted.metrics.summary_dropped.labels("late")._value.get() == 1
    restarted.process([scored("d", T0 + 2 * HOUR + MIN), scored("too-late", T0 + 10 * MIN)],
                      ctx2)
    assert [(r["session_id"], r["event_ids"]) for r in ctx2.sent] == [("s1", ["c"])]
    assert restarted.metrics.summary_dropped.labels("late")._value.get() == 2
    reopened.close()


def test_one_changelog_record_per_changed_window_per_batch(tmp_path: Path) -> None:
    changelog: list[tuple[bytes, bytes | None]] = []
    store = open_store(tmp_path / "b", changelog)
    ctx = Context({(STORE, 0): store})
    summarize = agent()
    summarize.rebuild(frozenset({0}), ctx)
    summarize.process([scored(f"e{i}", T0 + i * 1000, session=f"s{i % 3}") for i in range(300)],
                      ctx)
    store.send_changes()
    keys = [k for k, _v in changelog]
    assert len(keys) == len(set(keys)) == 4  # three windows and the stream time
    store.close()


def test_a_delete_command_rederives_the_summary_of_an_evicted_window(tmp_path: Path) -> None:
    from agents.dedupe import memory_id_of_hash
    from streams.processing.store import decode_value

    changelog: list[tuple[bytes, bytes | None]] = []
    store = open_store(tmp_path / "c", changelog)
    ctx = Context({(STORE, 0): store})
    summarize = agent()
    summarize.rebuild(frozenset({0}), ctx)
    summarize.process([scored("secret", T0 + MIN), scored("b", T0 + 2 * MIN),
                       scored("c", T0 + 3 * HOUR)], ctx)  # hour 0 closed and evicted
    store.send_changes()
    store.apply(None)
    assert "secret: rotate" in ctx.sent[0]["text"]
    ctx.sent.clear()
    summarize.rebuild(frozenset({0}), ctx)
    command = InputRecord("commands.v1", 0, 7, b"acme:m", b"", {
        "tenant": "acme", "memory_id": memory_id_of_hash("acme", "h-secret"),
        "event_id": "cmd-1", "action": "DELETE", "event_time": T0 + 4 * HOUR,
        "requested_by": "read-service", "source_event_ids": []})
    summarize.process([command], ctx)
    store.send_changes()
    store.apply(None)
    (again,) = ctx.sent
    assert again["window_start"] == T0 and again["event_ids"] == ["b"]
    assert "secret" not in again["text"] and "secret" not in again["key_terms"]
    latest = {k: v for k, v in changelog}  # the changelog after compaction
    assert not any(b"secret: rotate" in v for v in latest.values() if v is not None)
    assert not any("secret: rotate" in str(decode_value(v)) for v in latest.values() if v)
    store.close()
