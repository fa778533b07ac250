"""Structured logs (one JSON object a line) and the Prometheus metrics of the worker.

Labels are bounded: agent, topic, reason, kind, outcome; never a tenant or an event id.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}``: one line per record, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Configure the root logger once, at a process entry point."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "urllib3", "faiss", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


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
        self.unknown_value = Counter(
            "memstream_unknown_value", "Scored events with no feedback yet (value unknown)",
            registry=r,
        )
        self.embed_batch_size = Histogram(
            "memstream_embed_batch_size", "Texts per embedding batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )
        self.embed_seconds = Histogram(
            "memstream_embed_seconds", "Wall time of one embedding batch", registry=r
        )
        self.consumer_lag = Gauge(
            "memstream_consumer_lag", "Records behind the end of an input topic",
            ["agent", "topic"], registry=r,
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

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` on ``addr:port`` in a background thread."""
        start_http_server(port, addr=addr, registry=self.registry)
