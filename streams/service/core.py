"""The read service's parts, wired once: replica + feed + gate + model + tokens + commands."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, Histogram

from streams.common.observability import StateDirCollector
from streams.common.settings import Settings
from streams.common.tokens import TokenTable
from streams.models.exceptions import ModelError
from streams.models.index import IndexPolicy
from streams.models.onnx_embedder import OnnxEmbedder
from streams.service.commands import CommandWriter
from streams.service.consistency import ConsistencyGate
from streams.service.feed import ReplicaFeed, feed_topics
from streams.service.replica import Replica
from streams.service.snapshot import SnapshotStore

logger = logging.getLogger(__name__)


class QueryEmbedder(Protocol):
    """What the service needs of a model: vectors, and token counts for context packs."""

    model_id: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 rows."""
        ...

    def count_tokens(self, text: str) -> int:
        """Model tokens in ``text``."""
        ...


class ModelNotLoadedError(ModelError):
    """The service's embedding model failed to load: recall and context cannot run."""

    retriable = False  # the same settings fail the same way until the service restarts


class MissingModel:
    """Stands in for an embedding model that failed to load, so that the service stays up
    (live, not ready, naming the model and the error) instead of exiting."""

    def __init__(self, name: str, model_id: str, error: Exception) -> None:
        self.model_id = model_id
        self.dimension = 0  # the replica learns it from the records of ``model_id``
        self.detail = f"{name}: {error}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Never: there is no model."""
        raise ModelNotLoadedError(self.detail)

    def count_tokens(self, text: str) -> int:
        """Never: there is no tokenizer."""
        raise ModelNotLoadedError(self.detail)


class ServiceMetrics:
    """Request latency, index size and lag, in a registry of their own; with ``state_dir``,
    the disk use of the snapshot directory too (``dir="serve"``)."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "memstream_serve_request_seconds", "HTTP request latency",
            ["route", "method", "status"],
            buckets=(0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.index_size = Gauge(
            "memstream_serve_index_memories", "Live memories in the replica by index kind",
            ["kind"], registry=r,
        )
        self.lag = Gauge("memstream_serve_lag_records",
                         "Records between the replica and the end of its topics", registry=r)
        self.skipped = Gauge("memstream_serve_skipped_records",
                             "Records not indexed, by reason", ["reason"], registry=r)
        if state_dir is not None:
            r.register(StateDirCollector("serve", state_dir))


def index_policy(settings: Settings) -> IndexPolicy:
    """The index policy the settings give."""
    return IndexPolicy(
        exact_max=settings.exact_search_max, hnsw_m=settings.hnsw_m,
        hnsw_ef_construction=settings.hnsw_ef_construction, hnsw_ef_search=settings.hnsw_ef_search,
    )


def load_replica(settings: Settings, model_id: str, dimension: int) -> Replica:
    """The latest snapshot, or an empty replica to build from the log."""
    policy = index_policy(settings)
    snapshots = SnapshotStore(settings.serve_snapshot_dir)
    replica = snapshots.load(model_id, dimension, feed_topics(settings), policy)
    return replica or Replica(model_id, dimension, policy)


@dataclass
class ReadService:
    """Everything an HTTP handler uses."""

    settings: Settings
    replica: Replica
    feed: ReplicaFeed
    gate: ConsistencyGate
    embedder: QueryEmbedder
    tokens: TokenTable
    metrics: ServiceMetrics
    commands: CommandWriter
    model_error: str | None = None  # "<model>: <error>" when the model failed to load

    @classmethod
    def build(cls, settings: Settings, embedder: QueryEmbedder | MissingModel) -> ReadService:
        """Load the snapshot (if any) and wire the parts; ``start`` starts the feed.

        Without a model the replica still follows the log (deletes, gets and the readiness
        checks keep working) but writes no snapshot: a mistyped model name must not replace
        the snapshots of the real model with an index of nothing."""
        tokens = TokenTable.parse(
            settings.api_tokens.get_secret_value() if settings.api_tokens else None
        )
        if not len(tokens):
            logger.warning("no API tokens configured: every /v1 request will get 401")
        missing = embedder.detail if isinstance(embedder, MissingModel) else None
        replica = load_replica(settings, embedder.model_id, embedder.dimension)
        snapshots = None if missing else SnapshotStore(settings.serve_snapshot_dir)
        feed = ReplicaFeed(settings, replica, snapshots)
        return cls(settings, replica, feed, ConsistencyGate(settings, feed), shared(embedder),
                   tokens, ServiceMetrics(settings.serve_snapshot_dir),
                   CommandWriter(settings), missing)

    def start(self) -> None:
        """Start catching up."""
        self.feed.start()

    def close(self) -> None:
        """Stop the feed (with a last snapshot) and release the clients."""
        self.feed.stop(snapshot=True)
        self.gate.close()
        self.commands.close()

    def embed_query(self, text: str) -> np.ndarray:
        """The query's vector, from the replica's own model."""
        if self.embedder.model_id != self.replica.model_id:
            raise RuntimeError("query model differs from the index model")  # never by construction
        return self.embedder.embed([text])[0]

    def refresh_gauges(self) -> None:
        """Set the gauges (at scrape time)."""
        for kind in ("exact", "hnsw"):
            self.metrics.index_size.labels(kind).set(0)
        for kind, count in self.replica.size().items():
            if kind != "summaries":
                self.metrics.index_size.labels(kind).set(count)
        self.metrics.lag.set(self.feed.lag())
        for reason, count in self.replica.skipped.items():
            self.metrics.skipped.labels(reason).set(count)


def shared(embedder: QueryEmbedder | MissingModel) -> QueryEmbedder:
    """The model as concurrent requests use it. The ONNX embedder is safe from threads at once
    (its tokenizer is only read; ``test_embedding_and_counting_from_threads_at_once``), and
    its sessions release the GIL: 8 clients recalled ~1.5-1.8 x as many queries a second
    without a lock (bench/RESULTS.md). Others take turns (``_Locked``)."""
    return embedder if isinstance(embedder, OnnxEmbedder) else _Locked(embedder)


class _Locked:
    """One embedding or token count at a time: transformers' fast tokenizers (the torch
    backend) set their truncation and padding on every call, and are not thread-safe."""

    def __init__(self, inner: QueryEmbedder) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dimension = inner.dimension
        self._embed_lock = threading.Lock()
        self._count_lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._embed_lock:
            return self.inner.embed(texts)

    def count_tokens(self, text: str) -> int:
        with self._count_lock:
            return self.inner.count_tokens(text)
