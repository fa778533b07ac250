"""``memstream export-dataset``: memories as of known offsets → dataset file + manifest."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from streams.common.private_files import private_dir
from streams.common.settings import Settings
from streams.ops.export.dataset import COLUMNS, FORMATS, WRITERS, RowFilter, dataset_rows
from streams.ops.export.exceptions import ExportError
from streams.ops.export.files import manifest_path, write_atomically
from streams.ops.export.source import Progress, read_memories

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1


def export_dataset(
    settings: Settings,
    out: Path,
    *,
    fmt: str = "jsonl",
    row_filter: RowFilter | None = None,
    to_offsets: dict[int, int] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the dataset to ``out`` and its manifest beside it; return the manifest."""
    if fmt not in FORMATS:
        raise ExportError(f"export-dataset: format {fmt!r} is not one of {', '.join(FORMATS)}")
    row_filter = row_filter or RowFilter()
    snapshot = read_memories(settings, to_offsets=to_offsets, progress=progress)
    rows = dataset_rows(snapshot.memories.values(), row_filter)
    private_dir(out.parent, restrict_existing=False)
    digest = write_atomically(out, lambda tmp: WRITERS[fmt](rows, tmp))
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "file": out.name,
        "format": fmt,
        "sha256": digest,
        "rows": len(rows),
        "columns": list(COLUMNS),
        "source": {
            "topic": snapshot.topic,
            # per partition: every record below this offset is covered
            "offsets": {str(p): o for p, o in sorted(snapshot.offsets.items())},
            "live_memories": len(snapshot.memories),
        },
        "scorer_versions": sorted({r["scorer_version"] for r in rows if r["scorer_version"]}),
        "filters": row_filter.describe(),
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    write_atomically(manifest_path(out), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    logger.info("exported %d rows of %s to %s", len(rows), snapshot.topic, out)
    return manifest


def offsets_from_manifest(path: Path, topic: str) -> dict[int, int]:
    """The offsets of ``topic`` an earlier export covered (its ``source.offsets``)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        source = manifest["source"]
        offsets = {int(p): int(o) for p, o in source["offsets"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ExportError(f"--to-offsets {path}: not a readable export manifest ({exc})") from exc
    if source.get("topic") != topic:
        raise ExportError(
            f"--to-offsets {path}: covers topic {source.get('topic')!r}, not {topic!r}"
        )
    return offsets
