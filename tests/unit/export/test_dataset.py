"""Dataset rows, deterministic files in both formats, and atomic writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.ops.export.dataset import COLUMNS, WRITERS, RowFilter, dataset_rows
from streams.ops.export.files import manifest_path, sha256_of, write_atomically


def memory(memory_id: str, value: float | None, *, tenant: str = "acme",
           when: datetime = datetime(2026, 11, 1, 9, tzinfo=UTC), **extra: Any) -> dict[str, Any]:
    return {
        "tenant": tenant, "memory_id": memory_id, "text": f"text of {memory_id} — ünïcode",
        "value": value, "confidence": 0.0 if value is None else 0.8, "occurrence_count": 2,
        "source_event_ids": ["e2", "e1"], "kind": "QUERY", "content_hash": f"h{memory_id}",
        "scorer_version": None if value is None else "value-scorer/1", "event_time": when,
        "deleted": False, **extra,
    }


MEMORIES = [
    memory("m3", 0.9, tenant="globex"),
    memory("m2", 0.2),
    memory("m1", 0.75),
    memory("m4", None),
    memory("m5", 0.5, when=datetime(2026, 11, 3, tzinfo=UTC)),
]


def test_threshold_and_unknown_filtering() -> None:
    rows = dataset_rows(MEMORIES, RowFilter(min_value=0.5))
    assert [(r["tenant"], r["memory_id"]) for r in rows] == [
        ("acme", "m1"), ("acme", "m5"), ("globex", "m3")]
    with_unknown = dataset_rows(MEMORIES, RowFilter(min_value=0.5, include_unknown=True))
    assert [r["memory_id"] for r in with_unknown] == ["m1", "m4", "m5", "m3"]
    assert [r["memory_id"] for r in dataset_rows(MEMORIES, RowFilter())] == [
        "m1", "m2", "m5", "m3"], "unknown values are excluded by default"


def test_superseded_memories_are_left_out_unless_asked_for() -> None:
    changed = datetime(2026, 11, 2, tzinfo=UTC)
    memories = [
        memory("old", 0.9, superseded_by="new", superseded_at=changed,
               valid_from=datetime(2026, 11, 1, tzinfo=UTC)),
        memory("new", 0.9, supersedes="old", valid_from=changed, when=changed),
    ]
    (current,) = dataset_rows(memories, RowFilter())
    assert (current["memory_id"], current["supersedes"], current["valid_until_ms"]) == (
        "new", "old", None)
    assert current["valid_from_ms"] == int(changed.timestamp() * 1000)
    both = dataset_rows(memories, RowFilter(include_superseded=True))
    old = next(r for r in both if r["memory_id"] == "old")
    assert (old["superseded_by"], old["valid_until_ms"]) == (
        "new", int(changed.timestamp() * 1000))
    assert RowFilter(include_superseded=True).describe()["include_superseded"] is True


def test_since_filter_and_row_shape() -> None:
    since = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)
    rows = dataset_rows(MEMORIES, RowFilter(since_ms=since))
    assert [r["memory_id"] for r in rows] == ["m5"]
    row = rows[0]
    assert tuple(row) == COLUMNS
    assert row["source_event_ids"] == ["e1", "e2"] and row["occurrence_count"] == 2
    assert row["event_time_ms"] == since + 24 * 3600 * 1000


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_same_rows_give_identical_bytes(fmt: str, tmp_path: Path) -> None:
    rows = dataset_rows(MEMORIES, RowFilter(include_unknown=True))
    digests = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.{fmt}"
        digests.append(write_atomically(path, lambda tmp: WRITERS[fmt](rows, tmp)))
        assert sha256_of(path) == digests[-1]
    assert (tmp_path / f"a.{fmt}").read_bytes() == (tmp_path / f"b.{fmt}").read_bytes()
    assert digests[0] == digests[1]


def test_parquet_round_trips_rows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    rows = dataset_rows(MEMORIES, RowFilter(include_unknown=True))
    WRITERS["parquet"](rows, tmp_path / "d.parquet")
    table = pq.read_table(tmp_path / "d.parquet")
    assert table.column_names == list(COLUMNS)
    assert table.to_pylist() == rows


def test_jsonl_rows_are_sorted_json_lines(tmp_path: Path) -> None:
    rows = dataset_rows(MEMORIES, RowFilter())
    WRITERS["jsonl"](rows, tmp_path / "d.jsonl")
    lines = (tmp_path / "d.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert "ünïcode" in lines[0]


def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "dataset.jsonl"
    target.write_text("previous complete export\n")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text('{"partial": ')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(target, half_then_crash)
    assert target.read_text() == "previous complete export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.jsonl"]


def test_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "dataset.parquet"
    with pytest.raises(Exception, match="non-nullable"):  # pyarrow rejects the bad row
        write_atomically(target, lambda tmp: WRITERS["parquet"]([{"tenant": "x"}], tmp))
    assert list(tmp_path.iterdir()) == []
    assert manifest_path(target).name == "dataset.parquet.manifest.json"
