"""``memstream rebuild-index``: the read service's snapshot, rebuilt from the log.

The vectors travel in the memory records, so nothing is re-embedded: a rebuild reads
memories.v1 and summaries.v1 (read_committed) from the beginning, applies them to a fresh
replica and writes a snapshot that replaces the current one.

Decoding the records is Python-bound (fastavro, ~15 µs a record), so one process reads at
most ~35k records/s. The rebuild therefore runs one process per CPU, each over a disjoint
share of the partitions; a tenant lives in one partition, so the shares hold disjoint tenants
and each writes its own files (prefixed ``p<j>-``) into the same new snapshot, described by
one manifest. The shares are separate interpreters started with ``python -m
streams.service.rebuild`` (settings on stdin, progress and the result as JSON lines on
stdout), not ``multiprocessing``: that re-imports the caller's main module, which breaks any
script that calls ``rebuild_index`` without a ``__main__`` guard.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.common.exceptions import MemstreamError, UnavailableError
from streams.common.settings import Settings
from streams.models.embedding_backends import embedding_model_id
from streams.service.feed import ReplicaFeed, feed_topics
from streams.service.replica import Replica
from streams.service.snapshot import SnapshotStore, manifest, paused_gc, write_part

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class RebuildError(MemstreamError):
    """A rebuild process failed; the current snapshot is left as it was."""


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild read and wrote."""

    records: int
    memories: int
    seconds: float
    snapshot: str
    read_s: float = 0.0
    snapshot_s: float = 0.0
    jobs: int = 1

    @property
    def rate(self) -> float:
        """Records applied per second, snapshot write included."""
        return self.records / self.seconds if self.seconds else 0.0


def rebuild_index(
    settings: Settings, progress: Progress | None = None, jobs: int | None = None
) -> RebuildReport:
    """Rebuild the snapshot from the log with ``jobs`` processes (default: one per CPU, at
    most one per partition); replaces the current snapshot only when every share is done."""
    sizes = _feed_partitions(settings)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(sizes)))
    store = SnapshotStore(settings.serve_snapshot_dir)
    started = time.monotonic()
    tmp = store.begin()
    try:
        if jobs == 1:
            parts = [rebuild_share(settings, None, tmp, "", _Reporter(progress))]
        else:
            parts = _rebuild_parallel(settings, balanced_shares(sizes, jobs), tmp, progress)
        model_id = embedding_model_id(settings.embedding_model, settings.embedding_backend)
        # keep=1: the snapshots it replaces may predate deletes the log now holds.
        path = store.commit(tmp, manifest(model_id, 0, feed_topics(settings), parts), keep=1)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.monotonic() - started
    read_s = max(part["read_s"] for part in parts)
    records = sum(part["applied"] for part in parts)
    if progress is not None:  # the totals counted transaction markers too: end the bar at 100%
        progress(records, records)
    return RebuildReport(
        records=records,
        memories=sum(t["memories"] for part in parts for t in part["tenants"]),
        seconds=seconds, snapshot=str(path), read_s=read_s, snapshot_s=seconds - read_s,
        jobs=len(parts),
    )


