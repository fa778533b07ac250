"""Training-dataset rows from memories, and their deterministic files.

One row per live memory (the compacted topic already holds one record per memory, and
a memory id is a function of tenant and normalized content, so rows never repeat a
content). A memory whose value was superseded by a newer one is left out unless asked
for; its row then says which memory superseded it and until when it held. Rows are
sorted by (tenant, memory id) and written with fixed options and no timestamps, so two
exports of the same offsets are byte-identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.common.codec import to_millis

FORMATS = ("jsonl", "parquet")
COLUMNS = (
    "tenant",
    "memory_id",
    "text",
    "value",
    "confidence",
    "occurrence_count",
    "source_event_ids",
    "kind",
    "content_hash",
    "scorer_version",
    "event_time_ms",
    "valid_from_ms",
    "valid_until_ms",
    "supersedes",
    "superseded_by",
)


@dataclass(frozen=True)
class RowFilter:
    """Which memories become rows: known value >= ``min_value`` (unknown ones only with
    ``include_unknown``), last changed at or after ``since_ms`` when given; superseded
    memories (an older value of a changed fact) only with ``include_superseded``."""

    min_value: float = 0.0
    since_ms: int | None = None
    include_unknown: bool = False
    include_superseded: bool = False

    def describe(self) -> dict[str, Any]:
        """For the manifest."""
        return {
            "min_value": self.min_value,
            "since_ms": self.since_ms,
            "include_unknown": self.include_unknown,
            "include_superseded": self.include_superseded,
        }


def dataset_rows(memories: Iterable[dict[str, Any]], row_filter: RowFilter) -> list[dict[str, Any]]:
    """The rows of the memories that pass ``row_filter``, in a fixed order."""
    rows = []
    for m in memories:
        if m.get("superseded_by") and not row_filter.include_superseded:
            continue
        value = m.get("value")
        if value is None:
            if not row_filter.include_unknown:
                continue
        elif value < row_filter.min_value:
            continue
        event_time = to_millis(m["event_time"])
        if row_filter.since_ms is not None and event_time < row_filter.since_ms:
            continue
        rows.append(
            {
                "tenant": m["tenant"],
                "memory_id": m["memory_id"],
                "text": m["text"],
                "value": value,
                "confidence": float(m["confidence"]),
                "occurrence_count": int(m["occurrence_count"]),
                "source_event_ids": sorted(m["source_event_ids"]),
                "kind": m["kind"],
                "content_hash": m["content_hash"],
                "scorer_version": m.get("scorer_version"),
                "event_time_ms": event_time,
                "valid_from_ms": to_millis(m.get("valid_from") or m["event_time"]),
                "valid_until_ms": None if m.get("superseded_at") is None
                else to_millis(m["superseded_at"]),
                "supersedes": m.get("supersedes"),
                "superseded_by": m.get("superseded_by"),
            }
        )
    rows.sort(key=lambda r: (r["tenant"], r["memory_id"]))
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    """One JSON object a line, keys sorted, UTF-8."""
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for row in rows:
            out.write(json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")))
            out.write("\n")


def write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """Parquet with an explicit schema and fixed writer options (no timestamps inside)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            pa.field("tenant", pa.string(), nullable=False),
            pa.field("memory_id", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("value", pa.float64()),
            pa.field("confidence", pa.float64(), nullable=False),
            pa.field("occurrence_count", pa.int32(), nullable=False),
            pa.field("source_event_ids", pa.list_(pa.string()), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("scorer_version", pa.string()),
            pa.field("event_time_ms", pa.int64(), nullable=False),
            pa.field("valid_from_ms", pa.int64(), nullable=False),
            pa.field("valid_until_ms", pa.int64()),
            pa.field("supersedes", pa.string()),
            pa.field("superseded_by", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(
        table,
        str(path),
        compression="zstd",
        compression_level=3,
        version="2.6",
        data_page_version="1.0",
        use_dictionary=True,
        write_statistics=True,
        row_group_size=64 * 1024,
    )


WRITERS = {"jsonl": write_jsonl, "parquet": write_parquet}
