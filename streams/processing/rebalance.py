"""Partition ownership: what the rebalance callbacks do, and the agents' rebuild after it.

confluent-kafka calls ``on_assign``/``on_revoke`` from inside ``consume()``, on the processing
thread, so they never run while a batch's transaction is open. Assignment is eager (range
assignor): each assignment is the whole new set. On it, the stores of the assigned partitions
are opened and caught up with their changelogs, then every agent rebuilds its in-memory state
(``Agent.rebuild``) — as it also does after every aborted batch (``rebuild_agents``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from confluent_kafka import TopicPartition

from streams.common.heap import freeze_heap
from streams.common.settings import Settings
from streams.processing.api import Agent
from streams.processing.clients import GroupConsumer
from streams.processing.context import StoreMap
from streams.processing.restore import restore_stores
from streams.processing.store import Emit, PartitionStore, close_partitions

logger = logging.getLogger(__name__)



class Restore(Protocol):
    """What catches stores up with their changelogs (``restore.restore_stores``; tests fake it)."""

    def __call__(
        self,
        stores: list[PartitionStore],
        consumer_config: dict[str, Any],
        stall_timeout_s: float,
        *,
        batch_records: int,
        batch_bytes: int,
        on_progress: Callable[[], None] | None,
    ) -> dict[PartitionStore, int]: ...


def changelog_topic(settings: Settings, store: str) -> str:
    """The compacted topic that backs ``store``."""
    return settings.topic(f"{settings.app_id}-{store}-changelog")


class Ownership:
    """The partitions this worker owns, their stores, and the agents' state derived from them."""

    def __init__(
        self,
        settings: Settings,
        agents: Sequence[Agent],
        stores: dict[tuple[str, int], PartitionStore],
        emit: Emit,
        restore: Restore = restore_stores,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_progress = on_progress
        self.agents = agents
        self.stores = stores  # shared with the transactions, which write and apply them
        self.owned: frozenset[int] = frozenset()
        self._emit = emit
        self._restore = restore

    def on_assign(self, consumer: GroupConsumer, partitions: list[TopicPartition]) -> None:
        """Open and restore the stores of ``partitions``, then let the agents rebuild."""
        # Eager (range) rebalancing: each assignment is the whole new set.
        owned = frozenset(tp.partition for tp in partitions)
        self._open_stores(owned)
        self.owned = owned
        logger.info("assigned partitions %s", sorted(owned))
        self.rebuild_agents()

    def on_revoke(self, consumer: GroupConsumer, partitions: list[TopicPartition]) -> None:
        """Forget the revoked partitions and close their stores."""
        revoked = {tp.partition for tp in partitions}
        remaining = {tp.partition for tp in consumer.assignment()} - revoked
        self.owned = frozenset(remaining)
        logger.info("revoked partitions %s", sorted(revoked))
        # Also called for lost partitions (no on_lost callback): their stores close too.
        close_partitions(self.stores, revoked)

    def _open_stores(self, partitions: Iterable[int]) -> None:
        opened: list[PartitionStore] = []
        for agent in self.agents:
            for name in agent.stores:
                for partition in partitions:
                    store = self.stores.get((name, partition))
                    if store is None:
                        path = self.settings.worker_data_dir / name / str(partition)
                        store = PartitionStore(
                            name, path, changelog_topic(self.settings, name), partition,
                            self._emit,
                        )
                        self.stores[(name, partition)] = store
                    opened.append(store)
        started = time.monotonic()
        counts = self._restore(
            opened,
            {**self.settings.kafka_client_config(), "log_level": 3},
            self.settings.transaction_timeout_ms / 1000 + 30,  # no progress for this long
            batch_records=self.settings.restore_batch_records,
            batch_bytes=self.settings.restore_batch_bytes,
            on_progress=self._on_progress,  # a long restore is progress, not a hang
        )
        for store, count in counts.items():
            if count:
                logger.info("restored %s[%d]: %d changes", store.name, store.partition, count)
        logger.info(
            "%d store partitions caught up with their changelogs in %.2fs",
            len(opened), time.monotonic() - started,
        )

    def rebuild_agents(self) -> None:
        """Every agent derives its in-memory state again from the committed stores."""
        access = StoreMap(self.stores)
        for agent in self.agents:
            agent.rebuild(self.owned, access)
        # What the agents rebuilt lives until the next rebuild: keep it out of collections.
        freeze_heap()
