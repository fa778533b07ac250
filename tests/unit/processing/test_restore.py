"""Restore and rebalance branches of the state stores, with a fake changelog consumer.

The real broker cannot stall, truncate a changelog under a store or hand out a checkpoint
past the last stable offset on demand; these fakes can. Branches covered:

- cold restore larger than one batch: one RocksDB write per batch, each with the offset
  it reaches (gaps of aborted records, markers and compaction included);
- a batch bounded by bytes as well as by records;
- tombstones: a delete inside a batch, and of a key the store held before;
- behind the checkpoint: reading continues from the checkpoint;
- ahead of the changelog's end (recreated/truncated topic): wipe, restore from the start;
- checkpoint before the changelog's first offset: wipe, restore from the first offset;
- checkpoint past the last stable offset but within the high watermark (markers of the
  store's own last commit not yet written): not ahead, nothing wiped or read;
- a tail of transaction markers only: the position, not a record, reaches the end;
- no-progress deadline: fires naming store, partition, position and end, keeps the
  batches applied, and is retriable; it does not fire while progress goes on far past
  what the old total deadline allowed; progress is logged while a restore runs long and
  reported to the worker's liveness (a long restore must not fail /healthz);
- a consumer error mid-restore keeps the batches applied before it;
- a wipe interrupted before its last write still calls for a wipe on the next start;
- revoked (or lost) partitions: their stores are closed and dropped, RocksDB's lock is
  released so a re-assigned partition reopens, and the runtime's revoke callback does it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from streams.processing.exceptions import StoreClosedError
from streams.processing.restore import RestoreError, RestoreStalledError, restore_stores
from streams.processing.store import PartitionStore, close_partitions, encode_value

CHANGELOG = "app-things-changelog"
Record = tuple[int, bytes, bytes | None]  # offset, key, value (None: tombstone)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeChangelog:
    """One changelog partition as the broker would serve it: committed records with their
    offsets (gaps where markers or aborted records lie), low/stable/high offsets."""

    def __init__(self, records: list[Record], *, low: int = 0, stable: int | None = None,
                 high: int | None = None) -> None:
        self.records = records
        self.low = low
        self.stable = stable if stable is not None else (records[-1][0] + 1 if records else 0)
        self.high = high if high is not None else self.stable


class FakeConsumer:
    """Serves ``logs`` like a read_committed consumer; each consume() call advances the
    clock by ``tick`` seconds and returns at most ``per_call`` records per partition, on
    every ``every``-th call only.
    ``stall_after`` consume calls it returns nothing; ``fail_after`` it returns an error
    (of ``fail_partition``; None: of the client)."""

    def __init__(self, config: dict[str, Any], logs: dict[int, FakeChangelog], clock: FakeClock,
                 *, per_call: int = 1000, tick: float = 0.0, stall_after: int | None = None,
                 fail_after: int | None = None, fail_partition: int | None = 0,
                 every: int = 1, eof: bool = True) -> None:
        self.committed = config["isolation.level"] == "read_committed"
        self.logs, self.clock = logs, clock
        self.per_call, self.tick = per_call, tick
        self.stall_after, self.fail_after, self.eof = stall_after, fail_after, eof
        self.fail_partition, self.every = fail_partition, every
        self.positions: dict[int, int] = {}
        self.paused: set[int] = set()
        self.eof_sent: set[int] = set()
        self.calls = 0
        self.closed = False

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = -1,
                              cached: bool = False) -> tuple[int, int]:
        log = self.logs[partition.partition]
        return log.low, log.stable if self.committed else log.high

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = {tp.partition: tp.offset for tp in partitions}

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        self.clock.now += self.tick
        self.calls += 1
        if self.stall_after is not None and self.calls > self.stall_after:
            return []
        if self.calls % self.every:
            return []  # nothing fetched this time
        if self.fail_after is not None and self.calls > self.fail_after:
            err = KafkaError(KafkaError._TRANSPORT, "broker went away")
            if self.fail_partition is None:  # a client-level error: no partition named
                return [Message(error=err)]
            return [Message(topic=CHANGELOG, partition=self.fail_partition, error=err)]
        out: list[Message] = []
        for p, pos in self.positions.items():
            if p in self.paused:
                continue
            log = self.logs[p]
            batch = [r for r in log.records if pos <= r[0] < log.stable][:self.per_call]
            for offset, key, value in batch:
                out.append(Message(topic=CHANGELOG, partition=p, offset=offset, key=key,
                                   value=value))
            if batch:
                self.positions[p] = batch[-1][0] + 1
            elif pos < log.stable:
                self.positions[p] = log.stable  # only markers were left
            if self.eof and self.positions[p] >= log.stable and p not in self.eof_sent:
                self.eof_sent.add(p)
                out.append(Message(topic=CHANGELOG, partition=p, offset=self.positions[p],
                                   error=KafkaError(KafkaError._PARTITION_EOF)))
        return out

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(CHANGELOG, tp.partition, self.positions.get(tp.partition, -1001))
                for tp in partitions]

    def close(self) -> None:
        self.closed = True


class Restorer:
    """Runs restore_stores over fake changelogs and records every consumer it made."""

    def __init__(self, logs: dict[int, FakeChangelog], **fake: Any) -> None:
        self.logs, self.fake = logs, fake
        self.clock = FakeClock()
        self.consumers: list[FakeConsumer] = []

    def factory(self, config: dict[str, Any]) -> FakeConsumer:
        consumer = FakeConsumer(config, self.logs, self.clock, **self.fake)
        self.consumers.append(consumer)
        return consumer

    def __call__(self, stores: list[PartitionStore], *, stall_s: float = 30.0,
                 **options: Any) -> dict[PartitionStore, int]:
        return restore_stores(stores, {}, stall_s, consumer_factory=self.factory,
                              clock=self.clock, **options)


class Recording(PartitionStore):
    """A store that records the offset of every restore write."""

    def __init__(self, path: Path, partition: int = 0) -> None:
        super().__init__("things", path, CHANGELOG, partition, lambda *_a: None)
        self.writes: list[int] = []

    def write_restored(self, batch: Any, position: int) -> None:
        super().write_restored(batch, position)
        self.writes.append(position)


def _records(n: int, start: int = 0, step: int = 1) -> list[Record]:
    return [(start + i * step, f"k{i}".encode(), encode_value(f"v{i}")) for i in range(n)]


def _content(store: PartitionStore) -> dict[str, Any]:
    return {k: v for k, v in store.committed_items()}


def _seed(store: PartitionStore, items: dict[str, Any], checkpoint: int) -> None:
    for k, v in items.items():
        store.put(k, v)
    store.send_changes()
    store.apply(checkpoint)


def test_cold_restore_larger_than_a_batch_writes_each_batch_with_its_offset(
        tmp_path: Path) -> None:
    # Every other offset is a marker or an aborted record: 25 records over offsets 0..48.
    records = _records(25, step=2)
    restore = Restorer({0: FakeChangelog(records, stable=50)}, per_call=7)
    store = Recording(tmp_path)
    assert restore([store], batch_records=10) == {store: 25}
    assert store.writes == [19, 39, 50], "batches of 10 records, then the tail up to the end"
    assert store.checkpoint == 50
    assert len(_content(store)) == 25
    assert restore.consumers[0].closed
    store.close()


def test_a_batch_is_also_bounded_by_bytes(tmp_path: Path) -> None:
    # 100 bytes a record (key and value): three fill a batch of 300 bytes.
    records: list[Record] = [(i, b"k%d" % i, encode_value("x" * 96)) for i in range(10)]
    store = Recording(tmp_path)
    Restorer({0: FakeChangelog(records)})([store], batch_bytes=300)
    assert store.writes == [3, 6, 9, 10]
    store.close()


def test_tombstones_delete_within_a_batch_and_what_the_store_held(tmp_path: Path) -> None:
    store = Recording(tmp_path)
    _seed(store, {"old": 1, "kept": 2}, checkpoint=3)
    records: list[Record] = [(3, b"new", encode_value(1)), (4, b"old", None),
                             (5, b"brief", encode_value(2)), (6, b"brief", None),
                             (8, b"new", encode_value(3))]
    assert Restorer({0: FakeChangelog(records)})([store]) == {store: 5}
    assert _content(store) == {"kept": 2, "new": 3}
    assert store.checkpoint == 9
    store.close()


def test_a_store_behind_continues_from_its_checkpoint(tmp_path: Path) -> None:
    store = Recording(tmp_path)
    _seed(store, {"k0": "v0"}, checkpoint=6)
    restore = Restorer({0: FakeChangelog(_records(10))})
    assert restore([store]) == {store: 4}, "offsets 6..9 only"
    assert restore.consumers[0].calls >= 1
    assert sorted(_content(store)) == ["k0", "k6", "k7", "k8", "k9"]
    store.close()


def test_a_checkpoint_ahead_of_the_changelog_wipes_and_restores_from_the_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Recording(tmp_path)
    _seed(store, {"stale": 1}, checkpoint=500)  # the changelog was recreated since
    with caplog.at_level(logging.WARNING):
        assert Restorer({0: FakeChangelog(_records(3))})([store]) == {store: 3}
    assert sorted(_content(store)) == ["k0", "k1", "k2"], "nothing of the old store is left"
    assert store.checkpoint == 3
    assert "checkpoint 500 is outside its changelog" in caplog.text
    store.close()


def test_a_checkpoint_before_the_changelog_start_wipes_and_restores_from_it(
        tmp_path: Path) -> None:
    store = Recording(tmp_path)
    _seed(store, {"stale": 1}, checkpoint=2)
    log = FakeChangelog(_records(4, start=5), low=5)  # offsets 2..4 were deleted
    assert Restorer({0: log})([store]) == {store: 4}
    assert sorted(_content(store)) == ["k0", "k1", "k2", "k3"]
    store.close()


def test_a_checkpoint_past_the_stable_offset_but_within_the_high_watermark_is_kept(
        tmp_path: Path) -> None:
    # The store applied its last commit; that commit's markers are not written yet.
    store = Recording(tmp_path)
    _seed(store, {"mine": 1}, checkpoint=12)
    restore = Restorer({0: FakeChangelog(_records(10), stable=10, high=13)})
    assert restore([store]) == {store: 0}
    assert _content(store) == {"mine": 1} and store.checkpoint == 12
    assert [c.committed for c in restore.consumers] == [True, False]
    assert all(c.closed for c in restore.consumers)
    store.close()


def test_a_tail_of_markers_is_passed_by_position_without_an_eof(tmp_path: Path) -> None:
    store = Recording(tmp_path)
    restore = Restorer({0: FakeChangelog(_records(3), stable=6)}, eof=False)
    assert restore([store]) == {store: 3}
    assert store.checkpoint == 6
    store.close()


def test_no_progress_raises_naming_the_partition_and_keeps_applied_batches(
        tmp_path: Path) -> None:
    store = Recording(tmp_path)
    restore = Restorer({0: FakeChangelog(_records(30))}, per_call=10, tick=1.0, stall_after=1)
    beats: list[float] = []
    with pytest.raises(RestoreStalledError) as caught:
        restore([store], stall_s=20, batch_records=10, on_progress=lambda: beats.append(1))
    assert beats == [1], "a stalled restore reports no progress to the liveness"
    message = str(caught.value)
    assert "store things[0]" in message and CHANGELOG in message
    assert "at offset 10 of 30" in message and "no progress for 20s" in message
    assert caught.value.retriable
    assert store.checkpoint == 10, "the batch applied before the stall stays applied"
    assert restore.clock.now - 1000.0 <= 23, "raised soon after the deadline, not later"
    # The retry resumes from the applied batch.
    assert Restorer({0: FakeChangelog(_records(30))})([store]) == {store: 20}
    assert len(_content(store)) == 30
    store.close()


def test_slow_steady_progress_is_never_stalled(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # One record every 3 s (idle polls between) for 900 s: 90 times the no-progress
    # deadline, and far past the total deadline (10 s here) the restore used to have.
    store = Recording(tmp_path)
    restore = Restorer({0: FakeChangelog(_records(300))}, per_call=1, tick=1.0, every=3)
    beats: list[float] = []
    with caplog.at_level(logging.INFO, logger="streams.processing.restore"):
        assert restore([store], stall_s=10, batch_records=100,
                       on_progress=lambda: beats.append(restore.clock.now)) == {store: 300}
    assert restore.clock.now - 1000.0 >= 900
    assert len(beats) >= 300, "each move is reported to the worker's liveness"
    progress = [r.getMessage() for r in caplog.records if "offsets/s" in r.getMessage()]
    assert len(progress) >= 150, "about every 5 s of a long restore"
    assert "restoring store things[0] from app-things-changelog: offset" in progress[0]
    store.close()


def test_a_consumer_error_keeps_the_batches_applied_before_it(tmp_path: Path) -> None:
    store = Recording(tmp_path)
    restore = Restorer({0: FakeChangelog(_records(30))}, per_call=15, fail_after=1)
    with pytest.raises(RestoreError, match=r"broker went away at offset 15"):
        restore([store], batch_records=10)
    assert store.checkpoint == 15, "the full batch and the partial one were applied"
    assert len(_content(store)) == 15
    store.close()


def test_a_client_level_error_is_left_to_the_no_progress_deadline(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Recording(tmp_path)
    restore = Restorer({0: FakeChangelog(_records(30))}, per_call=15, tick=1.0, fail_after=1,
                       fail_partition=None)
    with caplog.at_level(logging.WARNING), pytest.raises(RestoreStalledError):
        restore([store], stall_s=10, batch_records=10)
    assert "restore consumer: broker went away" in caplog.text
    assert store.checkpoint == 15
    store.close()


def test_an_interrupted_wipe_still_calls_for_a_wipe(tmp_path: Path) -> None:
    store = Recording(tmp_path)
    _seed(store, {f"s{i}": i for i in range(5)}, checkpoint=500)
    real_db = store._db

    class CrashingDb:
        """The store's RocksDB, failing every write after the first."""

        def __init__(self) -> None:
            self.writes = 0

        def write(self, batch: Any) -> None:
            self.writes += 1
            if self.writes > 1:
                raise OSError("disk gone")
            real_db.write(batch)

        def __getattr__(self, name: str) -> Any:
            return getattr(real_db, name)

    store._db = CrashingDb()  # type: ignore[assignment]
    with pytest.raises(OSError, match="disk gone"):
        store.wipe(chunk=2)
    store._db = real_db
    assert len(_content(store)) == 3 and store.checkpoint == 500
    assert Restorer({0: FakeChangelog(_records(2))})([store]) == {store: 2}
    assert sorted(_content(store)) == ["k0", "k1"]
    store.close()


