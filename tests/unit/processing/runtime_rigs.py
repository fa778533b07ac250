"""What the runtime's unit tests hold on to: the code under test and its fakes, together."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from kafka_fakes import FakeConsumer, FakeProducer

from streams.common.observability import WorkerMetrics
from streams.processing.runtime import Runtime
from streams.processing.store import PartitionStore
from streams.processing.transaction import Transactions


def count(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    """A counter's value (0 when never incremented)."""
    return metrics.registry.get_sample_value(f"memstream_{name}_total", labels) or 0.0


@dataclass
class TransactionRig:
    """``Transactions`` over fake clients and real stores ``seen`` of partitions 0 and 1."""

    producer: FakeProducer
    consumer: FakeConsumer
    stores: dict[tuple[str, int], PartitionStore]
    metrics: WorkerMetrics
    transactions: Transactions
    resets: list[str] = field(default_factory=list)

    def store(self, partition: int = 0) -> PartitionStore:
        return self.stores[("seen", partition)]

    def committed(self, partition: int = 0) -> dict[str, Any]:
        """What RocksDB holds (committed) in ``seen`` of ``partition``."""
        return dict(self.store(partition).committed_items())


@dataclass
class RuntimeRig:
    """A ``Runtime`` over fake clients, a fake codec and a fake restore."""

    runtime: Runtime
    producer: FakeProducer
    consumer: FakeConsumer
    stop: threading.Event
    restored: list[list[tuple[str, int]]]

    def run(self) -> None:
        self.runtime.run(self.stop)
