"""State stores against the real broker: committed writes reach RocksDB and the changelog,
aborted ones reach neither, and a store restores from its changelog after a crash, batch by
batch: a cold restore larger than one batch, and one killed mid-way that resumes from its
last applied batch. A worker closes the stores of the partitions a rebalance takes away
and reopens them when they come back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from streams.common.admin import ensure_changelog_topics
from streams.common.settings import Settings
from streams.processing.api import Agent
from streams.processing.restore import restore_stores
from streams.processing.store import PartitionStore, encode_value


class Txn:
    """A transactional producer that records the changelog offsets a store's writes reach."""

    def __init__(self, settings: Settings, txid: str) -> None:
        self.producer = Producer({**settings.kafka_client_config(), "transactional.id": txid,
                                  "log_level": 3})
        self.producer.init_transactions(30)
        self.last: dict[tuple[str, int], int] = {}

    def emit(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        def delivered(err: Any, msg: Any) -> None:
            assert err is None, err
            self.last[(topic, partition)] = msg.offset()

        self.producer.produce(topic, value, key, partition=partition, on_delivery=delivered)

    def commit(self) -> None:
        self.producer.flush(30)
        self.producer.commit_transaction(30)


def _store(tmp: Path, txn: Txn, name: str, changelog: str) -> PartitionStore:
    return PartitionStore("things", tmp / name, changelog, 1, txn.emit)


def test_store_commits_aborts_and_restores(stack_settings: Settings, tmp_path: Path) -> None:
    changelog = stack_settings.topic("store-test-things-changelog")
    ensure_changelog_topics(stack_settings, [changelog])
    conf = {**stack_settings.kafka_client_config(), "log_level": 3}
    txn = Txn(stack_settings, f"store-test-{tmp_path.name}")
    store = _store(tmp_path, txn, "a", changelog)

    txn.producer.begin_transaction()
    store.put("k1", {"n": 1, "blob": b"\x00\x01"})
    store.put("k2", {"n": 0})
    store.put("k2", {"n": 2})
    assert store.get("k1") == {"n": 1, "blob": b"\x00\x01"}, "a batch sees its own writes"
    assert store.send_changes() == 2, "one changelog record per key written"
    txn.commit()
    store.apply(txn.last[(changelog, 1)] + 1)

    txn.producer.begin_transaction()
    store.put("k1", {"n": 99})
    store.delete("k2")
    store.send_changes()
    txn.producer.flush(30)
    txn.producer.abort_transaction(30)
    store.discard()
    assert store.get("k1") == {"n": 1, "blob": b"\x00\x01"} and store.get("k2") == {"n": 2}

    # Committed to the log but never applied to RocksDB: a crash right after the commit.
    txn.producer.begin_transaction()
    store.put("k3", {"n": 3})
    store.delete("k2")
    store.send_changes()
    txn.commit()
    assert store.get("k3") == {"n": 3}, "pending writes are visible until applied or discarded"
    store.discard()
    assert store.get("k3") is None
    assert restore_stores([store], conf, 30) == {store: 2}
    assert dict(store.committed_items()) == {"k1": {"n": 1, "blob": b"\x00\x01"}, "k3": {"n": 3}}
    assert restore_stores([store], conf, 30) == {store: 0}, "nothing left after catching up"

    # A store built from nothing reads the committed changelog only (the abort is skipped).
    fresh = _store(tmp_path, txn, "b", changelog)
    other = PartitionStore("things", tmp_path / "c", changelog, 0, txn.emit)
    assert restore_stores([fresh, other], conf, 30) == {fresh: 4, other: 0}
    assert dict(fresh.committed_items()) == dict(store.committed_items())
    assert fresh.checkpoint == store.checkpoint
    for s in (store, fresh, other):
        s.close()


def _fill(settings: Settings, changelog: str, txid: str) -> dict[str, Any]:
    """2,500 changelog records on partition 1 in five transactions, one more aborted between
    them, overwrites and tombstones included; returns the committed end state."""
    txn = Txn(settings, txid)
    expected: dict[str, Any] = {}
    for t in range(6):
        txn.producer.begin_transaction()
        for i in range(500):
            key = f"k{(t * 500 + i) % 1800}"
            value = None if i % 50 == 7 else {"t": t, "i": i}
            txn.emit(changelog, 1, key.encode(), None if value is None else encode_value(value))
            if t != 3:
                if value is None:
                    expected.pop(key, None)
                else:
                    expected[key] = value
        if t == 3:
            txn.producer.flush(30)
            txn.producer.abort_transaction(30)
        else:
            txn.commit()
    return expected


class Counting(PartitionStore):
    """A store that counts the batches a restore writes."""

    writes = 0

    def write_restored(self, batch: Any, position: int) -> None:
        super().write_restored(batch, position)
        self.writes += 1


def test_cold_restore_larger_than_a_batch(stack_settings: Settings, tmp_path: Path) -> None:
    changelog = stack_settings.topic("store-test-things-changelog")
    ensure_changelog_topics(stack_settings, [changelog])
    expected = _fill(stack_settings, changelog, f"store-cold-{tmp_path.name}")
    conf = {**stack_settings.kafka_client_config(), "log_level": 3}
    store = Counting("things", tmp_path / "s", changelog, 1, lambda *_a: None)
    counts = restore_stores([store], conf, 30, batch_records=300)
    assert counts == {store: 2500}, "the aborted transaction's 500 records are skipped"
    assert store.writes == 9, "applied batch by batch (8 full, then the tail), not at once"
    assert dict(store.committed_items()) == expected
    # 3,000 records and 6 transaction markers: the checkpoint is the changelog's end.
    assert store.checkpoint == 3006
    assert restore_stores([store], conf, 30, batch_records=300) == {store: 0}
    store.close()


_KILLED_RESTORE = """
import json, os, signal, sys
from streams.processing.restore import restore_stores
from streams.processing.store import PartitionStore

class Killed(PartitionStore):
    writes = 0
    def write_restored(self, batch, position):
        super().write_restored(batch, position)
        self.writes += 1
        if self.writes == 3:
            os.kill(os.getpid(), signal.SIGKILL)

conf, path, changelog = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
store = Killed("things", __import__("pathlib").Path(path), changelog, 1, lambda *a: None)
restore_stores([store], conf, 30, batch_records=400)
"""


def test_a_restore_killed_mid_way_resumes_from_its_last_batch(
        stack_settings: Settings, tmp_path: Path) -> None:
    changelog = stack_settings.topic("store-test-things-changelog")
    ensure_changelog_topics(stack_settings, [changelog])
    expected = _fill(stack_settings, changelog, f"store-killed-{tmp_path.name}")
    conf = {**stack_settings.kafka_client_config(), "log_level": 3}
    run = subprocess.run(
        [sys.executable, "-c", _KILLED_RESTORE, json.dumps(conf), str(tmp_path / "s"), changelog],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    store = PartitionStore("things", tmp_path / "s", changelog, 1, lambda *_a: None)
    # Three batches of 400 records: offsets 0..1199 of the first three transactions
    # (500 records and a marker each), so the checkpoint is just past record 1,200.
    assert store.checkpoint == 1202
    assert restore_stores([store], conf, 30, batch_records=400) == {store: 2500 - 1200}
    assert dict(store.committed_items()) == expected
    assert store.checkpoint == 3006
    store.close()


class Remembers(Agent):
    """An agent with one store and nothing to do: enough for the runtime to own stores."""

    name = "remembers"
    inputs = ("telemetry.v1",)
    stores = ("seen",)

    def process(self, records: list[Any], ctx: Any) -> None:
        pass


def _owned(worker: Any) -> set[tuple[str, int]]:
    """The stores a running worker holds (copied at once: its thread changes the dict)."""
    return set(worker.stores.copy())


def _wait(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_worker_closes_the_stores_of_partitions_it_loses_and_reopens_them(
        provisioned: Settings, tmp_path: Path) -> None:
    from streams.processing.runtime import Runtime

    base = provisioned.model_copy(update={
        "app_id": f"pytest-{uuid.uuid4().hex[:8]}", "metrics_port": 0,
        # Off: a leaving static member keeps its partitions for a session timeout.
        "static_membership": False})
    workers = {
        w: Runtime(base.model_copy(update={"worker_id": w, "data_dir": tmp_path / w}),
                   [Remembers()])
        for w in ("a", "b")
    }
    ensure_changelog_topics(base, [workers["a"].changelog_topic("seen")])
    stops = {w: threading.Event() for w in workers}
    threads = {w: threading.Thread(target=workers[w].run, args=(stops[w],), daemon=True)
               for w in workers}
    a, b = workers["a"], workers["b"]
    both = {("seen", 0), ("seen", 1)}
    try:
        threads["a"].start()
        _wait("a to own both partitions", lambda: _owned(a) == both)
        first = a.stores.copy()
        threads["b"].start()
        _wait("the partitions to be shared",
              lambda: len(_owned(a)) == 1 and _owned(a) | _owned(b) == both)
        (lost,) = both - _owned(a)
        # a closed its store of the partition b took: RocksDB's lock on it is free.
        path = tmp_path / "a" / "seen" / str(lost[1])
        probe = PartitionStore("seen", path, a.changelog_topic("seen"), lost[1], lambda *_a: None)
        probe.close()
        stops["b"].set()
        threads["b"].join(30)
        _wait("a to own both partitions again", lambda: _owned(a) == both)
        assert a.stores[lost] is not first[lost], "reopened on re-assignment"
        assert a.stores[lost].get("anything") is None and a.stores[lost].checkpoint == 0
    finally:
        for w in workers:
            stops[w].set()
        for w in workers:
            if threads[w].is_alive():
                threads[w].join(30)
