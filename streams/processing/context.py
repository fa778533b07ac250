"""The runtime's side of the agent API: its ``StoreAccess`` and ``BatchContext``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.processing.api import InputRecord, Store
from streams.processing.deadletter import DeadLetterReason
from streams.processing.outputs import Outputs


class StoreMap:
    """``StoreAccess`` over the stores of the owned partitions, by (name, partition)."""

    def __init__(self, stores: Mapping[tuple[str, int], Store]) -> None:
        self._stores = stores

    def store(self, name: str, partition: int) -> Store:
        """The store ``name`` of ``partition``."""
        return self._stores[(name, partition)]

    def has(self, name: str, partition: int) -> bool:
        """Whether this worker keeps ``name`` for ``partition``."""
        return (name, partition) in self._stores


class WorkerBatchContext(StoreMap):
    """The ``BatchContext`` of one batch: sends and dead letters go into its transaction."""

    def __init__(self, stores: Mapping[tuple[str, int], Store], outputs: Outputs) -> None:
        super().__init__(stores)
        self._outputs = outputs
        self.agent = ""  # the agent being run, named in metrics and dead letters

    def send(self, topic: str, record: dict[str, Any], *, key: str) -> None:
        """Send ``record`` to ``topic`` (base name), on its tenant's partition."""
        self._outputs.send(topic, record, key=key, agent=self.agent)

    def dead_letter(
        self,
        record: InputRecord,
        reason: DeadLetterReason,
        detail: str,
        *,
        tenant: str | None = None,
    ) -> None:
        """Send ``record``'s original bytes to deadletter.v1 with the reason."""
        self._outputs.dead_letter(record, reason, detail, agent=self.agent, tenant=tenant)

    def flush(self) -> None:
        """Deliver what was sent so far to the broker (still inside the open transaction)."""
        self._outputs.transactions.flush()