class _Reporter:
    """Calls ``progress(applied, total)`` after each batch of a feed."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.total: int | None = None

    def __call__(self, feed: ReplicaFeed) -> None:
        if self.total is None:
            self.total = sum(feed.high.values())
        if self.progress is not None:
            self.progress(feed.replica.applied, self.total)


def rebuild_share(settings: Settings, partitions: list[int] | None, tmp: Path, prefix: str,
                  on_batch: Callable[[ReplicaFeed], None]) -> dict[str, Any]:
    """Apply ``partitions`` (None: all) from the beginning, write them into ``tmp`` with
    file names starting with ``prefix``; return the manifest part (plus ``read_s``)."""
    from streams.service.core import index_policy

    model_id = embedding_model_id(settings.embedding_model, settings.embedding_backend)
    replica = Replica(model_id, 0, index_policy(settings))
    started = time.monotonic()
    feed = ReplicaFeed(settings, replica, None, on_batch=on_batch, partitions=partitions)
    with paused_gc():
        feed.run(until_end=True)
    read_s = time.monotonic() - started
    with replica.lock:
        part = write_part(tmp, replica, prefix)
    if replica.skipped:
        logger.warning("rebuild skipped records: %s", dict(replica.skipped))
    return {**part, "read_s": read_s}


def _rebuild_parallel(settings: Settings, shares: list[list[int]], tmp: Path,
                      progress: Progress | None) -> list[dict[str, Any]]:
    jobs = len(shares)
    counts = [[0, 0] for _ in range(jobs)]  # per share: applied, total
    results: list[dict[str, Any] | None] = [None] * jobs
    lock = threading.Lock()
    procs = [
        subprocess.Popen(  # noqa: S603 - our own module, arguments on stdin, no shell
            [sys.executable, "-m", "streams.service.rebuild"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        for _ in range(jobs)
    ]

    def read(j: int) -> None:
        proc = procs[j]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(pickle.dumps((settings, shares[j], str(tmp), f"p{j}-")))
        proc.stdin.close()
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                logger.warning("rebuild share %d printed: %r", j, line[:200])
                continue
            with lock:
                if "part" in message:
                    results[j] = message["part"]
                else:
                    counts[j] = [message["applied"], message["total"]]
                    if progress is not None:
                        try:
                            progress(sum(c[0] for c in counts), sum(c[1] for c in counts))
                        except Exception:  # keep draining the pipe, or the share blocks
                            logger.exception("rebuild progress callback failed")

    readers = [threading.Thread(target=read, args=(j,), daemon=True) for j in range(jobs)]
    try:
        for reader in readers:
            reader.start()
        codes = [proc.wait() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for reader in readers:
        reader.join(10)
    failed = [f"partitions {shares[j]} (exit code {codes[j]})"
              for j in range(jobs) if codes[j] != 0 or results[j] is None]
    if failed:
        raise RebuildError(f"rebuild of {'; '.join(failed)} failed: see the log above")
    return [r for r in results if r is not None]


def _feed_partitions(settings: Settings) -> dict[int, int]:
    """Partition number -> records in it (both topics, low to high watermark)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({**settings.kafka_client_config(), "group.id": "memstream-rebuild-sizes",
                         "enable.auto.commit": False, "log_level": 3})
    sizes: dict[int, int] = {}
    try:
        for full in feed_topics(settings).values():
            topic = consumer.list_topics(full, timeout=settings.request_timeout_s).topics.get(full)
            if topic is None or topic.error is not None:
                raise UnavailableError(f"topic {full} is missing (run `memstream topics create`)")
            for p in topic.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(full, p), timeout=settings.request_timeout_s)
                sizes[p] = sizes.get(p, 0) + max(0, high - low)
    except KafkaException as exc:
        raise UnavailableError(f"broker {settings.bootstrap_servers} unreachable: {exc}") from exc
    finally:
        consumer.close()
    return sizes


def balanced_shares(sizes: dict[int, int], jobs: int) -> list[list[int]]:
    """``jobs`` lists of partitions with sums of sizes as even as the partitions allow
    (largest first, each to the lightest share): the rebuild takes as long as its largest
    share, and tenants hash unevenly onto partitions."""
    shares: list[list[int]] = [[] for _ in range(jobs)]
    loads = [0] * jobs
    for p in sorted(sizes, key=lambda p: (-sizes[p], p)):
        lightest = min(range(jobs), key=lambda j: (loads[j], len(shares[j]), j))
        shares[lightest].append(p)
        loads[lightest] += sizes[p]
    return [sorted(share) for share in shares if share]


def _share_main() -> int:
    """One share of a parallel rebuild (run by ``_rebuild_parallel``)."""
    from streams.common.logs import configure_logging

    settings, partitions, tmp, prefix = pickle.loads(sys.stdin.buffer.read())
    configure_logging("WARNING", json_lines=False)
    out = sys.stdout

    def on_batch(feed: ReplicaFeed) -> None:
        total = sum(feed.high.values())
        out.write(json.dumps({"applied": feed.replica.applied, "total": total}) + "\n")
        out.flush()

    part = rebuild_share(settings, partitions, Path(tmp), prefix, on_batch)
    out.write(json.dumps({"part": part}) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_share_main())
