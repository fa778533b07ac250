"""The Prometheus metrics of the worker (logging: ``streams.common.logs``).

Labels are bounded: agent, topic, reason, kind, outcome; never a tenant or an event id.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

class WorkerMetrics:
    """The worker's metrics, in a registry of their own (tests create as many as they like)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "memstream_events_in", "Records consumed by an agent", ["agent", "topic"], registry=r
        )
        self.events_out = Counter(
            "memstream_events_out", "Records produced by an agent", ["agent", "topic"], registry=r
        )
        self.dead_letters = Counter(
            "memstream_dead_letters", "Records sent to deadletter.v1", ["agent", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "memstream_duplicates", "Duplicates merged into an existing memory", ["match"],
            registry=r,
        )
        self.supersessions = Counter(
            "memstream_supersessions",
            "Near duplicates that changed a value and superseded a memory, by slot kind",
            ["slot"], registry=r,
        )
        self.unknown_value = Counter(
            "memstream_unknown_value", "Scored events with no feedback yet (value unknown)",
            registry=r,
        )
        self.interaction_events_dropped = Counter(
            "memstream_interaction_events_dropped",
            "Events that left an interaction's join state (over its event or text bound): "
            "later feedback no longer re-scores them", registry=r,
        )
        self.embed_batch_size = Histogram(
            "memstream_embed_batch_size", "Texts per embedding batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )
        self.embed_seconds = Histogram(
            "memstream_embed_seconds", "Wall time of one embedding batch", registry=r
        )
        self.embed_errors = Counter(
            "memstream_embed_errors", "Embedding batches that raised (the batch is retried)",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "memstream_consumer_lag", "Records behind the end of an input topic",
            ["agent", "topic"], registry=r,
        )
        self.summaries = Counter(
            "memstream_summaries", "Summaries emitted: first on window close, or updated",
            ["trigger"], registry=r,
        )
        self.summary_dropped = Counter(
            "memstream_summary_dropped_events",
            "Scored events left out of summaries: late (window past its grace) or window full",
            ["reason"], registry=r,
        )
        self.summary_rewrites = Counter(
            "memstream_summary_rewrites", "Optional LLM rewrites of summaries by outcome",
            ["outcome"], registry=r,
        )
        self.transcribe_seconds = Histogram(
            "memstream_transcribe_seconds", "Wall time to decode and transcribe one voice note",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r,
        )
        self.audio_seconds = Histogram(
            "memstream_audio_seconds", "Length of each transcribed voice note, in seconds",
            buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600), registry=r,
        )
        self.transcribe_errors = Counter(
            "memstream_transcribe_errors", "Voice notes not transcribed, by reason",
            ["reason"], registry=r,
        )
        self.transactions = Counter(
            "memstream_transactions", "Kafka transactions by outcome", ["outcome"], registry=r
        )

    def serve(
        self, port: int, addr: str = "127.0.0.1", health: Callable[[], Health] | None = None
    ) -> None:
        """Expose ``/metrics`` on ``addr:port`` in a background thread; with ``health``, also
        ``/healthz``: 200 when it reports live, 503 otherwise, its report as JSON."""
        if health is None:
            start_http_server(port, addr=addr, registry=self.registry)
            return
        app = _with_health(make_wsgi_app(self.registry), health)
        server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()


class Health(Protocol):
    """What a liveness check returns (streams.processing.watchdog.LivenessReport)."""

    @property
    def live(self) -> bool:
        """Whether the checked loop is live (read-only: a report is a frozen value)."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON body."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """No access log line per scrape."""


def _with_health(metrics_app: Any, health: Callable[[], Health]) -> Any:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        report = health()
        body = json.dumps(report.as_dict()).encode()
        status = "200 OK" if report.live else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body)))])
        return [body]

    return app


class StateDirCollector(Collector):
    """Disk use of a local state directory, measured at scrape time.

    ``memstream_state_dir_bytes`` is what the directory holds (RocksDB stores, snapshots);
    the filesystem gauges say how much room is left on the volume it lives on. The ``dir``
    label names the directory's role (``worker``, ``serve``), never a path or a tenant.
    """

    def __init__(self, role: str, path: Path) -> None:
        self.role = role
        self.path = path

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One sample per gauge; a directory not created yet counts as empty."""
        used = GaugeMetricFamily(
            "memstream_state_dir_bytes", "Bytes held by a local state directory", labels=["dir"]
        )
        free = GaugeMetricFamily(
            "memstream_state_fs_free_bytes",
            "Bytes available to memstream on the filesystem of a state directory",
            labels=["dir"],
        )
        size = GaugeMetricFamily(
            "memstream_state_fs_size_bytes",
            "Size of the filesystem of a state directory", labels=["dir"],
        )
        used.add_metric([self.role], float(directory_bytes(self.path)))
        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            disk = shutil.disk_usage(probe)
        except OSError:
            logger.warning("cannot stat the filesystem of %s", self.path)
        else:
            free.add_metric([self.role], float(disk.free))
            size.add_metric([self.role], float(disk.total))
        yield used
        yield free
        yield size


def directory_bytes(path: Path) -> int:
    """Apparent size of the regular files under ``path`` (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed while walking (RocksDB compaction): not there any more
    return total