def test_stores_of_revoked_partitions_are_closed_and_reopen(tmp_path: Path) -> None:
    stores = {(name, p): PartitionStore(name, tmp_path / name / str(p), CHANGELOG, p,
                                        lambda *_a: None)
              for name in ("a", "b") for p in (0, 1)}
    _seed(stores[("a", 1)], {"x": 1}, checkpoint=1)
    kept = stores[("a", 0)]
    closed = close_partitions(stores, [1])
    assert sorted((s.name, s.partition) for s in closed) == [("a", 1), ("b", 1)]
    assert sorted(stores) == [("a", 0), ("b", 0)]
    assert kept.get("anything") is None, "stores of kept partitions stay open"
    # A store used after close names itself (retriable: the worker restarts, nothing is
    # dead-lettered), instead of rocksdict's own error.
    for call in (lambda s: s.get("x"), lambda s: s.put("x", 2), lambda s: s.delete("x"),
                 lambda s: list(s.committed_items())):
        with pytest.raises(StoreClosedError, match=r"store a\[1\]: .* after close") as info:
            call(closed[0])
        assert info.value.retriable
    # RocksDB's lock is released: the partition reopens on re-assignment, data intact.
    again = PartitionStore("a", tmp_path / "a" / "1", CHANGELOG, 1, lambda *_a: None)
    assert again.get("x") == 1 and again.checkpoint == 1
    for store in [again, *stores.values()]:
        store.close()


def test_the_revoke_callback_closes_the_revoked_stores(tmp_path: Path) -> None:
    from streams.common.settings import load_settings
    from streams.processing.rebalance import Ownership

    class Assigned:
        def assignment(self) -> list[TopicPartition]:
            return [TopicPartition("in", 0), TopicPartition("in", 1)]

    stores = {("a", p): PartitionStore("a", tmp_path / str(p), CHANGELOG, p, lambda *_a: None)
              for p in (0, 1)}
    ownership = Ownership(load_settings(data_dir=tmp_path), [], stores, lambda *_a: None)
    ownership.on_revoke(Assigned(), [TopicPartition("in", 1)])  # type: ignore[arg-type]
    assert list(stores) == [("a", 0)]
    assert ownership.owned == frozenset({0})
    reopened = PartitionStore("a", tmp_path / "1", CHANGELOG, 1, lambda *_a: None)
    for store in [reopened, *stores.values()]:
        store.close()
