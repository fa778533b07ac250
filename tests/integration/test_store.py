"""State stores against the real broker: committed writes reach RocksDB and the changelog,
aborted ones reach neither, and a store restores from its changelog after a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from streams.common.settings import Settings
from streams.ops.admin import ensure_changelog_topics
from streams.processing.restore import restore_stores
from streams.processing.store import PartitionStore


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
