"""bench.peers' own arithmetic: the 2-worker ceiling, when a pass is done, start-up phases."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from bench.peer_systems import _caught_up, start_phases
from bench.peers import duplicates, tenant_spread
from streams.common.partitioning import partition_for_tenant
from streams.common.settings import load_settings
from streams.sdk.events import TelemetryEvent


def _events(counts: dict[str, int]) -> list[TelemetryEvent]:
    return [TelemetryEvent(tenant=t, session_id="s", interaction_id="i", kind="NOTE",
                           text="a note of ten words")
            for t, n in counts.items() for _ in range(n)]


def test_two_worker_ceiling_is_all_events_over_the_busier_worker() -> None:
    # tenant-0 → p0 (worker A holds 0 and 1), tenant-1 → p3 and tenant-2 → p2 (worker B).
    assert [partition_for_tenant(f"tenant-{i}", 4) for i in range(3)] == [0, 3, 2]
    spread = tenant_spread(_events({"tenant-0": 10, "tenant-1": 6, "tenant-2": 4}), 4)
    assert spread["worker_events"] == [10, 10]
    assert spread["ceiling"] == 2.0
    lopsided = tenant_spread(_events({"tenant-0": 2, "tenant-1": 9, "tenant-2": 9}), 4)
    assert lopsided["worker_events"] == [2, 18]
    assert round(lopsided["ceiling"], 3) == round(20 / 18, 3)


def test_a_partition_is_done_one_short_of_its_end_and_an_empty_one_always() -> None:
    # Every pass ends with a transaction marker the group never consumes.
    assert _caught_up([10, 0, 7], [11, 0, 8])
    assert not _caught_up([9, 0, 7], [11, 0, 8])
    assert not _caught_up([10, 0, 0], [11, 0, 8])


def test_start_phases_are_read_after_the_spawn_only(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    lines = [
        {"ts": "2026-12-02T02:00:00.000+00:00", "msg": "loaded embedding model x"},  # earlier
        {"ts": "2026-12-02T02:00:11.000+00:00", "msg": "loaded embedding model y"},
        "not json",
        {"ts": "2026-12-02T02:00:11.500+00:00", "msg": "ready"},
        {"ts": "2026-12-02T02:00:12.000+00:00", "msg": "memory indexes rebuilt: 3 memories"},
    ]
    log.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines))
    spawned = datetime.fromisoformat("2026-12-02T02:00:10.000+00:00").timestamp()
    assert start_phases(log, spawned) == {
        "imports + model loaded": 1.0,
        "topics, processor, init_transactions": 1.5,
        "group join + stores + index rebuild": 2.0,
    }


def test_repeats_are_new_events_in_new_interactions_unless_asked_to_reuse_them() -> None:
    events = [TelemetryEvent(tenant="t", session_id="s", interaction_id=i, kind="QUERY",
                             text=f"text {k}") for k, i in enumerate(["a", "a", "b"])]
    fresh = duplicates(events)
    assert [e.text for e in fresh] == [e.text for e in events]
    assert not {e.event_id for e in fresh} & {e.event_id for e in events}
    assert fresh[0].interaction_id == fresh[1].interaction_id != fresh[2].interaction_id
    assert not {e.interaction_id for e in fresh} & {"a", "b"}
    kept = duplicates(events, reuse_interactions=True)
    assert [e.interaction_id for e in kept] == ["a", "a", "b"]


def test_broker_uptime_is_the_process_age_and_none_without_a_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bench.peer_systems as systems

    settings = load_settings()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(1.2)
        monkeypatch.setattr(systems, "broker_pid", lambda _s: child.pid)
        assert 1.0 <= systems.broker_uptime(settings) < 10.0  # type: ignore[operator]
        monkeypatch.setattr(systems, "broker_pid", lambda _s: None)
        assert systems.broker_uptime(settings) is None
    finally:
        child.kill()
        child.wait()
