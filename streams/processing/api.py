"""What an agent author uses, and all of it: the agent contract, its batch context, records, stores.

An agent subclasses ``Agent`` and gets, per batch, its decoded ``InputRecord``s and a
``BatchContext`` to send, dead-letter and use state stores through. The runtime
(``streams.processing.runtime``) implements the context; a test implements it too, without a
broker. Nothing else under ``streams.processing`` is meant for agents.

A "tombstone" in this package is always Kafka's: a record with a null value, which deletes
its key from a compacted topic (``Store.delete`` sends one to the store's changelog).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from streams.processing.deadletter import DeadLetterReason, reason_for
from streams.processing.faults import fault_point

__all__ = [
    "Agent",
    "BatchContext",
    "DeadLetterReason",
    "InputRecord",
    "Store",
    "StoreAccess",
    "fault_point",
    "reason_for",
]


@dataclass(frozen=True)
class InputRecord:
    """One consumed record, decoded with its topic's latest schema."""

    topic: str  # the base name (``telemetry.v1``), without the deployment's prefix
    partition: int
    offset: int
    key: bytes | None
    raw: bytes | None
    value: dict[str, Any]
    # The broker timestamp (ms): what an event_time is bounded against (None: not known).
    timestamp_ms: int | None = None


class Store(Protocol):
    """One state store of one partition (``streams.processing.store.PartitionStore``)."""

    def get(self, key: str) -> Any | None:
        """The value of ``key``, seeing this batch's own writes."""

    def put(self, key: str, value: Any) -> None:
        """Write ``key``; it reaches the store only if the batch commits."""

    def delete(self, key: str) -> None:
        """Delete ``key`` (a tombstone in the store's changelog)."""

    def committed_items(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Every committed (key, value) whose key starts with ``prefix``, in key order."""


class StoreAccess(Protocol):
    """The state stores of the partitions this worker owns."""

    def store(self, name: str, partition: int) -> Store:
        """The store ``name`` of ``partition``."""

    def has(self, name: str, partition: int) -> bool:
        """Whether this worker keeps ``name`` for ``partition``."""


class BatchContext(StoreAccess, Protocol):
    """What an agent may do inside a batch; all of it commits or aborts with the batch."""

    def send(self, topic: str, record: dict[str, Any], *, key: str) -> None:
        """Send ``record`` to ``topic`` (base name), on its tenant's partition."""

    def dead_letter(
        self,
        record: InputRecord,
        reason: DeadLetterReason,
        detail: str,
        *,
        tenant: str | None = None,
    ) -> None:
        """Send ``record``'s original bytes to deadletter.v1 with the reason."""

    def flush(self) -> None:
        """Deliver what was sent so far to the broker (still inside the open transaction)."""


class Agent(ABC):
    """A stream agent: plain logic over batches of decoded records of its input topics.

    The runtime calls, on its one processing thread:

    - ``rebuild(partitions, stores)`` after every assignment *and* after every aborted
      batch: drop in-memory state and derive it again from the committed ``stores`` of
      ``partitions`` (the partitions owned now), so no aborted write survives in memory;
    - ``process(records, ctx)`` per batch, records in partition order; raising aborts the
      batch (see ``streams.processing.policy`` for what happens next);
    - ``close()`` once, when the worker stops.
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]  # base topic names
    stores: ClassVar[tuple[str, ...]] = ()  # state stores, one per owned partition each
    # The most of this agent's input records one batch may carry (None: no limit but the
    # worker's ``batch_max_records``). The runtime ends a batch at this agent's limit and
    # reads the rest again for the next batch: an agent whose records are slow
    # (transcription) keeps its batches short while the others' stay long.
    max_records_per_batch: int | None = None

    def rebuild(self, partitions: frozenset[int], stores: StoreAccess) -> None:  # noqa: B027 - a default
        """Derive in-memory state from the committed stores (default: none kept)."""

    @abstractmethod
    def process(self, records: list[InputRecord], ctx: BatchContext) -> None:
        """Handle one batch's records (in partition order) through ``ctx``."""

    def close(self) -> None:  # noqa: B027 - a no-op default, not an abstract method
        """Release what the agent holds (threads, models); called once at shutdown."""
