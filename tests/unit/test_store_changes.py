"""A store's writes within a batch: one changelog record per key, sent before the commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.processing.store import PartitionStore, decode_value


def _store(path: Path, changelog: list[tuple[bytes, bytes | None]]) -> PartitionStore:
    return PartitionStore("things", path, "cl", 0, lambda _t, _p, k, v: changelog.append((k, v)))


def test_a_key_written_many_times_in_a_batch_is_one_changelog_record(tmp_path: Path) -> None:
    changelog: list[tuple[bytes, bytes | None]] = []
    store = _store(tmp_path, changelog)
    entry = {"events": []}
    for i in range(3):
        entry["events"].append(i)
        store.put("k", entry)
    store.put("gone", {"n": 1})
    store.delete("gone")
    assert store.get("k") is entry, "a batch reads its own write back without decoding"
    assert changelog == []
    assert store.send_changes() == 2
    assert [(k, None if v is None else decode_value(v)) for k, v in changelog] == [
        (b"k", {"events": [0, 1, 2]}), (b"gone", None)
    ]
    store.apply(len(changelog))
    assert store.get("k") == {"events": [0, 1, 2]} and store.get("gone") is None
    assert store.checkpoint == 2
    store.close()


def test_a_write_never_sent_to_the_changelog_is_refused_at_apply(tmp_path: Path) -> None:
    store = _store(tmp_path, [])
    store.put("k", {"n": 1})
    with pytest.raises(RuntimeError, match="never sent to the changelog"):
        store.apply(None)
    store.discard()
    assert store.get("k") is None
    store.close()
