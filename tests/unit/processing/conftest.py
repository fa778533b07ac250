"""Fixtures of the runtime's unit tests: the commit protocol and the runtime on fake clients."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka_fakes import FakeCodec, FakeConsumer, FakeProducer
from runtime_rigs import RuntimeRig, TransactionRig

from streams.common.observability import WorkerMetrics
from streams.common.settings import Settings, load_settings
from streams.processing.api import Agent
from streams.processing.runtime import Runtime
from streams.processing.store import PartitionStore
from streams.processing.transaction import Transactions
from streams.processing.watchdog import Liveness


@pytest.fixture
def transaction_factory(tmp_path: Path) -> Iterator[Callable[..., TransactionRig]]:
    """Make a ``TransactionRig``; its stores are closed after the test."""
    made: list[TransactionRig] = []

    def make(**producer_options: Any) -> TransactionRig:
        producer, consumer = FakeProducer(**producer_options), FakeConsumer()
        stores: dict[tuple[str, int], PartitionStore] = {}
        metrics = WorkerMetrics()
        resets: list[str] = []
        transactions = Transactions(
            producer, consumer, stores, metrics=metrics, liveness=Liveness(60),
            timeout_s=1.0, on_reset=lambda: resets.append("reset"),
        )
        root = tmp_path / f"rig{len(made)}"
        for p in (0, 1):
            stores[("seen", p)] = PartitionStore(
                "seen", root / str(p), "app-seen-changelog", p, transactions.emit_changelog
            )
        rig = TransactionRig(producer, consumer, stores, metrics, transactions, resets)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        for store in rig.stores.values():
            store.close()


@pytest.fixture
def runtime_factory(tmp_path: Path) -> Callable[..., RuntimeRig]:
    """Make a ``RuntimeRig`` for ``agents``; ``run()`` processes the consumer's batches."""

    def make(agents: list[Agent], consumer: FakeConsumer, *, settings: Settings | None = None,
             **producer_options: Any) -> RuntimeRig:
        settings = settings or load_settings(data_dir=tmp_path, metrics_port=0, app_id="app",
                                             topic_prefix="t.", partitions=4)
        producer, stop = FakeProducer(**producer_options), threading.Event()
        consumer.stop = stop
        restored: list[list[tuple[str, int]]] = []

        def restore(stores: list[PartitionStore], _config: dict[str, Any],
                    _timeout_s: float, **_options: Any) -> dict[PartitionStore, int]:
            restored.append([(s.name, s.partition) for s in stores])
            return dict.fromkeys(stores, 0)

        runtime = Runtime(settings, agents, WorkerMetrics(), FakeCodec(),  # type: ignore[arg-type]
                          clients=(consumer, producer), restore=restore)
        return RuntimeRig(runtime, producer, consumer, stop, restored)

    return make
